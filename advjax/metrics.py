"""Metrics: JSON lines in the workdir and a progress line with throughput and ETA, on process 0 only."""
import json
import os
import time

import jax


def log(message):
  if jax.process_index() == 0:
    print(message, flush=True)


class JsonlWriter:
  """Appends one JSON object per record to `workdir/metrics.jsonl`."""

  def __init__(self, workdir):
    self.path = os.path.join(workdir, 'metrics.jsonl')

  def drop_after(self, epoch):
    """Forgets records of epochs after `epoch`: a run killed before its checkpoint redoes those epochs."""
    if jax.process_index() != 0 or not os.path.exists(self.path):
      return
    with open(self.path) as f:
      kept = [line for line in f if json.loads(line)['epoch'] <= epoch]
    with open(self.path, 'w') as f:
      f.writelines(kept)

  def write(self, record):
    if jax.process_index() == 0:
      with open(self.path, 'a') as f:
        f.write(json.dumps(record) + '\n')


class Progress:
  """Throughput and ETA timed from the first report on, so compilation does not skew them."""

  def __init__(self, total_steps):
    self.total_steps = total_steps
    self._first = None

  def __call__(self, step, examples):
    now = time.perf_counter()
    if self._first is None:
      self._first = (now, step, examples)
      return 'timing starts'
    start, first_step, first_examples = self._first
    elapsed = max(now - start, 1e-9)
    steps_per_s = (step - first_step) / elapsed
    eta = (self.total_steps - step) / steps_per_s if steps_per_s else float('inf')
    return f'{(examples - first_examples) / elapsed:.1f} examples/s, ETA {duration(eta)}'


def duration(seconds):
  if seconds == float('inf'):
    return '?'
  minutes, seconds = divmod(int(seconds), 60)
  hours, minutes = divmod(minutes, 60)
  return f'{hours}h{minutes:02d}m' if hours else f'{minutes}m{seconds:02d}s'
