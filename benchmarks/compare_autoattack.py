r"""advjax's AutoAttack against the official PyTorch AutoAttack on the same network, weights and images.

Trains the quick start (FAT on digits, tiny_cnn) unless --checkpoint names a tiny_cnn run, copies its weights into
an equivalent PyTorch module, checks that both give the same logits, then runs AutoAttack's standard version
(APGD-CE, APGD-T, FAB-T, Square) with the official code (`pyautoattack`, fra31/auto-attack) and with advjax on the
same test images, and prints robust accuracy, per-example agreement and examples/s of each.

  pip install -e ".[torch]"
  python benchmarks/compare_autoattack.py --eps=0.2 --num=360
"""
import argparse
import json
import os
import subprocess
import sys
import time

import jax.numpy as jnp
import ml_collections
import numpy as np
import torch
from pyautoattack import AutoAttack

from advjax import checkpoint, data, evaluate, models

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


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--checkpoint', default='', help='a tiny_cnn training workdir; default: train the quick start')
  parser.add_argument('--eps', type=float, default=0.2)
  parser.add_argument('--num', type=int, default=360)
  parser.add_argument('--batch', type=int, default=360)
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

  started = time.perf_counter()
  official = AutoAttack(net, norm='Linf', eps=args.eps, version='standard', seed=0)
  x_official, _ = official.run_standard_evaluation(x_torch, y_torch, batch_size=args.batch)
  official_seconds = time.perf_counter() - started
  with torch.no_grad():
    official_robust = (net(x_official).argmax(1) == y_torch).numpy()

  started = time.perf_counter()
  result = evaluate.evaluate(logits_fn, variables, images, labels, 'aa_standard', eps=args.eps, batch_size=args.batch)
  advjax_seconds = time.perf_counter() - started
  print(evaluate.markdown_table(result))
  advjax_accuracy = result['rows'][-1]['cumulative']
  print(json.dumps(dict(
      examples=len(labels), eps=args.eps, official_robust_accuracy=100 * official_robust.mean(),
      advjax_robust_accuracy=advjax_accuracy,
      gap_points=advjax_accuracy - 100 * official_robust.mean(),
      official_seconds=official_seconds, advjax_seconds_including_compile=advjax_seconds,
      advjax_attack_seconds=sum(r['seconds'] for r in result['rows']),
      official_examples_per_s=len(labels) / official_seconds, advjax_examples_per_s=len(labels) / advjax_seconds)))


if __name__ == '__main__':
  main()
