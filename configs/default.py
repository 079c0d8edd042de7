"""Settings every method shares, and the variants every config offers (`--config=configs/<method>.py:<variants>`).

Variants, comma-separated:
  digits  the quick-start data: scikit-learn's 8x8 digits with a tiny CNN, 15 epochs, eps 0.2 (well under a minute)
  small   a CIFAR-10 subset (256 train / 100 test) with the FAT paper's SmallCNN, 3 epochs (about 5 min on 2 cores)
  l2      the L2 threat model for training and the per-epoch evaluation (madry, trades, mart, fat*), after digits
Schedules by epoch are rescaled to the variant's length.
"""
import os

import ml_collections


def base_config():
  c = ml_collections.ConfigDict()
  c.method = 'madry'
  c.seed = 7
  c.num_epochs = 120
  c.batch_size = 128
  c.bn_stats = 'global'   # BatchNorm over the global batch; 'per_device' as under pmap with per-replica BN
  c.ema_decay = 0.0       # > 0 (e.g. 0.999): also keep and evaluate an exponential moving average of the weights
  # Label-smoothed CE of the Jia et al. methods (FGSM-SDI 0.5, FGSM-PGI 0.6, LAS-AT 0.7): this much on the label,
  # the rest spread over the other classes; 1.0 is plain CE.
  c.label_confidence = 1.0
  # Adversarial weight perturbation (Wu et al., 2020) on top of any search-based method or LAS-AT; gamma 0: off.
  c.awp = ml_collections.ConfigDict(dict(gamma=0.0, warmup_epochs=0))

  c.data = ml_collections.ConfigDict(dict(
      source='image_folder', name='cifar10-jpg.tar.gz', data_dir=os.environ.get('ADVJAX_DATA_DIR', ''),
      num_train=-1, num_test=-1, seed=0, crop_padding=4, flip=True))
  # dtype 'bfloat16': mixed precision, bf16 compute with float32 parameters, optimiser state and logits.
  c.model = ml_collections.ConfigDict(dict(name='wrn-32-10', mean=(), std=(), dtype='float32'))

  # Training attack: PGD-10 from clip01(x + U(-eps, eps)), step 0.007 (FAT's Table 1 setting).
  # Early-stopped attacks (FAT, DAT) compact the examples still attacking into batches of halving static size down
  # to compact_min_size per device (0: one masked loop over the whole batch); results are the same either way. Each
  # size compiles the model once more; on XLA:CPU 4 was no faster than 16 (docs/benchmarks.md).
  # norm 'l2' (madry, trades, mart and the FAT family): normalised-gradient steps, projection onto the L2 ball.
  c.attack = ml_collections.ConfigDict(dict(
      eps=0.031, step_size=0.007, steps=10, loss='ce', kappa=50.0, init='uniform', clip_init=True, noise_std=0.0,
      compact_min_size=16, norm='linf'))

  c.optimizer = ml_collections.ConfigDict(dict(momentum=0.9, weight_decay=2e-4, nesterov=False))
  # (first epoch, value), epochs from 1: the official scripts' `if epoch >= 60` with 1-based epochs.
  c.lr_schedule = ((1, 0.1), (60, 0.01), (90, 0.001), (110, 0.0005))
  c.lr_interpolation = 'constant'   # or 'linear' between the points, per step (cyclic schedules)

  # Per-epoch evaluation, FAT's "dat" protocol: PGD-20, step eps/4, uniform start.
  c.eval = ml_collections.ConfigDict(dict(
      batch_size=128, num_examples=-1, eps=0.031, step_size=0.031 / 4, steps=20, loss='ce', kappa=50.0,
      init='uniform', clip_init=True, restarts=1, norm='linf'))

  c.checkpoint_keep = 3
  c.log_every_steps = 100
  return c


def rescale(schedule, from_epochs, to_epochs, exact=False):
  """Moves each schedule change to the same fraction of a run of `to_epochs` epochs (to a whole epoch unless
  `exact`, as points of a linearly interpolated schedule may lie between epochs)."""
  moved = {}
  for start, value in schedule:
    position = (start - 1) * to_epochs / from_epochs
    moved[1 + (position if exact else round(position))] = value   # a later change wins a collision
  return tuple(sorted(moved.items()))


def rescale_schedules(c, epochs, rescale_lr):
  for name in ('tau_schedule', 'steps_schedule') + (('lr_schedule',) if rescale_lr else ()):
    if name in c:
      linear = name == 'lr_schedule' and c.lr_interpolation == 'linear'
      c[name] = rescale(c[name], c.num_epochs, epochs, exact=linear)
  c.awp.warmup_epochs = round(c.awp.warmup_epochs * epochs / c.num_epochs)
  if 'fosc' in c:
    c.fosc.decay_epochs = max(1, round(c.fosc.decay_epochs * epochs / c.num_epochs))
  c.num_epochs = epochs


def digits(c):
  rescale_schedules(c, 15, rescale_lr=False)
  c.seed = 0
  c.batch_size = 64
  c.data.update(source='digits', name='', crop_padding=0, flip=False)
  c.model.update(name='tiny_cnn', mean=(), std=())
  c.attack.update(eps=0.2, step_size=0.05)
  c.lr_schedule = ((1, 0.1), (13, 0.01))
  c.lr_interpolation = 'constant'
  c.eval.update(batch_size=120, eps=0.2, step_size=0.05)
  c.log_every_steps = 0


def l2(c):
  """The L2 threat model; after `digits` when both are given. CIFAR-10: eps 128/255 (RobustBench's 0.5), step
  15/255, as Rice et al. 2020 (locuslab/robust_overfitting, `--norm l_2 --epsilon 128 --pgd-alpha 15`); digits
  (64 pixels): eps 1.0, step 0.25, chosen here (about the L2 norm of an L-inf 0.2 perturbation of 25 pixels)."""
  eps, step = (1.0, 0.25) if c.data.source == 'digits' else (128 / 255, 15 / 255)
  c.attack.update(norm='l2', eps=eps, step_size=step)
  c.eval.update(norm='l2', eps=eps, step_size=step)


def small(c):
  rescale_schedules(c, 3, rescale_lr=True)
  c.data.update(num_train=256, num_test=100)
  c.model.name = 'small_cnn'
  c.eval.batch_size = 100
  c.log_every_steps = 1


def apply_variants(c, arg, extra=None):
  """Applies the comma-separated variants in `arg` (the text after ':' in --config)."""
  variants = {'digits': digits, 'small': small, 'l2': l2, **(extra or {})}
  for name in filter(None, (arg or '').split(',')):
    if name not in variants:
      raise ValueError(f'unknown config variant {name!r}; choose from {", ".join(variants)}')
    variants[name](c)
  return c
