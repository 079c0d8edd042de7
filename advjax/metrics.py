"""Metrics: JSON lines and TensorBoard events in the workdir, and a progress line with throughput and ETA, on
process 0 only."""
import json
import os
import time

import jax
from etils import epath


def log(message):
  if jax.process_index() == 0:
    print(message, flush=True)


class Writer:
  """Per-epoch records, written by process 0: `workdir/metrics.jsonl`, one JSON object per line, and TensorBoard
  event files in `workdir/tensorboard` (tensorboardX: no TensorFlow needed). The workdir may be a gs:// path
  (objects there cannot be appended to, so the JSON file is rewritten whole: a few kB per epoch)."""

  def __init__(self, workdir):
    self.path = epath.Path(workdir) / 'metrics.jsonl'
    self._tensorboard = None
    if jax.process_index() == 0:
      import tensorboardX  # pylint: disable=g-import-not-at-top  # here: it imports PyTorch where that is installed
      self._tensorboard = tensorboardX.SummaryWriter(os.fspath(epath.Path(workdir) / 'tensorboard'))

  def _lines(self):
    return self.path.read_text().splitlines(keepends=True) if self.path.exists() else []

  def drop_after(self, epoch):
    """Forgets records of epochs after `epoch`: a run killed before its checkpoint redoes those epochs."""
    if jax.process_index() == 0 and self.path.exists():
      self.path.write_text(''.join(line for line in self._lines() if json.loads(line)['epoch'] <= epoch))

  def write(self, record):
    if jax.process_index() == 0:
      self.path.write_text(''.join(self._lines()) + json.dumps(record) + '\n')
      for name, value in record.items():
        if name != 'epoch' and isinstance(value, (int, float)):
          self._tensorboard.add_scalar(name, value, record['epoch'])
      self._tensorboard.flush()

  def close(self):
    if self._tensorboard:
      self._tensorboard.close()


class Progress:
  """Throughput and ETA, timed from `start()` (call it once the first step has compiled and run)."""

  def __init__(self, total_steps):
    self.total_steps = total_steps
    self._first = None

  @property
  def started(self):
    return self._first is not None

  def start(self, step, examples):
    self._first = (time.perf_counter(), step, examples)

  def _elapsed(self):
    return max(time.perf_counter() - self._first[0], 1e-9)

  def examples_per_second(self, examples):
    """Over everything since `start`, evaluation included."""
    return (examples - self._first[2]) / self._elapsed()

  def eta(self, step):
    steps_per_s = (step - self._first[1]) / self._elapsed()
    return duration((self.total_steps - step) / steps_per_s if steps_per_s else float('inf'))


def duration(seconds):
  if seconds == float('inf'):
    return '?'
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{seconds:02d}s'
