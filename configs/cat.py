r"""CAT, curriculum adversarial training (Cai, Liu & Song, IJCAI 2018), as the official `advtrain_all.py` trains it.

  python -m advjax.main --config=configs/cat.py              # variants: fat_table1, small, digits

As `advtrain_CAT` (sunblaze-ucb/curriculum-adversarial-training-CAT, commit ab58b77; tests/official/test_cat.py):
at level k each batch is cut into k + 1 parts, part j attacked with PGD-j (batch mixing, `cat.batch_mixing`), each
part's PGD from x + U(-eps, eps) unclipped, with a step size drawn per part, 0.064 / j * U(1, 10 / j)
(`cat.step_rule`), eps 0.032; the attack in training mode (each forward on the part's own BatchNorm statistics);
one cross-entropy step on the mixed batch; Adam, lr 1e-4 (the test covers all of these); batch 200, no
normalisation, crop and flip (read in the script, not tested).
What is not reproduced:
- k rises by a rule in the official code: once 10 epochs pass without a better validation accuracy (PGD-k on
  quantised inputs, a 2% split of the training set) and training accuracy exceeds 0.9, training resumes from the best
  checkpoint at k + 1, with no cap (`--validk=k`, the default; without it, when training accuracy exceeds
  `--expect_acc` 0.95, up to `max_k` 7). Here k follows `steps_schedule`: k + 1 every 10 epochs, the rule's
  fastest pace, up to `cat.max_k` 7 (the step compiles one branch per level up to it);
- the network: ResNet-50 (kuangliu's CIFAR layout) or DenseNet-161 there; WRN-32-10 here, FAT's Table 1 setting;
- epochs: the official loop runs epochs 1-299, each level rise consuming one epoch number; 300 here;
- validation and test accuracies on quantised inputs (16 levels) there; the per-epoch PGD-20 here.
With several devices each device mixes its own shard of the batch.

`fat_table1`: FAT's Table 1 reading of CAT (the row's numbers below): PGD-k of the whole batch with k from the
schedule 0, 1, ..., 10, one more every 10 epochs, fixed step 0.007, eps 0.031, clipped uniform start, the attack in
eval mode; FAT's SGD and LR schedule, 120 epochs, batch 128.

Numbers: the CAT row of FAT's Table 1 (from the DAT paper; WRN-32-10, CIFAR-10, "dat" protocol): natural 77.43,
FGSM 57.17, PGD-20 46.06, C&W 42.28. None recorded for the official setting.
"""
import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top


def fat_table1(c):
  base = default.base_config()
  for field in ('num_epochs', 'batch_size', 'optimizer', 'lr_schedule'):
    c[field] = base[field]
  c.attack.update(eps=0.031, step_size=0.007, clip_init=True, model_mode='eval')
  c.cat.update(batch_mixing=False, step_rule='fixed', max_k=10)
  c.steps_schedule = tuple((1 + 10 * k, k) for k in range(11))


def get_config(arg=None):
  c = default.base_config()
  c.method = 'cat'
  c.num_epochs = 300
  c.batch_size = 200
  c.attack.update(eps=0.032, step_size=0.064, clip_init=False, model_mode='train')
  c.cat = ml_collections.ConfigDict(dict(batch_mixing=True, step_rule='random', max_k=7))
  c.steps_schedule = tuple((1 + 10 * k, k) for k in range(8))
  c.optimizer.update(name='adam', weight_decay=0.0)
  c = default.apply_variants(c, arg, extra={'fat_table1': fat_table1})
  if c.optimizer.get('name') == 'adam':   # `digits` sets an SGD schedule
    c.lr_schedule = ((1, 1e-4),)
  return c
