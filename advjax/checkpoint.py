"""Checkpoints with orbax: at the end of every epoch and on preemption, the last few kept, resumed from the workdir.

A checkpoint is named by the number of training batches done and holds the train state and the running metric sums
of the epoch in progress; with the seed, that fixes the RNG and the data order, so a resumed run continues exactly.
orbax writes each checkpoint to a temporary directory and renames it when complete, so a run killed mid-write leaves
no checkpoint under that name (the temporary directory is removed when the run restarts); one that is there but cannot
be read is moved to `workdir/damaged_checkpoints/` with a warning and the previous one is used. One that can be read
but does not fit the run's state (another model, method or optimiser) is never touched: `StateMismatch` names the
first difference. Per-example memories, whose rows are padded to a multiple of the device count, are cut or padded
to this run's rows, so a run resumes on another device count.
"""
import contextlib
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import NamedSharding, PartitionSpec as P


class StateMismatch(ValueError):
  """A readable checkpoint whose train state has other leaves or shapes than this run's."""


class StorageError(OSError):
  """A checkpoint could not be written (disk full, no permission); the previous ones are complete."""


# How storage failures read in orbax's and tensorstore's errors (tensorstore raises ValueError with a status code),
# the operating system's words first.
_CAUSES = ('No space left on device', 'Disk quota exceeded', 'Permission denied', 'Read-only file system')
STORAGE_FAILURE = re.compile('|'.join(_CAUSES + ('RESOURCE_EXHAUSTED', 'PERMISSION_DENIED', 'Failed writing')))


def _flat(tree):
  """{'params/conv/kernel': leaf} of a state or of a saved state's metadata, in orbax's own naming."""
  if not isinstance(tree, dict):
    tree = ocp.tree.serialize_tree(tree, keep_empty_nodes=True)
  return {name: leaf for name, leaf in ocp.tree.to_flat_dict(tree, sep='/').items() if hasattr(leaf, 'shape')}


def _rows_differ_only(name, saved, wanted):
  """A per-example memory saved on another device count: the same row shape, another (padded) row count."""
  return name.startswith('memory/') and saved.shape[1:] == wanted.shape[1:] and saved.dtype == wanted.dtype


def _difference(saved, target):
  """The first difference between a checkpoint's state and `target` that refitting memory rows cannot mend, or ''."""
  saved, wanted = _flat(saved), _flat(target)
  for name in sorted(saved.keys() ^ wanted.keys()):
    where = 'in the checkpoint, not in this run' if name in saved else 'in this run, not in the checkpoint'
    return f'{name} is {where}'
  for name in sorted(wanted):
    a, b = saved[name], wanted[name]
    if (tuple(a.shape), a.dtype) != (tuple(b.shape), b.dtype) and not _rows_differ_only(name, a, b):
      return f'{name} is {a.dtype}{list(a.shape)} there, {b.dtype}{list(b.shape)} here'
  return ''


def _refit_rows(restored, state):
  """Memory leaves restored at another row count, cut or zero-padded to `state`'s rows (the rows past the examples
  are padding, never addressed) and sharded as `state`'s."""
  def refit(leaf, like):
    if leaf.shape == like.shape:
      return leaf
    rows = min(leaf.shape[0], like.shape[0])
    fit = lambda v: jnp.zeros(like.shape, like.dtype).at[:rows].set(v[:rows])
    return jax.jit(fit, out_shardings=like.sharding)(leaf)
  return restored.replace(memory=jax.tree.map(refit, restored.memory, state.memory))


