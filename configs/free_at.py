r"""Free-AT (Shafahi et al., NeurIPS 2019, "Adversarial training for free!"): each batch replayed m = 8 times.

  python -m advjax.main --config=configs/free_at.py          # WRN-32-10, CIFAR-10, 80,000 replayed steps
  python -m advjax.main --config=configs/free_at.py:small    # SmallCNN on a CIFAR-10 subset, minutes on a CPU

The official TF code (`free_train.py`, `config.py`): one forward-backward per replay gives the weight gradient
(applied at once) and the perturbation's; delta <- clip(delta + eps sign g, -eps, eps), kept across batches in a
batch-shaped buffer (zeros at first), inputs clipped to [0, 1]; eps 8/255; momentum 0.9, weight decay 2e-4, batch
128; 80,000 replayed steps (26 epochs of 390 batches here) with LR 0.1, /10 at 40,000 and 60,000 (epochs 14, 20).
Each replay counts as an optimiser update for the LR schedule. Reported numbers are not in our reference.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top


def get_config(arg=None):
  c = default.base_config()
  c.method = 'free_at'
  c.num_epochs = 26
  c.attack.update(eps=8 / 255, step_size=8 / 255, steps=1)
  c.free = default.ml_collections.ConfigDict(dict(replays=8))
  c.lr_schedule = ((1, 0.1), (14, 0.01), (20, 0.001))
  c.eval.update(eps=8 / 255, step_size=2 / 255)
  return default.apply_variants(c, arg)
