r"""Madry PGD-AT (Madry et al., ICLR 2018) in FAT's Table 1 setting: WRN-32-10, CIFAR-10, PGD-10.

Run (expects the CIFAR-10 archive in $ADVJAX_DATA_DIR, see README):

  python -m advjax.main --config=configs/madry.py

Numbers quoted by the FAT README ("dat" protocol, from the DAT paper): natural 87.30, FGSM 56.10, PGD-20 45.80,
C&W 46.80. FAT with tau = K = 10 computes exactly this attack (`--config=configs/fat.py --config.tau_schedule=...`).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import fat  # pylint: disable=g-import-not-at-top


def get_config():
  c = fat.base_config()
  c.method = 'madry'
  c.attack.noise_std = 0.0   # plain PGD-10 from a uniform start
  return c
