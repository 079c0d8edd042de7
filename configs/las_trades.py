r"""LAS-TRADES (Jia et al., CVPR 2022): LAS-AT's learned strategies for TRADES, with a per-example beta.

  python -m advjax.main --config=configs/las_trades.py         # WRN-34-10, CIFAR-10, 100 epochs
  python -m advjax.main --config=configs/las_trades.py:small   # SmallCNN on a CIFAR-10 subset, a TinyCNN policy

The official command: eps {5..9}/255, steps {7..14}, step size {2, 3, 4}/255, beta {5..9}; start x + 0.001 N, KL
loss; target loss CE(f(x)) + mean_i beta_i KL(p(x_i) || p(x'_i)); policy updated every iteration, SGD lr 1e-4,
momentum 0.9, weight decay 5e-4, its LR /10 with the target's (its scheduler steps every iteration); reward
clip(TRADES loss in training mode, 0, 20) + clip(8 robust, +-20) + clip(4 clean, +-20); LR /10 at 75/100 and
90/100. Reported numbers: see LAS-AT's (RobustBench, variant unrecorded).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top
import las_at  # pylint: disable=g-import-not-at-top


def get_config(arg=None):
  c = las_at.las_base('las_trades', 100)
  c.las = las_at.las_settings(eps=range(5, 10), steps=range(7, 15), step_size=(2, 3, 4), beta=range(5, 10))
  c.las.update(policy_every=1, policy_momentum=0.9, policy_weight_decay=5e-4, policy_lr_follows_target=True,
               loss_reward_clip=20.0, robust_reward=8.0, clean_reward=4.0, accuracy_reward_clip=20.0)
  c.lr_schedule = ((1, 0.1), (76, 0.01), (91, 0.001))
  return default.apply_variants(c, arg, las_at.variants())
