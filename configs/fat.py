r"""FAT (Zhang et al., ICML 2020), Table 1: WRN-32-10 on CIFAR-10, PGD-10-tau with tau 0 -> 1 -> 2.

  python -m advjax.main --config=configs/fat.py            # the paper setting; CIFAR-10 from $ADVJAX_DATA_DIR
  python -m advjax.main --config=configs/fat.py:eps16      # eps_train 16/255 (0.062)
  python -m advjax.main --config=configs/fat.py:small      # SmallCNN on a CIFAR-10 subset, minutes on a CPU
  python -m advjax.main --config=configs/fat.py:digits     # the quick start

Paper numbers ("dat" protocol: eps 0.031, FGSM / PGD-20 / CW-30 with step eps/4 and a random start):
  FAT, eps_train 8/255:  natural 89.34 +- 0.22, FGSM 65.52, PGD-20 46.13 +- 0.05, C&W 46.82.
  FAT, eps_train 16/255: natural 87.00 +- 0.20, FGSM 65.94, PGD-20 49.86 +- 0.33, C&W 48.65.
On the JPEG copy of CIFAR-10 in shared/data expect the same ballpark, not the decimals.
The early stop checks each example against its own label, as `earlystop.py` since commit 6e461e0 (2021-01-15); the
numbers above may predate it: --config.attack.misaligned_labels=True reproduces the earlier check (any FAT config).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top


def eps16(c):
  c.attack.eps = 0.062


def get_config(arg=None):
  c = default.base_config()
  c.method = 'fat'
  c.attack.noise_std = 0.001    # omega: Gaussian noise added at every step
  # tau 0 for epochs 1-50, 1 for 51-90, 2 from 91 (`--dynamictau`, read at epoch + 1).
  c.tau_schedule = ((1, 0), (51, 1), (91, 2))
  return default.apply_variants(c, arg, dict(eps16=eps16))
