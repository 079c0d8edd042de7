r"""FAT for MART (Zhang et al., ICML 2020, Table 4): WRN-34-10 on CIFAR-10, CE attack stopped tau steps late.

  python -m advjax.main --config=configs/fat_mart.py       # variants: eps16, small, digits

Training: the MART loss (beta 6) on PGD-10-tau points of the CE attack from clip01(x + 0.001 N), step 0.007;
tau 0 -> 1 -> 2 -> 3 -> 4 at epochs 21 / 41 / 61 / 81; 90 epochs, LR 0.1, x0.1 from epoch 60, x0.01 from 90,
wd 2e-4. Evaluation as the official
per-epoch PGD-20: "Madry" start clip01(x + U(-eps, eps)), step 0.003 (tests/official/test_search_fat.py).

Numbers (FAT paper Table 4, WRN-34-10; eps 8/255, step eps/10, PGD-20 with a random start, CW = PGD-30 margin):
  eps_train 8/255:  natural 86.40, FGSM 68.94, PGD-20 57.89, C&W 52.28
  eps_train 16/255: natural 84.39, FGSM 68.52, PGD-20 59.13, C&W 52.85
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top
import fat  # pylint: disable=g-import-not-at-top


def get_config(arg=None):
  c = default.base_config()
  c.method = 'fat_mart'
  c.seed = 1
  c.num_epochs = 90
  c.model.name = 'wrn-34-10'
  c.beta = 6.0
  c.forward_order = 'adversarial_first'   # the official FAT_for_MART.py: model(output_adv), then model(output_natural)
  c.attack.update(init='gaussian', clip_init=True)
  c.tau_schedule = ((1, 0), (21, 1), (41, 2), (61, 3), (81, 4))
  c.lr_schedule = ((1, 0.1), (60, 0.01), (90, 0.001))
  c.eval.step_size = 0.003   # "Madry" start clip01(x + U(-eps, eps)), as the official per-epoch PGD-20
  return default.apply_variants(c, arg, dict(eps16=fat.eps16))
