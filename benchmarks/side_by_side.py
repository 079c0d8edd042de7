r"""Side-by-side runs of the training methods under one protocol: two suites.

Suite `fat` (default): Madry, FAT (tau 0, 1, 3), TRADES, FAT-TRADES, MART, FAT-MART and DAT.

Fashion-MNIST (a seeded subset), the FAT paper's SmallCNN at 1/8 width (`small_cnn-8`: a 2-core CPU trains the
full-width network at about 6 examples/s), eps 0.1, PGD-10 with step 0.025 for training, a few epochs. Every
method keeps its own attack start, loss and schedule shape (rescaled to the run's length) from its config; data,
model, eps, optimiser and evaluation are shared. Evaluation on the test subset: natural, FGSM, PGD-20 (step eps/4,
uniform start) and CW-inf (PGD-30 on the margin loss, kappa 50, step eps/4).

  ADVJAX_DATA_DIR=../shared/data python benchmarks/side_by_side.py --out=docs/results/side_by_side

writes <out>.json (resumable: finished runs are kept), <out>_table.md and <out>_bp.png (BP per example per epoch),
and prints the table; docs/results/side_by_side.md discusses the committed results.

Suite `fast`: FGSM-RS, FGSM-SDI, FGSM-PGI (EP, MEP), LAS-AT, Madry and FAT on a CIFAR-10 subset (JPEG copy), the
same SmallCNN at 1/8 width, eps 8/255, each method's own attack step, start, losses and schedule shape; shared data,
model, optimiser (SGD 0.05, momentum 0.9, weight decay 5e-4, /10 for the last 2 epochs) and evaluation: the Jia et
al. protocol (FGSM; PGD-10/20/50 and CW-20 on the plain margin, step 2/255, one random start) on the test subset, then
standard AutoAttack on the points robust to all of those (AA: the worst case). Training time: the epochs' training
loops (the first includes compiling), without the per-epoch evaluation.

  ADVJAX_DATA_DIR=../shared/data python benchmarks/side_by_side.py --suite=fast --out=docs/results/fast_methods
"""
import argparse
import functools
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, 'configs'))

from advjax import attacks, checkpoint, data, train, validation  # pylint: disable=g-import-not-at-top
from advjax import evaluate as evaluation  # pylint: disable=g-import-not-at-top
import default  # pylint: disable=g-import-not-at-top

RUNS = {   # label: (config file, top-level overrides)
    'Madry (PGD-10)': ('madry', {}),
    'FAT tau=0': ('fat', dict(tau_schedule=((1, 0),))),
    'FAT tau=1': ('fat', dict(tau_schedule=((1, 1),))),
    'FAT tau=3': ('fat', dict(tau_schedule=((1, 3),))),
    'TRADES': ('trades', {}),
    'FAT-TRADES': ('fat_trades', {}),
    'MART': ('mart', {}),
    'FAT-MART': ('fat_mart', {}),
    'DAT': ('dat', {}),
}


FAST_RUNS = {   # label: (config file, variant, top-level overrides)
    'FGSM-RS': ('fgsm_rs', None, {}),
    'FGSM-GA': ('fgsm_ga', None, {}),
    'FGSM-GA, eval-mode attack': ('fgsm_ga', 'eval_attack', {}),
    'Free-AT': ('free_at', None, {}),
    'AT-AWP': ('awp', None, {}),
    'Madry (PGD-10)': ('madry', None, {}),
    'FAT': ('fat', None, {}),
    'FGSM-PGI (EP)': ('fgsm_pgi', 'ep', {}),
    'FGSM-PGI (EP), eval-mode attack': ('fgsm_pgi', 'ep,eval_attack', {}),
    'FGSM-PGI (MEP), eval-mode attack': ('fgsm_pgi', 'mep,eval_attack', {}),
    'FGSM-PGI (MEP)': ('fgsm_pgi', 'mep', {}),
    'LAS-AT': ('las_at', None, {}),
    'FGSM-SDI': ('fgsm_sdi', None, {}),
    'FGSM-SDI, eval-mode attack': ('fgsm_sdi', 'eval_attack', {}),
}


