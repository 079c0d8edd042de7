"""`advjax.report` over workdirs of every method: each method's own config and the epoch records the training loop
writes for it (its schedule's settings, its extra metrics), without training."""
import json
import os

import jax
import numpy as np

from advjax import methods, metrics, report, train
from advjax import step as step_lib
from helpers import REPO, load_config

CONFIGS = sorted(name[:-3] for name in os.listdir(os.path.join(REPO, 'configs'))
                 if name.endswith('.py') and name not in ('default.py', 'eval.py', 'quickstart.py'))


def write_run(workdir, name, epochs, rng):
  """A workdir as `train_and_evaluate` leaves it: config.json and one metrics line per epoch, from `epoch_record`."""
  config = load_config(name, 'digits')
  workdir.mkdir()
  (workdir / 'config.json').write_text(config.to_json(indent=2))
  writer = metrics.Writer(workdir)
  for epoch in range(1, epochs + 1):
    sums = {key: np.float32(rng.uniform(1, 50)) for key in jax.device_get(step_lib.zero_metrics(config))}
    sums['examples'] = np.float32(100)
    evaluation = dict(natural_acc=rng.uniform(0.5, 1), pgd_acc=rng.uniform(0, 0.5))
    hparams = methods.hparams(config, epoch, first_step=10 * (epoch - 1))
    writer.write(train.epoch_record(config, epoch, 10 * epoch, hparams, sums, evaluation, train_seconds=1.5,
                                    epoch_seconds=2.0))
  writer.close()
  return config


def test_report_of_a_run_of_every_method(tmp_path):
  rng = np.random.RandomState(0)
  runs = {name: write_run(tmp_path / name, name, epochs=3, rng=rng) for name in CONFIGS}
  rows = [dict(attack=a, accuracy=v, cumulative=v, seconds=1.0) for a, v in (('natural', 90.0), ('AA', 40.0))]
  (tmp_path / 'madry' / 'eval_aa_standard.json').write_text(json.dumps(dict(eps=0.2, examples=360, rows=rows)))

  out = tmp_path / 'report'
  table = report.write([tmp_path / name for name in CONFIGS], out).splitlines()
  pgd = sorted({f'PGD-{config.eval.steps}' for config in runs.values()}, key=lambda a: int(a[4:]))
  columns = ['natural', *pgd, 'AA']
  assert table[0] == f'| run | method | {" | ".join(columns)} | BP/example/epoch | training (s) |'
  assert len(table) == 2 + len(CONFIGS) + 2   # header, rule, a row per run, the footnote on per-epoch results
  for name, config in runs.items():
    records = [json.loads(line) for line in (tmp_path / name / 'metrics.jsonl').read_text().splitlines()]
    assert [r['epoch'] for r in records] == [1, 2, 3]
    if name == 'madry':   # from its eval_aa_standard.json
      accuracy = dict(natural='90.00', AA='40.00')
    else:                 # from its last per-epoch evaluation
      accuracy = {'natural': f'{100 * records[-1]["natural_acc"]:.2f}*',
                  f'PGD-{config.eval.steps}': f'{100 * records[-1]["pgd_acc"]:.2f}*'}
    cells = ' | '.join(accuracy.get(column, '') for column in columns)
    bp = np.mean([r['bp_per_example'] for r in records])
    assert f'| {name} | {config.method} | {cells} | {bp:.2f} | 4 |' in table, (name, table)
  for plot in ('accuracy_per_epoch.png', 'bp_per_epoch.png'):
    assert (out / plot).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
