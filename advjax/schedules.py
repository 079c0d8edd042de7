"""Schedules by epoch, written in configs as ((first_epoch, value), ...) with 1-based epochs.

`((1, 0.1), (60, 0.01))` means 0.1 for epochs 1-59 and 0.01 from epoch 60 on, which is how the FAT, TRADES and MART
scripts read `if epoch >= 60` with `epoch` counted from 1. Learning rates may instead interpolate linearly between
the points, per step (`lr_interpolation='linear'`): `((1, 0), (8.5, 0.2), (16, 0))` over 15 epochs is the cyclic
schedule of Wong et al. (0 -> 0.2 at mid-training -> 0), epoch 16 being the end of epoch 15.
"""
import bisect

import jax.numpy as jnp
import numpy as np


def value_at(schedule, epoch, interpolation='constant'):
  """The value in force during `epoch` (1-based), on the host: tau, FOSC threshold, ... (at the epoch's start for a
  linearly interpolated schedule)."""
  starts = [start for start, _ in schedule]
  if interpolation == 'linear':
    return float(np.interp(epoch, starts, [value for _, value in schedule]))
  return schedule[max(bisect.bisect_right(starts, epoch) - 1, 0)][1]


def per_step(schedule, steps_per_epoch, interpolation='constant', at_batch_end=False):
  """The same schedule as an optax schedule of the update count (learning rates): piecewise constant, or linear
  between the points and constant after the last. Update t (from 0) takes the schedule's value at t steps, or, with
  `at_batch_end`, at t + 1 (scripts that set the LR of batch i of epoch e to lr_schedule(e + (i + 1) / n))."""
  offset = 1 if at_batch_end else 0
  first_steps = jnp.asarray([(start - 1) * steps_per_epoch for start, _ in schedule], jnp.float32)
  values = jnp.asarray([value for _, value in schedule], jnp.float32)
  if interpolation == 'linear':
    return lambda count: jnp.interp(count + offset, first_steps, values)
  return lambda count: values[jnp.maximum(jnp.searchsorted(first_steps, count + offset, side='right') - 1, 0)]
