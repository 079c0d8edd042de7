r"""LAS-AWP (Jia et al., CVPR 2022): LAS-AT's learned strategies with plain CE under adversarial weight perturbation.

  python -m advjax.main --config=configs/las_awp.py            # WRN-34-10, CIFAR-10, 200 epochs
  python -m advjax.main --config=configs/las_awp.py:small      # SmallCNN on a CIFAR-10 subset, a TinyCNN policy

The official command: eps {7..15}/255, steps {8..16}, step size {2..5}/255; the training perturbation clipped to
8/255 whatever eps was sampled; AWP gamma 0.01, no warm-up, proxy SGD lr 0.01; a clean training-mode forward after
each update; policy updated every iteration with its LR scaled like the target's from 1e-4; reward clip(CE, 0, 10) +
clip(robust, +-10) + clip(clean, +-10) of a look-ahead copy trained under AWP on LS-CE 0.7, robust under plain
PGD-10 (2 restarts, highest loss kept) on the copy in training mode; LR 0.1, /10 at 50% and /100 at 75%; CIFAR
mean/std inside the model. The official reward forwards (R1, R2, R3 and the copy's AWP proxy) omit the
normalisation that training and the attacks use (a bug, kept: `las.reward_skips_normalisation=False` normalises).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top
import las_at  # pylint: disable=g-import-not-at-top

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


def get_config(arg=None):
  c = las_at.las_base('las_awp', 200)
  c.model.update(mean=CIFAR_MEAN, std=CIFAR_STD)
  c.las = las_at.las_settings(eps=range(7, 16), steps=range(8, 17), step_size=range(2, 6))
  c.las.update(policy_every=1, policy_lr_follows_target=True, robust_reward=1.0, clean_reward=1.0,
               reward_early_stop=False, lookahead_awp=True, reward_skips_normalisation=True, train_eps_clip=8 / 255,
               clean_forward_after_step=True)
  c.awp.update(gamma=0.01, warmup_epochs=0)
  c.lr_schedule = ((1, 0.1), (101, 0.01), (151, 0.001))
  return default.apply_variants(c, arg, las_at.variants())
