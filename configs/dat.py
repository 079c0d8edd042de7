r"""DAT (Wang et al., ICML 2019), the DAT row of FAT's Table 1: WRN-32-10, PGD-10 stopped by FOSC <= c_t.

  python -m advjax.main --config=configs/dat.py            # variants: small, digits

Training: PGD with step eps/4 from x + U(-eps, eps) (unclipped); an example freezes once its FOSC value
eps ||g||_1 - <x' - x0, g> falls to c_t = 0.5 (1 - (epoch - 1) / 100), floored at 0 (full PGD-10 from epoch 101).
x0 is the clean input as in the paper (`--config.fosc.reference=start`: the official code's random-start point).
120 epochs, SGD lr 0.01 momentum 0.9, /10 from epochs 60 and 100; Keras L2 2e-3 on kernels, i.e. a gradient of
4e-3 w, applied here as weight decay 4e-3 on all parameters.
Not reproduced: Keras' per-update LR decay (lr / (1 + 1e-4 t)), the rotation/shift augmentation (crop + flip here),
the official model's quirks, and the code-only CE re-weighting.
Evaluation: PGD-20, step eps/4, uniform start.

Numbers (DAT paper via the FAT README, CIFAR-10 WRN-32-10, eps 8/255): natural 85.03, FGSM 63.53, PGD-20 48.70,
C&W 47.27.
"""
import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top


def get_config(arg=None):
  c = default.base_config()
  c.method = 'dat'
  c.attack.update(step_size=0.031 / 4, clip_init=False)
  c.fosc = ml_collections.ConfigDict(dict(c_max=0.5, decay_epochs=100, reference='clean'))
  c.optimizer.weight_decay = 4e-3
  c.lr_schedule = ((1, 0.01), (60, 0.001), (100, 0.0001))
  return default.apply_variants(c, arg)
