r"""Madry PGD-AT (Madry et al., ICLR 2018) in FAT's Table 1 setting: WRN-32-10, CIFAR-10, PGD-10 from a uniform start.

  python -m advjax.main --config=configs/madry.py          # variants: small, digits (see configs/default.py)

Numbers quoted by the FAT README ("dat" protocol, from the DAT paper): natural 87.30, FGSM 56.10, PGD-20 45.80,
C&W 46.80. FAT with tau = K computes exactly this attack.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top


def get_config(arg=None):
  return default.apply_variants(default.base_config(), arg)
