"""Reports: training workdirs to one markdown table in the seed papers' format and PNG plots.

  python -m advjax.report RUN_DIR [RUN_DIR ...] [--out=DIR]

For each run: its method, the accuracy under every attack it was evaluated with (`eval_<protocol>.json`, written by
`python -m advjax.main --config=configs/eval.py --config.checkpoint=RUN_DIR`; AA is AutoAttack's cumulative
accuracy), else the natural and PGD accuracy of its last per-epoch evaluation (marked *), its gradient steps (BP) per
example per epoch and its training time. Plots: accuracy per epoch, BP per epoch (FAT's Fig. 5) and, when the runs
differ in their training eps, final accuracy against eps_train (FAT's Fig. 6). Written to DIR/report.md,
DIR/accuracy_per_epoch.png, DIR/bp_per_epoch.png and DIR/eps_sweep.png (DIR: --out, default the current folder).
"""
import argparse
import glob
import json
import os
import re
import sys

from advjax import metrics


def _order(attack):
  """natural, FGSM, PGD-k by k, CW-k by k, then the rest as found, AA last."""
  match = re.fullmatch(r'(PGD|CW)-(\d+)', attack)
  if attack == 'natural':
    return (0, 0)
  if attack == 'FGSM':
    return (1, 0)
  if match:
    return (2 if match.group(1) == 'PGD' else 3, int(match.group(2)))
  return (5, 0) if attack == 'AA' else (4, 0)


def load_run(workdir):
  """dict(name, method, eps, epochs (the metrics lines), accuracy {attack: %}, per_epoch_only) of one workdir."""
  with open(os.path.join(workdir, 'config.json')) as f:
    config = json.load(f)
  epochs = metrics.read_records(workdir)[0]   # a cut last line (a run being written) left out
  accuracy = {}
  for path in sorted(glob.glob(os.path.join(workdir, 'eval_*.json'))):
    with open(path) as f:
      rows = json.load(f)['rows']
    protocol = os.path.basename(path)[len('eval_'):-len('.json')]
    if protocol == 'aa_standard':
      accuracy['AA'] = rows[-1]['cumulative']
      accuracy.setdefault('natural', rows[0]['accuracy'])
    else:
      accuracy.update({row['attack']: row['accuracy'] for row in rows})
  per_epoch_only = not accuracy and bool(epochs)
  if per_epoch_only:
    last = epochs[-1]
    accuracy = {'natural': 100 * last['natural_acc'], f'PGD-{config["eval"]["steps"]}': 100 * last['pgd_acc']}
  return dict(name=os.path.basename(os.path.normpath(workdir)), method=config['method'],
              eps=config['attack']['eps'], epochs=epochs, accuracy=accuracy, per_epoch_only=per_epoch_only)


def markdown_table(runs):
  attacks = sorted({a for run in runs for a in run['accuracy']}, key=_order)
  lines = [f'| run | method | {" | ".join(attacks)} | BP/example/epoch | training (s) |',
           '|---' * (len(attacks) + 4) + '|']
  for run in runs:
    mark = '*' if run['per_epoch_only'] else ''
    cells = [f'{run["accuracy"][a]:.2f}{mark}' if a in run['accuracy'] else '' for a in attacks]
    epochs = run['epochs']
    bp = sum(e['bp_per_example'] for e in epochs) / max(len(epochs), 1)
    seconds = sum(e['train_seconds'] for e in epochs)
    lines.append(f'| {run["name"]} | {run["method"]} | {" | ".join(cells)} | {bp:.2f} | {seconds:.0f} |')
  if any(run['per_epoch_only'] for run in runs):
    lines += ['', '\\* The last per-epoch evaluation (no `eval_*.json` in the workdir).']
  return '\n'.join(lines)


def plots(runs, out):
  """The PNGs, their paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  written = []

  def style(i):   # matplotlib's colours repeat after 10: the next ten runs are dashed, with square markers
    return dict(color=f'C{i % 10}', linestyle='-' if i % 20 < 10 else '--', marker='o' if i % 20 < 10 else 's')

  def save(fig, name):
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=120)
    plt.close(fig)
    written.append(os.path.join(out, name))

  fig, (natural, robust) = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
  for i, run in enumerate(runs):
    epochs = [e['epoch'] for e in run['epochs']]
    natural.plot(epochs, [100 * e['natural_acc'] for e in run['epochs']], label=run['name'], **style(i))
    robust.plot(epochs, [100 * e['pgd_acc'] for e in run['epochs']], label=run['name'], **style(i))
  natural.set(xlabel='epoch', ylabel='accuracy (%)', title='natural')
  robust.set(xlabel='epoch', ylabel='accuracy (%)', title='PGD (per-epoch evaluation)')
  robust.legend(fontsize=7, loc='center left', bbox_to_anchor=(1, 0.5))   # beside the plot: many runs
  save(fig, 'accuracy_per_epoch.png')

  fig, ax = plt.subplots(figsize=(6, 4))
  for i, run in enumerate(runs):
    ax.plot([e['epoch'] for e in run['epochs']], [e['bp_per_example'] for e in run['epochs']], label=run['name'],
            **style(i))
  ax.set(xlabel='epoch', ylabel='gradient steps per example (BP)', title='BP per epoch')
  ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1, 0.5))
  save(fig, 'bp_per_epoch.png')

  if len({run['eps'] for run in runs}) > 1:
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, method in enumerate(sorted({run['method'] for run in runs})):   # a colour per method
      mine = sorted((run for run in runs if run['method'] == method), key=lambda run: run['eps'])
      for key, line in (('natural_acc', '--'), ('pgd_acc', '-')):
        ax.plot([run['eps'] for run in mine], [100 * run['epochs'][-1][key] for run in mine], line, marker='o',
                color=f'C{i % 10}', label=f'{method} {"natural" if key == "natural_acc" else "PGD"}')
    ax.set(xlabel='eps_train', ylabel='final accuracy (%)', title='Accuracy against the training eps')
    ax.legend(fontsize=7, loc='center left', bbox_to_anchor=(1, 0.5))
    save(fig, 'eps_sweep.png')
  return written


def write(workdirs, out):
  """Writes out/report.md and the plots; returns the table."""
  runs = [load_run(workdir) for workdir in workdirs]
  os.makedirs(out, exist_ok=True)
  table = markdown_table(runs)
  with open(os.path.join(out, 'report.md'), 'w') as f:
    f.write(table + '\n')
  plots(runs, out)
  return table


def main(argv=None):
  parser = argparse.ArgumentParser(prog='python -m advjax.report', description=__doc__.splitlines()[0])
  parser.add_argument('runs', nargs='+', metavar='RUN_DIR', help='training workdirs')
  parser.add_argument('--out', default='.', help='folder for report.md and the plots')
  args = parser.parse_args(argv)
  for workdir in args.runs:
    for name in ('config.json', 'metrics.jsonl'):
      if not os.path.isfile(os.path.join(workdir, name)):
        parser.exit(2, f'advjax.report: error: {os.path.join(workdir, name)} not found: each RUN_DIR must be a '
                       'training workdir with at least one finished epoch\n')
  print(write(args.runs, args.out))
  print(f'Written to {os.path.join(args.out, "report.md")} and its plots.', file=sys.stderr)


if __name__ == '__main__':
  main()