def shared_config(config_name, variant, overrides, args):
  """The config file's method, its schedules rescaled to the run; what every suite shares (seed, batch, LR shape)."""
  c = __import__(config_name).get_config(variant)
  default.rescale_schedules(c, args.epochs, rescale_lr=False)
  c.update(overrides)
  c.seed = args.seed
  c.batch_size = 128
  c.lr_schedule = ((1, args.lr), (args.epochs - 1, args.lr / 10))
  c.log_every_steps = 0
  return c


def fast_config(config_name, variant, overrides, args):
  c = shared_config(config_name, variant, overrides, args)
  c.data.update(source='image_folder', name='cifar10-jpg.tar.gz', data_dir=args.data_dir, num_train=args.num_train,
                num_test=args.num_test, crop_padding=4, flip=True)
  c.model.update(name=args.model, mean=(), std=())
  eps = 8 / 255
  if c.attack.step_size >= 0.5 * c.attack.eps:   # single-step methods keep their step relative to eps
    c.attack.step_size *= eps / c.attack.eps
  else:
    c.attack.step_size = 2 / 255
  c.attack.eps = eps
  if 'las' in c:
    c.las.policy_model = 'tiny_cnn'
  c.optimizer.weight_decay = 5e-4
  c.lr_interpolation = 'constant'
  c.eval.update(eps=eps, step_size=2 / 255, steps=10, init='uniform', clip_init=True, batch_size=250,
                num_examples=min(args.num_test, 250))   # the per-epoch curve; the final protocol uses all
  return c


def experiment_config(config_name, overrides, args):
  c = shared_config(config_name, None, overrides, args)
  c.data.update(source='idx', name='fashion-mnist', data_dir=args.data_dir, num_train=args.num_train,
                num_test=args.num_test, crop_padding=0, flip=False)
  c.model.name = args.model
  c.attack.update(eps=args.eps, step_size=args.eps / 4)
  c.optimizer.weight_decay = 2e-4
  c.eval.update(eps=args.eps, step_size=args.eps / 4, init='uniform', clip_init=True, batch_size=200)
  return c


def evaluate(logits_fn, images, labels, eps, batch_size=200):
  """Accuracy (%) under each attack of the shared protocol."""
  settings = dict(eps=eps, step_size=eps / 4)
  suite = {
      'natural': lambda x, y, key: x,
      'FGSM': lambda x, y, key: attacks.fgsm(logits_fn, x, y, key, eps=eps).x_adv,
      'PGD-20': lambda x, y, key: attacks.pgd(logits_fn, x, y, key, steps=20, **settings).x_adv,
      'CW-30': lambda x, y, key: attacks.pgd(logits_fn, x, y, key, steps=30, loss=attacks.losses.margin(50.0),
                                             **settings).x_adv,
  }
  results = {}
  for name, attack in suite.items():
    correct_fn = jax.jit(lambda x, y, key, attack=attack: (logits_fn(attack(x, y, key)).argmax(-1) == y).sum())
    correct = sum(int(correct_fn(images[i:i + batch_size], labels[i:i + batch_size], jax.random.key(i)))
                  for i in range(0, len(labels), batch_size))
    results[name] = 100 * correct / len(labels)
  return results


@functools.lru_cache(maxsize=None)
def fast_protocol(model):
  """One logits function and one set of attack objects for every run: the evaluation compiles once per shape."""
  logits_fn = lambda v, x: model.apply(v, x, train=False)
  return logits_fn, evaluation.protocol_attacks('jia', 8 / 255)[1], evaluation.protocol_attacks('aa_standard', 8 / 255)[1]


