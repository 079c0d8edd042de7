r"""FGSM-RS (Wong, Rice & Kolter, ICLR 2020, "Fast is better than free"): uniform start, one FGSM step of 1.25 eps.

  python -m advjax.main --config=configs/fgsm_rs.py          # PreActResNet-18, CIFAR-10, 15 epochs, cyclic LR
  python -m advjax.main --config=configs/fgsm_rs.py:small    # SmallCNN on a CIFAR-10 subset, minutes on a CPU

The official `train_fgsm.py` (locuslab/fast_adversarial 54f7287): delta ~ U(-eps, eps) with x + delta in [0, 1],
delta <- clip(delta + alpha sign g), alpha 10/255 at eps 8/255, the model in training mode for the attack as for the
update; SGD momentum 0.9, weight decay 5e-4, batch 128, cyclic LR 0 -> 0.2 -> 0 peaking at half the run, per step;
CIFAR mean/std (outside the model there, inside here: the same function). Until 3d40b90 (2020-02-12) its init used
channel 0's eps as every channel's upper bound; the code since draws each channel's own, as advjax does.
Reported (FGSM-PGI's table, best-PGD-10 checkpoint, ResNet-18): clean 73.81, AA 37.07 in 51 min; the last
checkpoint collapses to 0% robust accuracy (catastrophic overfitting).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


def get_config(arg=None):
  c = default.base_config()
  c.method = 'fgsm_rs'
  c.num_epochs = 15
  # fast_adversarial's PreActResNet-18: its 1x1 shortcuts read the block input, not the pre-activated one.
  c.model.update(name='preact_resnet18-locuslab', mean=CIFAR_MEAN, std=CIFAR_STD)
  c.attack.update(eps=8 / 255, step_size=10 / 255, steps=1, init='uniform', clip_init=True)
  c.attack.model_mode = 'train'   # as the official code; 'eval' for the attack gradient in eval mode
  c.optimizer.weight_decay = 5e-4
  c.lr_schedule = ((1, 0.0), (8.5, 0.2), (16, 0.0))
  c.lr_interpolation = 'linear'
  c.eval.update(eps=8 / 255, step_size=2 / 255)
  return default.apply_variants(c, arg)
