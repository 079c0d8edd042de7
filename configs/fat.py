r"""FAT (Zhang et al., ICML 2020), Table 1: WRN-32-10 on CIFAR-10, PGD-10-tau with tau 0 -> 1 -> 2.

Run (expects the CIFAR-10 archive in $ADVJAX_DATA_DIR, see README):

  python -m advjax.main --config=configs/fat.py

Paper numbers ("dat" protocol: eps 0.031, FGSM / PGD-20 / CW-30 with step eps/4 and a random start):
  FAT, eps_train 8/255: natural 89.34 +- 0.22, FGSM 65.52, PGD-20 46.13 +- 0.05, C&W 46.82.
  FAT, eps_train 16/255 (--config.attack.eps=0.062): natural 87.00, PGD-20 49.86.
On the JPEG copy of CIFAR-10 in shared/data expect the same ballpark, not the decimals.
"""
import os

import ml_collections


def base_config():
  """Settings every method shares; method configs override what differs."""
  c = ml_collections.ConfigDict()
  c.method = 'fat'
  c.seed = 7
  c.num_epochs = 120
  c.batch_size = 128
  c.bn_stats = 'global'   # BatchNorm over the global batch; 'per_device' as under pmap with per-replica BN

  c.data = ml_collections.ConfigDict(dict(
      source='image_folder', name='cifar10-jpg.tar.gz', data_dir=os.environ.get('ADVJAX_DATA_DIR', ''),
      num_train=-1, num_test=-1, seed=0, crop_padding=4, flip=True))
  c.model = ml_collections.ConfigDict(dict(name='wrn-32-10', mean=(), std=(), dtype='float32'))

  # Training attack. FAT: PGD-10 from clip01(x + U(-eps, eps)), step 0.007, omega = 0.001 noise at every step.
  c.attack = ml_collections.ConfigDict(dict(
      eps=0.031, step_size=0.007, steps=10, loss='ce', kappa=50.0, init='uniform', clip_init=True, noise_std=0.001))
  # (first epoch, tau), 1-based epochs: tau 0 for epochs 1-50, 1 for 51-90, 2 from 91 (`--dynamictau`).
  c.tau_schedule = ((1, 0), (51, 1), (91, 2))

  c.optimizer = ml_collections.ConfigDict(dict(momentum=0.9, weight_decay=2e-4, nesterov=False))
  c.lr_schedule = ((1, 0.1), (60, 0.01), (90, 0.001), (110, 0.0005))

  # Per-epoch evaluation, FAT's "dat" protocol: PGD-20, step eps/4, uniform start.
  c.eval = ml_collections.ConfigDict(dict(
      batch_size=128, num_examples=-1, eps=0.031, step_size=0.031 / 4, steps=20, loss='ce', kappa=50.0,
      init='uniform', clip_init=True, restarts=1))

  c.checkpoint_keep = 3
  c.log_every_steps = 100
  return c


def get_config():
  return base_config()
