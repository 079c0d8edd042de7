r"""Free-AT (Shafahi et al., NeurIPS 2019, "Adversarial training for free!"): each batch replayed m = 8 times.

  python -m advjax.main --config=configs/free_at.py          # Madry's WRN-32-10, CIFAR-10, 80,000 replayed steps
  python -m advjax.main --config=configs/free_at.py:small    # SmallCNN on a CIFAR-10 subset, minutes on a CPU

The official TF code (ashafahi/free_adv_train c42cac2: `free_train.py`, `config.py`, `free_model.py`): one
forward-backward per replay gives the weight gradient (applied at once) and the perturbation's;
delta <- clip(delta + eps sign g, -eps, eps), kept across batches in a batch-shaped buffer (zeros at first), inputs
clipped to [0, 1]; eps 8/255; momentum 0.9, batch 128; weight decay 2e-4 as an L2 term of the loss on the
convolution and fc kernels only (not BatchNorm, not the fc bias); 80,000 replayed steps, LR by TF's
`piecewise_constant` at boundaries 40,000 and 60,000: the first 40,001 updates at 0.1, the next 20,000 at 0.01, then
0.001. Each replay counts as an optimiser update for the LR schedule; runs here are whole epochs, 26 of 390 batches
(81,120 replays). The network is the official one, Madry's cifar10_challenge WRN-32-10 (`madry_wrn-32-10`:
per-image standardisation inside, leaky ReLU 0.1, BatchNorm epsilon 1e-3, pooled zero-padded shortcuts).
Reported (seed slides): m = 8, clean 80.38, AA 42.17.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top


def get_config(arg=None):
  c = default.base_config()
  c.method = 'free_at'
  c.model.name = 'madry_wrn-32-10'
  c.num_epochs = 26
  c.attack.update(eps=8 / 255, step_size=8 / 255, steps=1)
  c.free = default.ml_collections.ConfigDict(dict(replays=8, weight_decay=2e-4))
  c.optimizer.weight_decay = 0.0   # the official decay is free.weight_decay's L2 term in the loss
  replays_per_epoch = 390 * c.free.replays   # CIFAR-10's 50,000 in whole batches of 128
  epoch_of = lambda done: 1 + done / replays_per_epoch   # (fractional) epoch at which `done` updates are done
  c.lr_schedule = ((1, 0.1), (epoch_of(40_001), 0.01), (epoch_of(60_001), 0.001))
  c.eval.update(eps=8 / 255, step_size=2 / 255)
  return default.apply_variants(c, arg)
