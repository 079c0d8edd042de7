r"""CAT, curriculum adversarial training (Cai et al., IJCAI 2018), in FAT's Table 1 setting (WRN-32-10, CIFAR-10).

  python -m advjax.main --config=configs/cat.py            # variants: small, digits

Training: PGD-k with the step count k growing over training: natural training for epochs 1-10 (k = 0), then
k = 1, 2, ..., 10, one more step every 10 epochs; PGD from a uniform start with step 0.007, eps 0.031; FAT's
optimiser and LR schedule; k follows `steps_schedule`.

This is FAT's Table 1 reading of CAT, not the official code. What the official `advtrain_all.py` (with
`PGDAttack.py`; sunblaze-ucb/curriculum-adversarial-training-CAT, commit ab58b77ac2, read, not tested) does
differently, none of it reproduced here:
- eps 0.032 (CIFAR-10) with a base step 0.064 and a step size drawn per batch: 0.064 / k * U(1, 10 / k); k at most 7
  (`max_k`); `perturb_true(x, y, k)` runs k steps from x + U(-eps, eps);
- k rises by a rule, not a schedule: by default (`--validk=k`), once 10 epochs pass without a better validation
  accuracy (quantised inputs, a 2% split) and training accuracy exceeds 0.9, training resumes from the best
  checkpoint at k + 1 (with `--validk` unset: when training accuracy exceeds `--expect_acc`, 0.95);
- batch mixing (`regularLoss`): each batch is split into k + 1 parts attacked with 0, 1, ..., k steps (the last part
  takes the remainder), one CE over the mixed batch;
- the attack runs with the model in training mode (`net.train()` throughout `advtrain_CAT`);
- Adam, lr 1e-4 (SGD 0.1, momentum 0.9, weight decay 5e-4 with `--sgd`); batch 200; ResNet-50 or DenseNet-161;
- validation and test accuracies on quantised inputs.

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
