"""The small parts attacks are built from: per-example keys, starts, the ascent step and the projection (L-inf, L2;
AutoAttack also L1).

Hyperparameters (eps, step size) may be scalars or arrays with one value per example.
"""
import math

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


def one_draw(model, keys):
  """A randomised `model(x, key)` as x -> logits for one draw: example i draws from keys[i], on its own (vmapped),
  so that its draw does not depend on its batch."""
  return lambda x: jax.vmap(lambda xi, k: model(xi[None], k)[0])(x, keys)


def split(keys):
  """Two independent streams from per-example keys: (B,) keys -> two (B,) keys."""
  first, second = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
  return first, second


def uniform_noise(keys, x, low, high):
  """U(low, high) noise shaped like `x`, one key per example."""
  shape = x.shape[1:]
  return jax.vmap(lambda k: jax.random.uniform(k, shape, x.dtype))(keys) * (high - low) + low


def normal_noise(keys, x):
  """N(0, 1) noise shaped like `x`, one key per example."""
  return jax.vmap(lambda k: jax.random.normal(k, x.shape[1:], x.dtype))(keys)


NORMS = ('linf', 'l2')                 # PGD, FGSM and training
AUTOATTACK_NORMS = ('linf', 'l2', 'l1')


def l2_norm(v):
  """Per-example L2 norm of a batch, shaped (B,)."""
  return jnp.sqrt((v.reshape(v.shape[0], -1) ** 2).sum(-1))


def l1_norm(v):
  return jnp.abs(v.reshape(v.shape[0], -1)).sum(-1)


def norm_of(v, norm):
  """Per-example L-inf, L2 or L1 norm of a batch, shaped (B,)."""
  return {'linf': lambda v: jnp.abs(v.reshape(v.shape[0], -1)).max(-1), 'l2': l2_norm, 'l1': l1_norm}[norm](v)


def l0_norm(v):
  """Per-example count of nonzero entries (the official `L0_norm`)."""
  return (v.reshape(v.shape[0], -1) != 0).sum(-1)


def l1_projection(x, delta, eps):
  """The correction d with ||delta + d||_1 <= eps and x + delta + d in [0, 1], as the official `L1_projection`
  (fra31/auto-attack a392200, autopgd_base.py) finds it: sort the breakpoints of the piecewise-linear constraint and
  bisect for the threshold alpha, for every row at once (rows already inside keep only the box correction)."""
  flat_x, y = x.reshape(x.shape[0], -1), delta.reshape(x.shape[0], -1)
  dims = y.shape[1]
  u = jnp.minimum(0.0, jnp.minimum(1 - flat_x - y, flat_x + y))
  l = -jnp.abs(y)
  order = jnp.argsort(-jnp.concatenate([u, l], 1), axis=1, stable=True)
  bs = jnp.take_along_axis(-jnp.concatenate([u, l], 1), order, 1)
  bs2 = jnp.concatenate([bs[:, 1:], jnp.zeros_like(bs[:, :1])], 1)
  size1 = jnp.cumsum(jnp.where(order < dims, 1.0, -1.0).astype(y.dtype), 1)
  s1 = -u.sum(1)
  c = jnp.asarray(eps, y.dtype) - jnp.abs(y).sum(1)
  s = s1[:, None] + jnp.cumsum((bs2 - bs) * size1, 1)
  at = lambda a, i: jnp.take_along_axis(a, i[:, None], 1)[:, 0]

  def bisect(_, bounds):
    lb, ub = bounds
    mid = (lb + ub) // 2
    below = at(s, mid) + c < 0
    return jnp.where(below, mid, lb), jnp.where(below, ub, mid)

  low = jnp.zeros_like(c, jnp.int32)   # made from c: varying like it inside shard_map
  start = (low, low + 2 * dims - 1)
  lb, _ = jax.lax.fori_loop(0, math.ceil(math.log2(2 * dims)), bisect, start)
  alpha = (-at(s, lb) - c) / at(size1, lb + 1) + at(bs2, lb)
  d = jnp.where((s1 + c < 0)[:, None], -jnp.minimum(jnp.maximum(-u, alpha[:, None]), -l), u)
  return (jnp.sign(y) * d).reshape(x.shape)


def project(x_adv, x, eps, norm='linf'):
  """Projection onto the `norm` ball of radius eps around x (L2: x' - x rescaled to at most eps), then onto the
  pixel box [0, 1]."""
  if norm == 'l2':
    scale = jnp.minimum(1.0, jnp.asarray(eps, x.dtype) / jnp.maximum(l2_norm(x_adv - x), 1e-12))
    return jnp.clip(x + (x_adv - x) * per_example(scale, x), 0.0, 1.0)
  eps = per_example(eps, x)
  return jnp.clip(jnp.clip(x_adv, x - eps, x + eps), 0.0, 1.0)


def random_start(keys, x, eps, kind, clip=True, norm='linf'):
  """The attack's starting point.

  kind: 'uniform' a point drawn uniformly from the `norm` ball (L-inf: x + U(-eps, eps), Madry, FAT; L2: a normal
  direction at radius eps u^(1/d)), 'gaussian' x + 0.001 N(0, I) (TRADES, FAT-TRADES, MART) or 'none'.
  clip: clip the start to [0, 1] (FAT's training attacks do; TRADES leaves it unclipped until the first step).
  """
  if kind == 'none':
    return x
  if kind == 'uniform' and norm == 'l2':
    direction = normal_noise(keys, x)
    dims = direction[0].size
    radius = jnp.asarray(eps, x.dtype) * jax.vmap(lambda k: jax.random.uniform(k, (), x.dtype))(
        fold_in(keys, 1)) ** (1.0 / dims)
    start = x + direction / per_example(l2_norm(direction), x) * per_example(radius, x)
  elif kind == 'uniform':
    eps = per_example(eps, x)
    start = x + uniform_noise(keys, x, -eps, eps)
  elif kind == 'gaussian':
    start = x + 0.001 * normal_noise(keys, x)
  else:
    raise ValueError(f"unknown start {kind!r}; choose 'uniform', 'gaussian' or 'none'")
  return jnp.clip(start, 0.0, 1.0) if clip else start


def ascent_step(x_adv, x, grad, *, eps, step_size, norm='linf', noise_keys=None, noise_std=0.0):
  """x' <- clip01(proj_eps(x' + step * d + noise_std * N(0, I))): one ascent step along d = sign(g) (L-inf) or
  g / ||g||_2 (L2), projected (FAT adds the noise)."""
  if norm == 'l2':
    direction = grad / per_example(jnp.maximum(l2_norm(grad), 1e-12), x)
  else:
    direction = jnp.sign(grad)
  x_next = x_adv + per_example(step_size, x) * direction
  if noise_std:
    x_next = x_next + noise_std * normal_noise(noise_keys, x)
  return project(x_next, x, eps, norm)
