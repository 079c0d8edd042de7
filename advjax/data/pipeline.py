"""On-device input pipeline: the dataset sits in device memory as uint8, and batches are gathered, converted to
[0, 1] and augmented by jitted code, so training never waits on the host.

Randomness is keyed by each example's dataset index, so a batch comes out the same however many devices share it.
"""
import functools

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P


def epoch_order(key, epoch, num_examples):
  """The shuffled example order of one epoch, a pure function of (key, epoch) so resuming replays it."""
  return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


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


def make_batch_fn(mesh, batch_size, *, crop_padding=0, flip=False, axis='data'):
  """Returns jitted `batch(images, labels, order, start, key) -> dict(image, label, index, mask)`, sharded over `axis`.

  The batch holds the examples order[start:start + batch_size]; positions past the dataset's end (the padding of a
  last partial evaluation batch) come back with mask False.
  """
  augment = crop_padding or flip

  @functools.partial(jax.jit, out_shardings=NamedSharding(mesh, P(axis)))
  def batch(images, labels, order, start, key):
    indices = jax.lax.dynamic_slice(order, (start,), (batch_size,))
    mask = indices < images.shape[0]
    indices = jnp.minimum(indices, images.shape[0] - 1)
    x = images[indices].astype(jnp.float32) / 255.0
    if augment:
      keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, indices)
      x = jax.vmap(random_crop_and_flip, in_axes=(0, 0, None, None))(x, keys, crop_padding, flip)
    return dict(image=x, label=labels[indices].astype(jnp.int32), index=indices, mask=mask)

  return batch
