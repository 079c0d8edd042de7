r"""advjax's AutoAttack against the official PyTorch AutoAttack on the same network, weights and images.

Trains the quick start (FAT on digits, tiny_cnn) unless --checkpoint names a tiny_cnn run, copies its weights into
an equivalent PyTorch module, checks that both give the same logits, then runs AutoAttack's standard version
(APGD-CE, APGD-T, FAB-T, Square) with the official code (`pyautoattack`, fra31/auto-attack) and with advjax on the
same test images, and prints per stage the robust accuracy of each and the points on which they differ (the random
draws differ: APGD's starts and Square's squares), and the time of each (advjax with and without compiling).

  pip install -e ".[torch]"
  python benchmarks/compare_autoattack.py --eps=0.2 --num=360
  python benchmarks/compare_autoattack.py --norm=l2 --eps=1.0 --seeds=3
  python benchmarks/compare_autoattack.py --norm=l1 --eps=1.0 --seeds=3 --checkpoint=/tmp/advjax_compare_quickstart
"""
import argparse
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import torch
from pyautoattack import AutoAttack
from pyautoattack import state as state_module

from advjax import checkpoint, data, evaluate, models, xla_flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class TorchTinyCNN(torch.nn.Module):
  """advjax's tiny_cnn in PyTorch: conv3-32, BN, ReLU, conv3-64/2, BN, ReLU, flatten (NHWC order), dense."""

  def __init__(self, params, stats):
    super().__init__()
    t = lambda a: torch.tensor(np.asarray(a, np.float32))
    convs, norms = [], []
    for i, stride in enumerate((1, 2)):
      kernel = t(params[f'conv{i}']['kernel']).permute(3, 2, 0, 1)   # HWIO -> OIHW
      conv = torch.nn.Conv2d(kernel.shape[1], kernel.shape[0], 3, stride, 1, bias=False)
      conv.weight.data = kernel
      norm = torch.nn.BatchNorm2d(kernel.shape[0], eps=1e-5)
      norm.weight.data, norm.bias.data = t(params[f'bn{i}']['scale']), t(params[f'bn{i}']['bias'])
      norm.running_mean.data, norm.running_var.data = t(stats[f'bn{i}']['mean']), t(stats[f'bn{i}']['var'])
      convs.append(conv)
      norms.append(norm)
    self.convs, self.norms = torch.nn.ModuleList(convs), torch.nn.ModuleList(norms)
    self.head = torch.nn.Linear(*params['head']['kernel'].shape)
    self.head.weight.data, self.head.bias.data = t(params['head']['kernel']).T, t(params['head']['bias'])

  def forward(self, x):   # NCHW in [0, 1]
    for conv, norm in zip(self.convs, self.norms):
      x = torch.relu(norm(conv(x)))
    return self.head(x.permute(0, 2, 3, 1).flatten(1))


STAGES = (('apgd-ce', 'APGD-CE'), ('apgd-t', 'APGD-T'), ('fab-t', 'FAB-T'), ('square', 'Square'))


def official_run(net, x, y, *, norm, eps, batch, seed):
  """The official standard AutoAttack: (seconds, {stage: per-example robust flags after it}). The flags are read
  from its `EvaluationState` each time a stage ends (`add_run_attack`), the official code otherwise untouched."""
  after, times = {}, [time.perf_counter()]
  add_run_attack = state_module.EvaluationState.add_run_attack

  def record(self, attack):
    after[attack] = self.robust_flags.numpy().copy()
    times.append(time.perf_counter())
    print(f'official {attack}: {times[-1] - times[-2]:.1f} s', flush=True)
    return add_run_attack(self, attack)

  state_module.EvaluationState.add_run_attack = record
  try:
    started = time.perf_counter()
    AutoAttack(net, norm=evaluate.THREAT_MODELS[norm], eps=eps, version='standard', seed=seed
               ).run_standard_evaluation(x, y, batch_size=batch)
    return time.perf_counter() - started, after
  finally:
    state_module.EvaluationState.add_run_attack = add_run_attack


def main():
  xla_flags.apply()   # before the first computation, as advjax.main does
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--checkpoint', default='', help='a tiny_cnn training workdir; default: train the quick start')
  parser.add_argument('--norm', default='linf', choices=('linf', 'l2', 'l1'))
  parser.add_argument('--eps', type=float, default=0.2)
  parser.add_argument('--num', type=int, default=360)
  parser.add_argument('--batch', type=int, default=360)
  parser.add_argument('--seeds', type=int, default=1, help='advjax keys and official seeds 0, 1, ...')
  args = parser.parse_args()
  workdir = args.checkpoint or '/tmp/advjax_compare_quickstart'
  if not args.checkpoint:
    subprocess.run([sys.executable, '-m', 'advjax.main', f'--config={REPO}/configs/quickstart.py',
                    f'--workdir={workdir}'], check=True, cwd=REPO)
  with open(os.path.join(workdir, 'config.json')) as f:
    config = ml_collections.ConfigDict(json.load(f))
  assert config.model.name == 'tiny_cnn', 'the PyTorch copy covers tiny_cnn only'
  dataset = data.load(config.data)
  images, labels = dataset.test_images[:args.num], dataset.test_labels[:args.num]
  state = checkpoint.latest_state(workdir)
  variables = dict(params=state['params'], batch_stats=state['batch_stats'])
  model = models.get_model('tiny_cnn', dataset.num_classes)
  logits_fn = lambda v, x: model.apply(v, x, train=False)

  torch.set_num_threads(os.cpu_count())
  net = TorchTinyCNN(state['params'], state['batch_stats']).eval()
  x_torch = torch.tensor(images, dtype=torch.float32).permute(0, 3, 1, 2) / 255
  y_torch = torch.tensor(labels, dtype=torch.long)
  with torch.no_grad():
    gap = np.abs(net(x_torch).numpy() - np.asarray(logits_fn(variables, jnp.asarray(images, jnp.float32) / 255)))
  print(f'max |logits PyTorch - logits advjax| = {gap.max():.2e}')

  for seed in range(args.seeds):
    official_seconds, official_after = official_run(net, x_torch, y_torch, norm=args.norm, eps=args.eps,
                                                    batch=args.batch, seed=seed)
    runs = []
    for _ in range(2):   # the second run reuses the compiled attacks
      started = time.perf_counter()
      result = evaluate.evaluate(logits_fn, variables, images, labels, 'aa_standard', eps=args.eps, norm=args.norm,
                                 batch_size=args.batch, key=jax.random.key(seed))
      runs.append(time.perf_counter() - started)
    print(evaluate.markdown_table(result))
    broken_by = np.asarray(result['broken_by'])
    stages, theirs = {}, None
    for k, (official_name, name) in enumerate(STAGES, start=1):
      ours = (broken_by == -1) | (broken_by > k)
      theirs = official_after.get(official_name, theirs)   # the official code stops once no point is left
      stages[name] = dict(advjax=100 * ours.mean(), official=100 * theirs.mean(),
                          differing_points=int((ours != theirs).sum()))
    print(json.dumps(dict(
        seed=seed, norm=args.norm, eps=args.eps, examples=len(labels), stages=stages,
        official_seconds=round(official_seconds, 2), advjax_seconds_with_compile=round(runs[0], 2),
        advjax_seconds_compiled=round(runs[1], 2), speed_compiled=round(official_seconds / runs[1], 2),
        speed_with_compile=round(official_seconds / runs[0], 2))))


if __name__ == '__main__':
  main()