class Checkpointer:

  def __init__(self, workdir, keep=3):
    self._workdir = _absolute(workdir)
    self._manager = ocp.CheckpointManager(
        self._workdir / 'checkpoints', item_names=('state', 'progress'),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True, cleanup_tmp_directories=True))

  def latest(self):
    """Batches done at the latest checkpoint, 0 if there is none."""
    return self._manager.latest_step() or 0

  def path(self, batches_done):
    return self._workdir / 'checkpoints' / str(batches_done)

  def restore(self, state, epoch_sums):
    """(state, epoch_sums, batches_done) of the latest readable checkpoint, restored onto `state`'s shapes and
    shardings; the arguments and 0 if there is none. Raises StateMismatch, touching nothing, if it does not fit."""
    for batches_done in sorted(self._manager.all_steps(), reverse=True):
      try:
        saved = self._metadata(batches_done)
      except Exception as e:  # pylint: disable=broad-except   # truncated, missing or garbled files: all the same here
        self._set_aside(batches_done, e)
        continue
      if difference := _difference(saved, state):
        raise StateMismatch(f'checkpoint {self.path(batches_done)} does not fit this run ({difference}): resume with '
                            'the settings it was written with, or use another --workdir')
      try:
        restored = self._manager.restore(batches_done, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(_target(state, saved)), progress=ocp.args.JsonRestore()))
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(batches_done, e)
        continue
      sums = {name: jnp.asarray(restored.progress['epoch_sums'][name], jnp.float32) for name in epoch_sums}
      return _refit_rows(restored.state, state), sums, batches_done
    return state, epoch_sums, 0

  def _metadata(self, batches_done):
    reader = ocp.PyTreeCheckpointHandler()
    try:
      return reader.metadata(self.path(batches_done) / 'state').tree
    finally:
      reader.close()

  def save(self, batches_done, state, epoch_sums):
    """Asynchronous (a failed write surfaces at the next save or at `close`, as StorageError); `epoch_sums` are the
    metric sums of the epoch in progress (zeros at an epoch's end)."""
    sums = {name: float(value) for name, value in jax.device_get(epoch_sums).items()}
    with self._storage_errors():
      self._manager.save(batches_done, args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), progress=ocp.args.JsonSave(dict(epoch_sums=sums))))

  def close(self):
    with self._storage_errors():
      self._manager.wait_until_finished()
    self._manager.close()

  @contextlib.contextmanager
  def _storage_errors(self):
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      text = ' '.join(str(e).split())
      if not (isinstance(e, OSError) or STORAGE_FAILURE.search(text)):
        raise
      reason = next((cause for cause in _CAUSES if cause in text), text[:160])
      last = finished_steps(self._workdir)
      kept = f'the last complete one is {self.path(last[-1])}' if last else 'there is no complete one'
      raise StorageError(f'cannot write a checkpoint in {self._workdir / "checkpoints"} ({reason}); {kept}: free '
                         'space or fix permissions and rerun to resume') from None

  def _set_aside(self, batches_done, error):
    """Moves a checkpoint that cannot be read out of the way (kept for inspection, never loaded)."""
    reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
    aside = self._workdir / 'damaged_checkpoints' / str(batches_done)
    print(f'advjax: warning: checkpoint {self.path(batches_done)} cannot be read ({reason}); moved to {aside}, '
          'resuming from an earlier one', file=sys.stderr, flush=True)
    if jax.process_index() == 0:
      aside.parent.mkdir(parents=True, exist_ok=True)
      if aside.exists():
        aside.rmtree()
      self.path(batches_done).rename(aside)
    self._manager.reload()


def _target(state, saved):
  """What to restore `state` onto: its own shapes and shardings, except memory leaves saved with another row count,
  read whole (replicated) at their saved shape for `_refit_rows`."""
  saved = _flat(saved)

  def leaf(path, value):
    like = ocp.utils.to_shape_dtype_struct(value)
    stored = saved['memory/' + '/'.join(str(k.key) for k in path)]
    if tuple(stored.shape) == value.shape:
      return like
    return jax.ShapeDtypeStruct(tuple(stored.shape), value.dtype, sharding=NamedSharding(value.sharding.mesh, P()))

  target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
  return target.replace(memory=jax.tree_util.tree_map_with_path(leaf, state.memory))


def _absolute(workdir):
  """orbax wants an absolute path; a URL (gs://...) is one already."""
  return epath.Path(workdir if '://' in str(workdir) else os.path.abspath(workdir))


def finished_steps(workdir):
  """The names (batches done) of a workdir's complete checkpoints, in order. Listed here, not by a CheckpointManager:
  one would tidy the folder of a run still writing to it."""
  folder = _absolute(workdir) / 'checkpoints'
  paths = folder.iterdir() if folder.exists() else []
  return sorted(int(path.name) for path in paths if path.name.isdigit() and ocp.utils.is_checkpoint_finalized(path))


def latest_state(workdir):
  """The train state of a workdir's latest checkpoint as a tree of numpy arrays, whatever devices or processes wrote
  it (for evaluation and inspection: no target state needed). Read-only: safe while the run is still training."""
  steps = finished_steps(workdir)
  if not steps:
    raise FileNotFoundError(f'no checkpoint in {_absolute(workdir) / "checkpoints"}')
  path = _absolute(workdir) / 'checkpoints' / str(steps[-1]) / 'state'
  reader = ocp.PyTreeCheckpointHandler()   # the item's own handler: a Checkpointer would look for step metadata here
  try:
    as_numpy = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), reader.metadata(path).tree)
    return reader.restore(path, args=ocp.args.PyTreeRestore(restore_args=as_numpy))
  finally:
    reader.close()
