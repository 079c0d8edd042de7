r"""CAT, curriculum adversarial training (Cai et al., IJCAI 2018), in FAT's Table 1 setting (WRN-32-10, CIFAR-10).

  python -m advjax.main --config=configs/cat.py            # variants: small, digits

Training: PGD-k with the step count k growing over training: natural training for epochs 1-10 (k = 0), then
k = 1, 2, ..., 10, one more step every 10 epochs; PGD from a uniform start with step 0.007, eps 0.031; FAT's
optimiser and LR schedule. The paper's curriculum raises k when validation accuracy plateaus and adds batch mixing
and quantisation; those are not reproduced: k follows `steps_schedule`.

Numbers (the CAT row of FAT's Table 1, from the DAT paper): natural 77.43, FGSM 57.17, PGD-20 46.06, C&W 42.28.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top


def get_config(arg=None):
  c = default.base_config()
  c.method = 'cat'
  c.steps_schedule = tuple((1 + 10 * k, k) for k in range(11))
  return default.apply_variants(c, arg)
