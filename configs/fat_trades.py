r"""FAT for TRADES (Zhang et al., ICML 2020, Table 2): WRN-34-10 on CIFAR-10, KL attack stopped tau steps late.

  python -m advjax.main --config=configs/fat_trades.py                # beta 6, eps_train 8/255
  python -m advjax.main --config=configs/fat_trades.py:beta1,eps16    # variants: beta1, eps16, small, digits

Training: the TRADES loss (two training-mode forwards, natural first, as the official `FAT_for_TRADES.py`) on
PGD-10-tau points of the KL attack from clip01(x + 0.001 N), step 0.007, no omega; tau 0 -> 1 -> 2 -> 3 at epochs
31 / 51 / 71; 85 epochs, LR 0.1, x0.1 from epoch 75, wd 2e-4. Evaluation as the official
per-epoch PGD-20: "Madry" start clip01(x + U(-eps, eps)), step 0.003 (tests/official/test_search_fat.py).

Numbers (FAT README, WRN-34-10, eps 0.031, no random start):
  beta 6, eps 8/255:  natural 86.60, FGSM 61.79, PGD-20 55.98, C&W 54.29 (AutoAttack 53.51, RobustBench)
  beta 6, eps 16/255: natural 84.39, FGSM 61.73, PGD-20 57.12, C&W 54.36
  beta 1, eps 8/255:  natural 89.94, FGSM 61.00, PGD-20 49.70, C&W 49.35
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top
import fat  # pylint: disable=g-import-not-at-top
import trades  # pylint: disable=g-import-not-at-top


def get_config(arg=None):
  c = default.base_config()
  c.method = 'fat_trades'
  c.seed = 1
  c.num_epochs = 85
  c.model.name = 'wrn-34-10'
  c.beta = 6.0
  c.trades_forwards = 2
  c.forward_order = 'natural_first'
  c.attack.update(loss='kl', init='gaussian', clip_init=True)
  c.tau_schedule = ((1, 0), (31, 1), (51, 2), (71, 3))
  c.lr_schedule = ((1, 0.1), (75, 0.01), (90, 0.001))
  c.eval.step_size = 0.003   # "Madry" start clip01(x + U(-eps, eps)), as the official per-epoch PGD-20
  return default.apply_variants(c, arg, dict(beta1=trades.beta1, eps16=fat.eps16))
