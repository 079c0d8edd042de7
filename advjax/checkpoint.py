"""Checkpoints with orbax: one per epoch, the last few kept, and automatic resume from the workdir."""
import os

import jax
import orbax.checkpoint as ocp
from etils import epath


class Checkpointer:
  """Saves the train state under `workdir/checkpoints/<epoch>`; the step count, the seed and the epoch fix the RNG
  and the data order, so restoring the state resumes a run exactly."""

  def __init__(self, workdir, keep=3):
    self._manager = ocp.CheckpointManager(
        _absolute(workdir) / 'checkpoints',
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

  def latest_epoch(self):
    return self._manager.latest_step() or 0

  def restore(self, state):
    """The latest checkpoint restored onto `state`'s shapes and shardings; `state` itself if there is none."""
    epoch = self._manager.latest_step()
    if epoch is None:
      return state
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    return self._manager.restore(epoch, args=ocp.args.StandardRestore(target))

  def restore_latest(self):
    """The latest checkpoint as a tree of host arrays, for evaluation (no target state needed)."""
    return self._manager.restore(self._manager.latest_step(), args=ocp.args.StandardRestore())

  def save(self, epoch, state):
    self._manager.save(epoch, args=ocp.args.StandardSave(state))   # asynchronous

  def close(self):
    self._manager.wait_until_finished()
    self._manager.close()


def _absolute(workdir):
  """orbax wants an absolute path; a URL (gs://...) is one already."""
  return epath.Path(workdir if '://' in str(workdir) else os.path.abspath(workdir))
