r"""Why single-step training collapses to a constant predictor on a narrow SmallCNN: short probes that take the attack's
input gradient three ways and train a few epochs in the fast side-by-side's CIFAR-10 setting.

Plain FGSM from a uniform start (FGSM-GA with no regulariser), its input gradient taken with BatchNorm
- 'train':  in training mode, as the official code of FGSM-GA, FGSM-SDI and FGSM-PGI: the gradient of the batch's
            mean loss, through the batch's own statistics, so each example's gradient also carries how moving it
            changes every other example's normalisation;
- 'frozen': normalised by the same batch statistics held constant (eval mode with the batch's mean and variance):
            the same forward values, without those cross-example terms;
- 'eval':   in eval mode, with the running statistics, as the search-based methods (Madry, FAT) do.

  ADVJAX_DATA_DIR=../shared/data python benchmarks/collapse_probe.py --widths 8 16 --epochs=2

prints, per width and mode, the training loss and the accuracy of the training forward on the attack's points per
epoch (ln 10 = 2.3026 is the constant predictor's loss), and the natural and PGD-10 accuracy after the last epoch.
"""
import argparse
import itertools
import json
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import side_by_side  # pylint: disable=g-import-not-at-top

from advjax import train, validation  # pylint: disable=g-import-not-at-top
from advjax.methods import search, single_step  # pylint: disable=g-import-not-at-top
from advjax import train_state as ts  # pylint: disable=g-import-not-at-top

BN_MOMENTUM = 0.9   # advjax.models.layers: flax's running update is m * old + (1 - m) * batch

_input_gradient = single_step.input_gradient


def frozen_stats_gradient(model, params, batch_stats, x, y, confidence=1.0, train=True):
  """The training-mode forward's values with its batch statistics as constants; running statistics as in 'train'."""
  del train
  _, new_stats = ts.train_forward(model, params, batch_stats, x)
  _, from_zero = ts.train_forward(model, params, jax.tree.map(jnp.zeros_like, batch_stats), x)
  moments = jax.lax.stop_gradient(jax.tree.map(lambda s: s / (1 - BN_MOMENTUM), from_zero))   # the batch's own

  def loss(v):
    logits = model.apply(dict(params=params, batch_stats=moments), v, train=False)
    return search.smoothed_cross_entropy(logits, y, confidence).mean()
  return jax.grad(loss)(x), new_stats


def probe_config(width, mode, args):
  """The side-by-side's 10-epoch setting (data, LR schedule, eps), trained for the first `args.epochs` epochs."""
  c = side_by_side.fast_config('fgsm_ga', None, {}, argparse.Namespace(**{**vars(args), 'epochs': 10, 'model': None}))
  c.num_epochs = args.epochs
  c.grad_align.weight = 0.0
  c.model.name = f'small_cnn-{width}'
  c.attack.model_mode = 'eval' if mode == 'eval' else 'train'
  return c


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--data_dir', default=os.environ.get('ADVJAX_DATA_DIR', ''))
  parser.add_argument('--widths', type=int, nargs='+', default=[8])
  parser.add_argument('--modes', nargs='+', default=['train', 'frozen', 'eval'])
  parser.add_argument('--num_train', type=int, default=5000)
  parser.add_argument('--num_test', type=int, default=500)
  parser.add_argument('--epochs', type=int, default=2)
  parser.add_argument('--lr', type=float, default=0.05)
  parser.add_argument('--workdir', default='/tmp/advjax_collapse_probe')
  args = parser.parse_args()
  for width, mode in itertools.product(args.widths, args.modes):
    single_step.input_gradient = frozen_stats_gradient if mode == 'frozen' else _input_gradient
    config = probe_config(width, mode, args)
    validation.check(config)
    workdir = os.path.join(args.workdir, f'w{width}_{mode}')
    train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, 'metrics.jsonl')) as f:
      epochs = [json.loads(line) for line in f]
    print(json.dumps(dict(width=width, mode=mode, loss=[round(e['train_loss'], 4) for e in epochs],
                          train_adv_acc=[round(100 * e['train_adv_acc'], 1) for e in epochs],
                          natural=100 * epochs[-1]['natural_acc'], pgd10=100 * epochs[-1]['pgd_acc'],
                          seconds=round(sum(e['train_seconds'] for e in epochs), 1))), flush=True)


if __name__ == '__main__':
  main()
