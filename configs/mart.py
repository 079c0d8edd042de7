r"""MART (Wang et al., ICLR 2020): WRN-34-10 on CIFAR-10, the official `train_wideresnet.py`.

  python -m advjax.main --config=configs/mart.py           # variants: small, digits

Training: BCE(x') + beta * KL(p(x) || p(x')) (1 - p_y(x)), beta 6, with x' from PGD-10 on the CE (step 0.007)
starting at x + 0.001 N; 90 epochs, LR 0.1, x0.1 from epoch 75, wd 7e-4. Evaluation: PGD-20, step eps/10, uniform
start. (The ResNet-18 script differs: lr 0.01, wd 3.5e-3, beta 5, 120 epochs.)

Numbers: the FAT paper's Table 4 evaluates the released MART WRN-34-10 (eps 8/255, step eps/10, PGD-20 with a
random start, CW = PGD-30 on the margin): natural 83.62, FGSM 67.38, PGD-20 58.24, C&W 53.67.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top


def digits(c):
  default.digits(c)
  c.lr_schedule = ((1, 0.01), (13, 0.001))   # at 0.1 the boosted CE diverges on digits; 0.01 as MART's ResNet-18 script


def get_config(arg=None):
  c = default.base_config()
  c.method = 'mart'
  c.seed = 1
  c.num_epochs = 90
  c.model.name = 'wrn-34-10'
  c.beta = 6.0
  c.attack.update(init='gaussian', clip_init=False)
  c.optimizer.weight_decay = 7e-4
  c.lr_schedule = ((1, 0.1), (75, 0.01), (90, 0.001))
  c.eval.update(step_size=0.0031, clip_init=False)
  return default.apply_variants(c, arg, dict(digits=digits))
