"""The small parts attacks are built from: per-example keys, starts, the signed step and the projection.

Hyperparameters (eps, step size) may be scalars or arrays with one value per example.
"""
import jax
import jax.numpy as jnp


def per_example(value, x):
  """Broadcasts a scalar or a (B,) array against a batch of shape (B, ...)."""
  value = jnp.asarray(value, x.dtype)
  return value.reshape(value.shape + (1,) * (x.ndim - value.ndim))


def example_keys(key, batch_size):
  """One PRNG key per example.

  Pass one key per example (e.g. folded with each example's dataset index) to make the noise independent of how
  the batch is split across devices; a single key is split.
  """
  typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
  is_single = key.ndim == (0 if typed else 1)
  return jax.random.split(key, batch_size) if is_single else key


def fold_in(keys, data):
  """Each per-example key folded with the same `data` (a step or restart number)."""
  return jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, data)


def uniform_noise(keys, x, low, high):
  """U(low, high) noise shaped like `x`, one key per example."""
  shape = x.shape[1:]
  return jax.vmap(lambda k: jax.random.uniform(k, shape, x.dtype))(keys) * (high - low) + low


def normal_noise(keys, x):
  """N(0, 1) noise shaped like `x`, one key per example."""
  return jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)


def clip_to_ball(x_adv, x, eps):
  """Projection onto the L-inf ball of radius eps around x, intersected with the pixel box [0, 1]."""
  eps = per_example(eps, x)
  return jnp.clip(jnp.clip(x_adv, x - eps, x + eps), 0.0, 1.0)


def random_start(keys, x, eps, kind, clip=True):
  """The attack's starting point.

  kind: 'uniform' x + U(-eps, eps) (Madry, FAT), 'gaussian' x + 0.001 N(0, I) (TRADES, FAT-TRADES, MART) or 'none'.
  clip: clip the start to [0, 1] (FAT's training attacks do; TRADES leaves it unclipped until the first step).
  """
  if kind == 'none':
    return x
  if kind == 'uniform':
    eps = per_example(eps, x)
    start = x + uniform_noise(keys, x, -eps, eps)
  elif kind == 'gaussian':
    start = x + 0.001 * normal_noise(keys, x)
  else:
    raise ValueError(f"unknown start {kind!r}; choose 'uniform', 'gaussian' or 'none'")
  return jnp.clip(start, 0.0, 1.0) if clip else start


def signed_step(x_adv, x, grad, *, eps, step_size, noise_keys=None, noise_std=0.0):
  """x' <- clip01(proj_eps(x' + step * sign(g) + noise_std * N(0, I))): one L-inf ascent step (FAT adds the noise)."""
  x_next = x_adv + per_example(step_size, x) * jnp.sign(grad)
  if noise_std:
    x_next = x_next + noise_std * normal_noise(noise_keys, x)
  return clip_to_ball(x_next, x, eps)
