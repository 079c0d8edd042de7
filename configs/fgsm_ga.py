r"""FGSM-GA (Andriushchenko & Flammarion, NeurIPS 2020): FGSM plus the GradAlign regulariser.

  python -m advjax.main --config=configs/fgsm_ga.py          # PreActResNet-18, CIFAR-10, 30 epochs, cyclic LR
  python -m advjax.main --config=configs/fgsm_ga.py:small    # SmallCNN on a CIFAR-10 subset, minutes on a CPU

The official `train.py` (`sh/exps_diff_eps_cifar10.sh` at eps 8/255): FGSM from a zero start, step 1.25 eps clipped
to eps; lambda (1 - mean cos(grad at x, grad at x + eta)), eta ~ U(-eps, eps), lambda 0.2; model in training mode
throughout; SGD momentum 0.9, weight decay 5e-4, batch 128, cyclic LR 0 -> 0.3 at 2/5 of the run -> 0 per step, read
at each batch's end; no normalisation; the FGSM gradient through `clamp(x + delta, 0, 1)` with PyTorch 1.4's
gradient (the official Dockerfile's): zero at pixels 0 and 255 from the zero start. Reported (seed slides): clean
83.96, AA 43.45.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top
import fgsm_sdi  # pylint: disable=g-import-not-at-top


def get_config(arg=None):
  c = default.base_config()
  c.method = 'fgsm_ga'
  c.num_epochs = 30
  c.model.name = 'preact_resnet18'
  c.attack.update(eps=8 / 255, step_size=1.25 * 8 / 255, steps=1, init='none')
  c.attack.model_mode = 'train'   # as the official code; 'eval' for the attack gradient in eval mode
  c.grad_align = default.ml_collections.ConfigDict(dict(weight=0.2))
  c.optimizer.update(weight_decay=5e-4, lr_at_batch_end=True)   # lr_schedule(epoch - 1 + (i + 1) / n)
  c.lr_schedule = ((1, 0.0), (13, 0.3), (31, 0.0))
  c.lr_interpolation = 'linear'
  c.eval.update(eps=8 / 255, step_size=2 / 255)
  return default.apply_variants(c, arg, dict(eval_attack=fgsm_sdi.eval_attack))