def evaluate_fast(model, variables, dataset, autoattack=True):
  """Accuracy (%) under the Jia et al. protocol on the test subset, then AutoAttack on the points that survived it.

  'AA' is the worst case over everything: AutoAttack (standard) runs only on the points robust to FGSM, PGD-10/20/50
  and CW-20, in batches of 128 so that every run reuses the compiled attacks.
  """
  logits_fn, jia, aa_stages = fast_protocol(model)
  images, labels = dataset.test_images, dataset.test_labels
  report = evaluation.evaluate(logits_fn, variables, images, labels, jia, eps=8 / 255, batch_size=250)
  results = {row['attack']: row['accuracy'] for row in report['rows']}
  results['survivors'] = survivors = np.flatnonzero(report['robust']).tolist()
  results['AA'] = 0.0 if autoattack else None
  if survivors and autoattack:
    aa = evaluation.evaluate(logits_fn, variables, images[survivors], labels[survivors], aa_stages, eps=8 / 255,
                             batch_size=128, individual=False)
    results['AA'] = aa['rows'][-1]['cumulative'] * len(survivors) / len(labels)
  return results


def autoattack_of_run(label, config_name, variant, overrides, result, args):
  """AutoAttack on a finished run's survivors, from its last checkpoint (the --aa_only pass)."""
  config = fast_config(config_name, variant, overrides, args)
  dataset = data.load(config.data)
  model = train.build_model(config, dataset.num_classes)
  state = checkpoint.latest_state(os.path.join(args.workdir, args.suite, run_dir(label)))
  logits_fn, _, aa_stages = fast_protocol(model)
  survivors = result['survivors']
  if not survivors:
    return 0.0
  variables = dict(params=state['params'], batch_stats=state['batch_stats'])
  aa = evaluation.evaluate(logits_fn, variables, dataset.test_images[survivors], dataset.test_labels[survivors],
                           aa_stages, eps=8 / 255, batch_size=128)
  return aa['rows'][-1]['cumulative'] * len(survivors) / len(dataset.test_labels)


def run_dir(label):
  return ''.join(ch if ch.isalnum() else '_' for ch in label)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--suite', choices=('fat', 'fast'), default='fat')
  parser.add_argument('--out', default='', help='default docs/results/side_by_side or fast_methods')
  parser.add_argument('--workdir', default='/tmp/advjax_side_by_side')
  parser.add_argument('--data_dir', default=os.environ.get('ADVJAX_DATA_DIR', ''))
  parser.add_argument('--model', default='small_cnn-8')
  parser.add_argument('--num_train', type=int, default=3000)
  parser.add_argument('--num_test', type=int, default=1000)
  parser.add_argument('--epochs', type=int, default=6)
  parser.add_argument('--seed', type=int, default=0, help='of the initialisation, shuffling and attacks')
  parser.add_argument('--eps', type=float, default=0.1)
  parser.add_argument('--lr', type=float, default=0.02)
  parser.add_argument('--only', nargs='*', help='labels of RUNS to run (default all)')
  parser.add_argument('--defer_aa', action='store_true',
                      help='fast suite: leave AutoAttack for a later --aa_only pass (its time is not reported)')
  parser.add_argument('--aa_only', action='store_true', help='fast suite: AutoAttack for finished runs without it')
  args = parser.parse_args()
  fast = args.suite == 'fast'
  args.out = args.out or os.path.join(REPO, 'docs', 'results', 'fast_methods' if fast else 'side_by_side')
  runs = FAST_RUNS if fast else {label: (name, None, overrides) for label, (name, overrides) in RUNS.items()}

  results = {}
  if os.path.exists(args.out + '.json'):   # resume: keep finished runs
    with open(args.out + '.json') as f:
      results = json.load(f)['runs']
  for label, (config_name, variant, overrides) in runs.items():
    if args.aa_only and results.get(label, {}).get('AA', 0) is None:
      results[label]['AA'] = autoattack_of_run(label, config_name, variant, overrides, results[label], args)
      print(label, 'AA', results[label]['AA'], flush=True)
      with open(args.out + '.json', 'w') as f:
        json.dump(dict(settings=vars(args), runs=results), f, indent=1)
    if (args.only and label not in args.only) or label in results or args.aa_only:
      continue
    config = (fast_config(config_name, variant, overrides, args) if fast else
              experiment_config(config_name, overrides, args))
    validation.check(config)
    workdir = os.path.join(args.workdir, args.suite, run_dir(label))
    started = time.perf_counter()
    state, _ = train.train_and_evaluate(config, workdir)
    train_seconds = time.perf_counter() - started
    dataset = data.load(config.data)
    model = train.build_model(config, dataset.num_classes)
    variables = jax.device_get(dict(params=state.params, batch_stats=state.batch_stats))
    if fast:
      accuracy = evaluate_fast(model, variables, dataset, autoattack=not args.defer_aa)
    else:
      logits_fn = functools.partial(lambda v, x: model.apply(v, x, train=False), variables)
      images = jnp.asarray(dataset.test_images, jnp.float32) / 255
      accuracy = evaluate(logits_fn, images, jnp.asarray(dataset.test_labels), args.eps)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      epochs = [json.loads(line) for line in f]
    bp = [e['bp_per_example'] for e in epochs]
    results[label] = dict(config=config_name, **accuracy, bp_per_epoch=bp, total_bp=sum(bp),
                          train_seconds=train_seconds, epoch_train_seconds=[e['train_seconds'] for e in epochs],
                          pgd10_per_epoch=[100 * e['pgd_acc'] for e in epochs],
                          natural_per_epoch=[100 * e['natural_acc'] for e in epochs])
    print(label, json.dumps(results[label]), flush=True)
    with open(args.out + '.json', 'w') as f:
      json.dump(dict(settings=vars(args), runs=results), f, indent=1)
  write_report(results, args)


