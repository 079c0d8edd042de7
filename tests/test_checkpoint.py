"""Resuming after a change: a checkpoint that does not fit the run is refused and kept; per-example memory moves
between device counts."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from advjax import checkpoint
from advjax import train_state as ts


def _state(devices, examples, width=3):
  """A train state with one per-example memory of `examples` rows, padded for the devices as a run pads it."""
  mesh = ts.make_mesh(jax.devices()[:devices])
  rows = ts.memory_rows(examples, mesh)
  memory = np.zeros((rows, 2), np.float32)
  memory[:examples] = np.arange(2 * examples).reshape(examples, 2) + 1
  replicated = NamedSharding(mesh, P())
  return ts.TrainState(step=jax.device_put(jnp.int32(7), replicated),
                       params=dict(w=jax.device_put(jnp.arange(width, dtype=jnp.float32), replicated)),
                       batch_stats={}, opt_state=(),
                       memory=dict(delta=jax.device_put(memory, NamedSharding(mesh, P(ts.AXIS)))))


def _saved(tmp_path, state):
  ckpt = checkpoint.Checkpointer(tmp_path)
  ckpt.save(10, state, dict(loss=jnp.float32(0.5)))
  ckpt.close()
  return checkpoint.Checkpointer(tmp_path)


def test_memory_saved_on_two_devices_resumes_on_one_and_back(tmp_path):
  assert jax.device_count() >= 2
  two, one = _state(devices=2, examples=5), _state(devices=1, examples=5)   # 6 rows and 5
  for saved, resumed in ((two, one), (one, two)):
    ckpt = _saved(tmp_path / str(len(saved.memory['delta'])), saved)
    restored, sums, done = ckpt.restore(jax.tree.map(jnp.zeros_like, resumed), dict(loss=jnp.float32(0)))
    ckpt.close()
    assert done == 10 and float(sums['loss']) == 0.5 and int(restored.step) == 7
    np.testing.assert_array_equal(restored.memory['delta'], resumed.memory['delta'])   # a padding row is zero
    assert restored.memory['delta'].sharding == resumed.memory['delta'].sharding


def test_a_checkpoint_of_another_shape_is_refused_and_kept(tmp_path):
  ckpt = _saved(tmp_path, _state(devices=2, examples=6))
  for other, difference in ((_state(devices=2, examples=6, width=4), 'params/w is float32[3] there, float32[4] here'),
                            (_state(devices=2, examples=6).replace(opt_state=dict(m=jnp.zeros(3))),
                             'opt_state/m is in this run, not in the checkpoint')):
    with pytest.raises(checkpoint.StateMismatch, match=difference.replace('[', r'\[').replace(']', r'\]')):
      ckpt.restore(other, dict(loss=jnp.float32(0)))
  ckpt.close()
  assert checkpoint.finished_steps(tmp_path) == [10]
  assert not (tmp_path / 'damaged_checkpoints').exists()
