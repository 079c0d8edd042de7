r"""DAT (Wang et al., ICML 2019), the DAT row of FAT's Table 1: WRN-32-10, PGD-10 stopped by FOSC <= c_t.

  python -m advjax.main --config=configs/dat.py            # variants: small, digits

Training: PGD with step eps/4 from x + U(-eps, eps) (unclipped); an example freezes once its FOSC value
eps ||g||_1 - <x' - x0, g> falls to c_t = 0.5 (1 - (epoch - 1) / 100), floored at 0 (full PGD-10 from epoch 101).
As the official code (`pgd_attack.py`, `train_models.py`; tested step for step in
tests/official/test_search_dat.py): x0 is the random-start point (`--config.fosc.reference=clean`: the paper's clean
input); from the second epoch each example's CE is weighted by its own detached adversarial CE (`--config.fosc.weight_by_adversarial_ce=False`: the
paper's plain CE); Keras' SGD(lr=0.01, decay=1e-4, momentum=0.9): lr / (1 + 1e-4 t) at update t, /10 from epochs 60
and 100; Keras L2 2e-3 on the kernels only, i.e. a gradient of 4e-3 w. 120 epochs.
Not reproduced: the rotation/shift augmentation (crop + flip here), the official Keras WRN's quirks (no stem BN, a
discarded BN in each later block; Keras BatchNorm's momentum 0.99 and eps 1e-3). The outer CE is Keras' (p_y clipped
to [1e-7, 1 - 1e-7]).
Evaluation: PGD-20, step eps/4, from x + U(-eps, eps) unclipped (`TestLinfPGDAttack`).

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
  c.fosc = ml_collections.ConfigDict(dict(c_max=0.5, decay_epochs=100, reference='start',
                                          weight_by_adversarial_ce=True))
  c.optimizer.update(weight_decay=4e-3, weight_decay_on='kernels', keras_time_decay=1e-4)
  c.lr_schedule = ((1, 0.01), (60, 0.001), (100, 0.0001))
  c.eval.clip_init = False
  return default.apply_variants(c, arg)
