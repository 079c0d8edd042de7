"""Schedules by epoch, written in configs as ((first_epoch, value), ...) with 1-based epochs.

`((1, 0.1), (60, 0.01))` means 0.1 for epochs 1-59 and 0.01 from epoch 60 on, which is how the FAT, TRADES and MART
scripts read `if epoch >= 60` with `epoch` counted from 1.
"""
import bisect

import jax.numpy as jnp


def value_at(schedule, epoch):
  """The value in force during `epoch` (1-based), on the host: tau, FOSC threshold, ..."""
  starts = [start for start, _ in schedule]
  return schedule[max(bisect.bisect_right(starts, epoch) - 1, 0)][1]


def per_step(schedule, steps_per_epoch):
  """The same schedule as an optax schedule of the update count (learning rates)."""
  first_steps = jnp.asarray([(start - 1) * steps_per_epoch for start, _ in schedule])
  values = jnp.asarray([value for _, value in schedule], jnp.float32)
  return lambda count: values[jnp.maximum(jnp.searchsorted(first_steps, count, side='right') - 1, 0)]
