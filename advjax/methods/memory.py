"""Per-example memory on the devices, its rows sharded over the mesh: FGSM-PGI's perturbations carried across epochs.

A memory is an array of shape (rows, ...) with one row per training example, addressed by the example's index in
the dataset (the batch's `index`), so a shuffled epoch finds each example's row wherever the example lands. Device d
of D holds rows [d R/D, (d+1) R/D); inside a `shard_map`, `read` and `write` move a batch's rows between the devices
that hold them and the devices that hold the examples: O(batch) traffic, O(dataset / D) memory per device.
"""
import jax
import jax.numpy as jnp

from advjax.train_state import AXIS


def _owned(local_memory, global_indices):
  """Local row of each global index, and whether this device holds it."""
  rows_here = local_memory.shape[0]
  rows = global_indices - jax.lax.axis_index(AXIS) * rows_here
  return rows, (rows >= 0) & (rows < rows_here)


def read(local_memory, indices):
  """The rows of this device's examples (`indices`: their dataset indices), wherever they are stored."""
  all_indices = jax.lax.all_gather(indices, AXIS, tiled=True)
  rows, owned = _owned(local_memory, all_indices)
  values = local_memory[jnp.where(owned, rows, 0)]
  values = jnp.where(owned.reshape(owned.shape + (1,) * (values.ndim - 1)), values, 0)
  return jax.lax.psum_scatter(values, AXIS, scatter_dimension=0, tiled=True)


def write(local_memory, indices, values):
  """The memory with the rows of this device's examples (`indices`) set to `values`, on whichever device holds them."""
  all_indices = jax.lax.all_gather(indices, AXIS, tiled=True)
  all_values = jax.lax.all_gather(values, AXIS, tiled=True)
  rows, owned = _owned(local_memory, all_indices)
  return local_memory.at[jnp.where(owned, rows, local_memory.shape[0])].set(all_values, mode='drop')
