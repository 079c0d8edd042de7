r"""TRADES (Zhang et al., ICML 2019): WRN-34-10 on CIFAR-10, beta 6, the official `train_trades_cifar10.py`.

  python -m advjax.main --config=configs/trades.py         # variants: beta1, small, digits

Training: CE(f(x)) + beta * KL(p(x) || p(x')) with x' from PGD-10 on the KL (step 0.007) starting at x + 0.001 N,
unclipped; 76 epochs, LR 0.1 then 0.01 from epoch 75 (the script's later decays are never reached), wd 2e-4.
Three training-mode forwards as `trades.py` (natural, adversarial, natural again for the KL target: tested step for
step in tests/official/test_search_trades_mart.py); `--config.trades_forwards=2` drops the third (the same gradient, one
forward fewer, but BatchNorm's running statistics see the natural batch once, not twice).
Evaluation: PGD-20, step 0.003, uniform start (unclipped), eps 0.031.

Numbers (official leaderboard, WRN-34-10, eps 0.031): natural 84.92, PGD-20 56.61, FGSM 61.06,
AutoAttack 53.08; beta 1: natural 88.64, PGD-20 49.14.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top


def beta1(c):
  c.beta = 1.0


def get_config(arg=None):
  c = default.base_config()
  c.method = 'trades'
  c.seed = 1
  c.num_epochs = 76
  c.model.name = 'wrn-34-10'
  c.beta = 6.0
  c.trades_forwards = 3
  c.attack.update(loss='kl', init='gaussian', clip_init=False)
  c.lr_schedule = ((1, 0.1), (75, 0.01), (90, 0.001), (100, 0.0001))
  c.eval.update(step_size=0.003, clip_init=False)
  return default.apply_variants(c, arg, dict(beta1=beta1))
