"""Metrics: JSON lines and TensorBoard events in the workdir, and a progress line with throughput and ETA, on
process 0 only."""
import json
import os
import sys
import time

import jax
from etils import epath

METRICS_FILE = 'metrics.jsonl'


def log(message):
  if jax.process_index() == 0:
    print(message, flush=True)


def write_atomically(path, text):
  """Writes `text` to `path` through a temporary file renamed over it: a kill leaves the old file or the new one."""
  path = epath.Path(path)
  temporary = path.with_name(path.name + '.tmp')
  temporary.write_text(text)
  temporary.replace(path)


def read_records(workdir):
  """(records, cut): the per-epoch records of `workdir/metrics.jsonl`, and whether its last line was cut (a kill
  while it was appended; that line is left out). A file that is not there gives no records."""
  path = epath.Path(workdir) / METRICS_FILE
  lines = path.read_text().split('\n') if path.exists() else ['']
  records = [json.loads(line) for line in lines[:-1]]
  try:   # the text after the last newline: empty, or a line cut by a kill (complete only if it parses)
    records += [json.loads(lines[-1])] if lines[-1] else []
    cut = False
  except json.JSONDecodeError:
    cut = True
  return records, cut


class Writer:
  """Per-epoch records, written by process 0: `workdir/metrics.jsonl`, one JSON object per line appended and flushed
  per epoch, and TensorBoard event files in `workdir/tensorboard` (tensorboardX: no TensorFlow needed), rewritten from
  the kept records on each (re)start so that a redone epoch has one entry. On gs:// (objects cannot be appended to)
  the JSON file is rewritten whole, which is atomic there."""

  def __init__(self, workdir, last_epoch=None):
    """Keeps the records of epochs up to `last_epoch` (all if None; a run killed before its checkpoint redoes the
    later ones), drops a cut last line with a warning, and rewrites TensorBoard's events from the records kept."""
    self._workdir = epath.Path(workdir)
    self.path = self._workdir / METRICS_FILE
    self._tensorboard = None
    if jax.process_index() != 0:
      return
    records, cut = read_records(self._workdir)
    if cut:
      print(f'advjax: warning: the last line of {self.path} was cut (a kill while it was written); dropped, its '
            'epoch is redone', file=sys.stderr, flush=True)
    kept = [record for record in records if last_epoch is None or record['epoch'] <= last_epoch]
    text = ''.join(json.dumps(record) + '\n' for record in kept)
    if (self.path.read_text() if self.path.exists() else '') != text:
      write_atomically(self.path, text)
    import tensorboardX  # pylint: disable=g-import-not-at-top  # here: it imports PyTorch where that is installed
    events = self._workdir / 'tensorboard'
    if events.exists():
      events.rmtree()
    self._tensorboard = tensorboardX.SummaryWriter(os.fspath(events))
    for record in kept:
      self._add_scalars(record)
    self._tensorboard.flush()

  def write(self, record):
    if jax.process_index() != 0:
      return
    line = json.dumps(record) + '\n'
    if '://' in os.fspath(self.path):
      self.path.write_text((self.path.read_text() if self.path.exists() else '') + line)
    else:
      with open(self.path, 'a') as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())
    self._add_scalars(record)
    self._tensorboard.flush()

  def _add_scalars(self, record):
    for name, value in record.items():
      if name != 'epoch' and isinstance(value, (int, float)):
        self._tensorboard.add_scalar(name, value, record['epoch'])

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
