r"""Quick start: FAT on scikit-learn's 8x8 digits (embedded, no download) with a tiny CNN, about a minute on a CPU.

  python -m advjax.main --config=configs/quickstart.py

Expected (2-core CPU, 1 device): natural accuracy 99.44%, PGD-20 accuracy 72.22% at eps 0.2, in about 20 s.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import fat  # pylint: disable=g-import-not-at-top


def get_config():
  c = fat.base_config()
  c.seed = 0
  c.num_epochs = 15
  c.batch_size = 64
  c.data.update(source='digits', name='', crop_padding=0, flip=False)
  c.model.name = 'tiny_cnn'
  c.attack.update(eps=0.2, step_size=0.05)
  c.tau_schedule = ((1, 0), (6, 1), (11, 2))
  c.lr_schedule = ((1, 0.1), (13, 0.01))
  c.eval.update(batch_size=120, eps=0.2, step_size=0.05)
  c.log_every_steps = 0
  return c