def write_report(results, args):
  if args.suite == 'fast':
    return write_fast_report(results, args)
  columns = ['natural', 'FGSM', 'PGD-20', 'CW-30']
  lines = [f'| Method | {" | ".join(columns)} | BP/example, epoch 1 → {args.epochs} | total BP | time (s) |',
           '|---' * (len(columns) + 4) + '|']
  for label, r in results.items():
    lines.append(f'| {label} | ' + ' | '.join(f'{r[c]:.1f}' for c in columns) +
                 f' | {r["bp_per_epoch"][0]:.2f} → {r["bp_per_epoch"][-1]:.2f} | {r["total_bp"]:.1f} | '
                 f'{r["train_seconds"]:.0f} |')
  table = '\n'.join(lines)
  print(table)
  with open(args.out + '_table.md', 'w') as f:
    f.write(table + '\n')
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4))
  for label, r in results.items():
    ax.plot(range(1, len(r['bp_per_epoch']) + 1), r['bp_per_epoch'], marker='o', label=label)
  ax.set(xlabel='epoch', ylabel='PGD steps per example (BP)', title='BP per example per epoch (Fashion-MNIST)')
  ax.legend(fontsize=7, ncol=2)
  fig.tight_layout()
  fig.savefig(args.out + '_bp.png', dpi=120)


def write_fast_report(results, args):
  columns = ['natural', 'FGSM', 'PGD-10', 'PGD-20', 'PGD-50', 'CW-20', 'AA']
  lines = [f'| Method | {" | ".join(columns)} | PGD-10 by epoch (250 test images) | BP/example | training (s) |',
           '|---' * (len(columns) + 4) + '|']
  for label, r in results.items():
    curve = ' '.join(f'{v:.0f}' for v in r['pgd10_per_epoch'])
    cells = ('…' if r[c] is None else f'{r[c]:.1f}' for c in columns)
    lines.append(f'| {label} | ' + ' | '.join(cells) +
                 f' | {curve} | {r["total_bp"] / len(r["bp_per_epoch"]):.2f} | {sum(r["epoch_train_seconds"]):.0f} |')
  table = '\n'.join(lines)
  print(table)
  with open(args.out + '_table.md', 'w') as f:
    f.write(table + '\n')


if __name__ == '__main__':
  main()
