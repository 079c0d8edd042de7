"""Input pipeline: each process keeps its shard of a split in host memory, gathers its part of every global batch,
and jitted code converts it to [0, 1] and augments it on the devices.

Process p of P holds the examples p, p + P, p + 2P, ... Training batches follow one global shuffle per epoch,
restricted to each shard; each process contributes batch_size / P examples to every global batch. Randomness is keyed
by each example's dataset index, so an example is augmented the same however many devices or processes share it.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P


def epoch_order(key, epoch, num_examples):
  """The shuffled example order of one epoch, a pure function of (key, epoch) so resuming replays it."""
  return np.asarray(jax.random.permutation(jax.random.fold_in(key, epoch), num_examples))


def random_crop_and_flip(image, key, crop_padding, flip):
  """Random crop with zero padding (torchvision RandomCrop(size, padding)) and a horizontal flip."""
  crop_key, flip_key = jax.random.split(key)
  if crop_padding:
    h, w, c = image.shape
    padded = jnp.pad(image, ((crop_padding, crop_padding), (crop_padding, crop_padding), (0, 0)))
    dy, dx = jax.random.randint(crop_key, (2,), 0, 2 * crop_padding + 1)
    image = jax.lax.dynamic_slice(padded, (dy, dx, 0), (h, w, c))
  if flip:
    image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
  return image


class Loader:
  """This process's shard of one split and the global batches made from it, sharded over the mesh's `axis`.

  `batch(positions, key)` takes this process's `batch_size / process_count` shard positions (-1 for padding) and
  returns the global batch dict(image float32 in [0, 1], label, index, mask), mask False on padding.
  """

  def __init__(self, mesh, images, labels, batch_size, *, crop_padding=0, flip=False, axis='data',
               process_index=None, process_count=None):
    self.process_index = jax.process_index() if process_index is None else process_index
    self.process_count = jax.process_count() if process_count is None else process_count
    if batch_size % self.process_count:
      raise ValueError(f'batch size {batch_size} is not divisible by the {self.process_count} processes')
    self.num_examples = len(labels)
    self.indices = np.arange(self.process_index, len(labels), self.process_count)   # dataset indices of this shard
    self.images, self.labels = images[self.indices], np.asarray(labels, np.int32)[self.indices]
    self.local_batch_size = batch_size // self.process_count
    self._sharding = NamedSharding(mesh, P(axis))
    self._prepare = jax.jit(functools.partial(_prepare, crop_padding=crop_padding, flip=flip),
                            out_shardings=self._sharding)

  @property
  def batches_per_epoch(self):
    """Whole training batches per epoch, as many on every process."""
    return self.num_examples // self.process_count // self.local_batch_size

  def train_positions(self, key, epoch):
    """The epoch's shuffled shard positions, whole local batches only."""
    order = epoch_order(key, epoch, self.num_examples)
    mine = order[order % self.process_count == self.process_index] // self.process_count
    return mine[:self.batches_per_epoch * self.local_batch_size]

  def eval_positions(self):
    """Every example of the shard once, in order, padded with -1 to as many whole batches as any process needs."""
    largest_shard = -(-self.num_examples // self.process_count)
    padded = -(-largest_shard // self.local_batch_size) * self.local_batch_size
    return np.concatenate([np.arange(len(self.indices)), np.full(padded - len(self.indices), -1)])

  def batches(self, positions, key):
    """The global batches over `positions` (from `train_positions` or `eval_positions`), one at a time."""
    for start in range(0, len(positions), self.local_batch_size):
      yield self.batch(positions[start:start + self.local_batch_size], key)

  def batch(self, positions, key):
    mask = positions >= 0
    rows = np.where(mask, positions, 0)
    local = dict(image=self.images[rows], label=self.labels[rows], index=self.indices[rows].astype(np.int32),
                 mask=mask)
    return self._prepare(jax.tree.map(self._to_global, local), key)

  def _to_global(self, local):
    return jax.make_array_from_process_local_data(self._sharding, local)


def _prepare(batch, key, *, crop_padding, flip):
  x = batch['image'].astype(jnp.float32) / 255.0
  if crop_padding or flip:
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, batch['index'])
    x = jax.vmap(random_crop_and_flip, in_axes=(0, 0, None, None))(x, keys, crop_padding, flip)
  return dict(batch, image=x, label=batch['label'].astype(jnp.int32))
