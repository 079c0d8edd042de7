r"""LAS-AT (Jia et al., CVPR 2022): a policy network picks each example's attack strategy (LAS-PGD-AT).

  python -m advjax.main --config=configs/las_at.py           # WRN-34-10, CIFAR-10, 110 epochs
  python -m advjax.main --config=configs/las_at.py:small     # SmallCNN on a CIFAR-10 subset, a TinyCNN policy

The official LAS-PGD-AT CIFAR-10 command: eps in {3..15}/255, steps in {3..14}, step size in {1..5}/255, one sample
per example and head; start U(-8/255, 8/255) whatever eps was sampled; policy (ResNet-18) updated every 20 iterations
at 1-based iterations 20, 40, ... by REINFORCE, SGD lr 1e-4 without momentum, grad-norm clip 1, never decayed;
reward clip(CE, 0, 10) + clip(4 robust accuracy, +-10) + clip(2 clean accuracy, +-10), accuracies as fractions of
the batch, of a look-ahead copy (one SGD step on LS-CE 0.7, fresh momentum); robust: PGD-10, 8/255, 2/255, 2
restarts keeping each example's highest-loss point, early-stopped (only correctly classified examples step), run on
the copy in training mode; target loss LS-CE 0.7; SGD 0.1, momentum 0.9, weight decay 5e-4, LR /10 at 99/110 and
104/110 of the run; batch 128; no normalisation.
Reported (RobustBench Jia2022LAS-AT, variant unrecorded): WRN-34-10 clean 84.98 / AA 56.26; WRN-70-16 85.66 / 57.61.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top


def las_settings(eps, steps, step_size, beta=()):
  """The policy's choices and LAS-PGD-AT's policy, reward and attack settings (`train_eps_clip` 0: none)."""
  return default.ml_collections.ConfigDict(dict(
      eps_choices=tuple(eps), steps_choices=tuple(steps), step_choices=tuple(step_size), beta_choices=tuple(beta),
      start_eps=8 / 255, policy_model='resnet18', policy_every=20, policy_lr=1e-4, policy_momentum=0.0,
      policy_weight_decay=0.0, policy_clip=1.0, policy_lr_follows_target=False,
      loss_reward_clip=10.0, robust_reward=4.0, clean_reward=2.0, accuracy_reward_clip=10.0,
      reward_eps=8 / 255, reward_step_size=2 / 255, reward_steps=10, reward_restarts=2, reward_early_stop=True,
      lookahead_label_confidence=0.7, lookahead_awp=False, reward_skips_normalisation=False,
      train_eps_clip=0.0, clean_forward_after_step=False))


def small_policy(c):
  """Variants small and digits: a TinyCNN policy; on digits, choices around its eps 0.2 (in /255 units)."""
  c.las.policy_model = 'tiny_cnn'
  if c.data.source == 'digits':
    c.las.update(eps_choices=(38, 51, 64), steps_choices=(2, 3, 5), step_choices=(8, 13), start_eps=0.2,
                 reward_eps=0.2, reward_step_size=0.05, reward_steps=5)


def variants():
  """small and digits, each with a TinyCNN policy."""
  with_policy = lambda variant: lambda c: (variant(c), small_policy(c))
  return dict(small=with_policy(default.small), digits=with_policy(default.digits))


def las_base(method, epochs):
  c = default.base_config()
  c.method = method
  c.num_epochs = epochs
  c.model.name = 'wrn-34-10'
  c.attack.update(eps=8 / 255, step_size=2 / 255, steps=10)   # unused by training; kept for reference
  c.optimizer.weight_decay = 5e-4
  c.eval.update(eps=8 / 255, step_size=2 / 255, steps=10)
  return c


def get_config(arg=None):
  c = las_base('las_at', 110)
  c.label_confidence = 0.7
  c.las = las_settings(eps=range(3, 16), steps=range(3, 15), step_size=range(1, 6))
  c.lr_schedule = ((1, 0.1), (100, 0.01), (105, 0.001))
  return default.apply_variants(c, arg, variants())
