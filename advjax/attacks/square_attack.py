"""Square attack under L-inf, L2 and L1 (Andriushchenko et al., ECCV 2020): a score-based black-box attack that
needs only logits.

Follows `SquareAttack` of fra31/auto-attack (autoattack/square.py) as AutoAttack's standard cascade runs it: margin
loss on logits, p_init 0.8, 5000 queries, 1 restart, `resc_schedule=False`. Only examples classified correctly at x
are attacked. Each starts from vertical stripes x + eps * (+-1 per column and channel); at iteration i, one square of
side s(p(i)) is pushed to x_best +- 2 eps (one sign per channel), projected to the eps-ball and [0, 1], and kept when
the margin z_y - max_{j != y} z_j falls; an example stops once its margin is <= 0. Under L2 (the official L2 branch)
the start is a grid of eta-pattern squares of side h // 5 on the eps-sphere, and each iteration writes a new pattern
into one odd-sided window and empties a second, redistributing the norm (`_propose_windows`); under L1 (its L1
branch) the same with patterns of unit L1 norm, each point brought into the ball by the exact L1-and-box projection
(`parts.l1_projection`, radius eps (1 - 1e-6)). As in `perturb`, the returned point is x_best where it is
misclassified and the clean x elsewhere. `steps` counts the queries of the run, as the official `n_queries`: 1 for
the start plus 1 per iteration the example was still attacked (0 for examples misclassified at x), so at most
n_queries + 1 per restart. Deliberate difference: the official draws one square
position and one sign vector per iteration for the whole batch; here each example draws its own from its own key (the
same per-example distribution), so an example's result does not depend on its batch or how it is split.
"""
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from advjax.attacks import parts
from advjax.attacks.losses import logit_margin
from advjax.attacks.iterative import AttackOutput

# The official `p_selection`: p = p_init / 2**k, where k counts the bounds below the iteration index.
_P_BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def _stage(i):
  """The schedule stage k of iteration i (int or array): p = p_init / 2**k."""
  return (jnp.asarray(i)[..., None] > jnp.asarray(_P_BOUNDS)).sum(-1)


def _sides(image_shape, p_init, norm):
  """The square side of each stage, computed in float64 Python with its round-half-to-even as the official does:
  L-inf s = max(round(sqrt(p n_features / c)), 1); L2 and L1 at least 3 and odd; all at most min(h, w)."""
  h, w, c = image_shape
  sides = []
  for k in range(len(_P_BOUNDS) + 1):
    side = int(round(math.sqrt(p_init / 2 ** k * c * h * w / c)))
    side = max(side, 1) if norm == 'linf' else max(side, 3) + (max(side, 3) % 2 == 0)
    sides.append(min(side, h, w))
  return sides


def square_side(i, image_shape, p_init=0.8, norm='linf'):
  """Side s of the square at iteration i (int or array) for NHWC images of `image_shape` = (H, W, C), looked up by
  stage so that a traced i gives the same sizes."""
  return jnp.asarray(_sides(image_shape, p_init, norm), jnp.int32)[_stage(i)]


def _unit(delta, norm):
  """delta scaled to unit L2 or L1 norm over all its entries (an empty one stays empty)."""
  size = np.sqrt((delta ** 2).sum()) if norm == 'l2' else np.abs(delta).sum()
  return delta / max(size, 1e-300)


def _eta_rectangles(rows, cols, norm):
  """The official `eta_rectangles`: nested rectangles around the centre weighted 1 / (k + 1)^2 (L2) or
  1 / (k + 1)^4 (L1), of unit norm."""
  delta = np.zeros([rows, cols])
  row, col = rows // 2, cols // 2
  for k in range(max(rows // 2 + 1, cols // 2 + 1)):
    delta[max(row, 0):min(row + 2 * k + 1, rows), max(0, col):min(col + 2 * k + 1, cols)] += (
        1.0 / (k + 1) ** (2 if norm == 'l2' else 4))
    row, col = row - 1, col - 1
  return _unit(delta, norm)


def eta(side, norm='l2'):
  """The official `eta(s)` before its random transposition: rectangles in the top half, their negative below."""
  delta = np.zeros([side, side])
  delta[:side // 2] = _eta_rectangles(side // 2, side, norm)
  delta[side // 2:] = -_eta_rectangles(side - side // 2, side, norm)
  return _unit(delta, norm)


def _rows(mask, x):
  """A (B,) mask shaped to broadcast against the batch x."""
  return mask.reshape(mask.shape + (1,) * (x.ndim - 1))


def _random_int(key, high):
  """The official `random_int(0, high)`: floor(U[0, 1) * high), so 0 .. high - 1 (and 0 when high is 0)."""
  return jnp.floor(jax.random.uniform(key) * high).astype(jnp.int32)


def _propose(x_best, x, keys, side, eps):
  """x_best with one random side x side square per example moved by 2 eps * (+-1 per channel), projected.

  The square is a mask from iota comparisons, so a traced side keeps every shape static.
  """
  _, h, w, c = x.shape

  def draw(key):
    k_row, k_col, k_sign = jax.random.split(key, 3)
    return _random_int(k_row, h - side), _random_int(k_col, w - side), jax.random.rademacher(k_sign, (c,), x.dtype)

  row, col, sign = jax.vmap(draw)(keys)
  in_rows = (jnp.arange(h) >= row[:, None]) & (jnp.arange(h) < row[:, None] + side)   # (B, H)
  in_cols = (jnp.arange(w) >= col[:, None]) & (jnp.arange(w) < col[:, None] + side)   # (B, W)
  square = in_rows[:, :, None, None] & in_cols[:, None, :, None]
  delta = jnp.where(square, 2 * parts.per_example(eps, x) * sign[:, None, None, :], 0.0)
  return parts.project(x_best + delta, x, eps)


def _l2_normalize(v):
  return v / (jnp.sqrt((v ** 2).sum((1, 2, 3), keepdims=True)) + 1e-12)


def _size(v, norm, axes):
  """The L2 or L1 norm of v over `axes`, kept as size-1 axes."""
  return jnp.sqrt((v ** 2).sum(axes, keepdims=True)) if norm == 'l2' else jnp.abs(v).sum(axes, keepdims=True)


def _into_ball(x, delta, eps, norm):
  """The official last move of each L2 / L1 proposal: L2 x + eps delta / ||delta||, clipped; L1 the L1-and-box
  projection of x + delta onto radius eps (1 - 1e-6)."""
  eps_b = parts.per_example(eps, x)
  if norm == 'l2':
    return jnp.clip(x + _l2_normalize(delta) * eps_b, 0.0, 1.0)
  # Clipped, unlike the official: the projection's float32 rounding can leave [0, 1] by 1e-7.
  return jnp.clip(x + delta + parts.l1_projection(x, delta, jnp.asarray(eps, x.dtype) * (1 - 1e-6)), 0.0, 1.0)


def _pattern(key, side, norm):
  """eta(side), transposed with probability 1/2 (the official draw), as a (side, side) array."""
  table = jnp.asarray(eta(side, norm))
  return jnp.where(jax.random.uniform(key) > 0.5, table.T, table)


def _window_start(x, keys, eps, norm):
  """The official L2 / L1 start: a grid of (h // 5)-squares, each eta(s) with a random sign per channel, brought
  into the ball (`_into_ball`; the grid starts (h - 5 s) // 2 in and is cut at the image border). Images under 5
  pixels high, where the official code divides by zero, get side 1."""
  _, h, w, c = x.shape
  side = max(h // 5, 1)
  offset = (h - 5 * side) // 2
  delta = jnp.zeros_like(x)
  for bi in range(h // side):
    for bj in range(w // side):
      keys, block_keys = parts.split(keys)
      k_pattern, k_sign = parts.split(block_keys)
      pattern = jax.vmap(lambda k: _pattern(k, side, norm))(k_pattern).astype(x.dtype)
      sign = jax.vmap(lambda k: jax.random.rademacher(k, (c,), x.dtype))(k_sign)
      top, left = offset + bi * side, offset + bj * side
      rows, cols = min(side, h - top), min(side, w - left)
      if rows > 0 and cols > 0:
        block = pattern[:, :rows, :cols, None] * sign[:, None, None, :]
        delta = delta.at[:, top:top + rows, left:left + cols, :].add(block)
  return _into_ball(x, delta, eps, norm)


def _window(row, col, side, h, w):
  """(B, H, W, 1) masks of the side x side windows at (row, col)."""
  in_rows = (jnp.arange(h) >= row[:, None]) & (jnp.arange(h) < row[:, None] + side)
  in_cols = (jnp.arange(w) >= col[:, None]) & (jnp.arange(w) < col[:, None] + side)
  return in_rows[:, :, None, None] & in_cols[:, None, :, None]


def _propose_windows(x_best, x, keys, i, eps, p_init, norm):
  """The official L2 / L1 iteration per example: a new eta-pattern square in window 1 (plus the old perturbation
  there, renormalised), window 2 emptied, the mass taken from the window norms and what the eps-ball has left; then
  into the ball (`_into_ball`)."""
  _, h, w, c = x.shape
  sides = _sides(x.shape[1:], p_init, norm)
  largest = max(sides)
  tables = jnp.asarray(np.stack([np.pad(eta(s, norm), ((0, largest - s), (0, largest - s))) for s in sides]),
                       x.dtype)
  stage = _stage(i)
  side = jnp.asarray(sides, jnp.int32)[stage]

  def draw(key):
    k = jax.random.split(key, 6)
    return (_random_int(k[0], h - side), _random_int(k[1], w - side), _random_int(k[2], h - side),
            _random_int(k[3], w - side), jax.random.rademacher(k[4], (c,), x.dtype), jax.random.uniform(k[5]) > 0.5)

  row, col, row2, col2, sign, flip = jax.vmap(draw)(keys)
  first, second = _window(row, col, side, h, w), _window(row2, col2, side, h, w)
  delta = x_best - x
  window_norm = lambda v, mask: _size(jnp.where(mask, v, 0.0), norm, (1, 2))   # per channel
  image_norm = _size(delta, norm, (1, 2, 3))
  table = jnp.where(flip[:, None, None], tables[stage].T[None], tables[stage][None])   # (B, largest, largest)
  at = lambda n, start: jnp.clip(jnp.arange(n)[None, :] - start[:, None], 0, largest - 1)
  placed = jax.vmap(lambda t, r, q: t[r[:, None], q[None, :]])(table, at(h, row), at(w, col))
  new = placed[..., None] * sign[:, None, None, :] + delta / (1e-12 + window_norm(delta, first))
  eps_b, windows = parts.per_example(eps, x), window_norm(delta, first | second)
  if norm == 'l2':
    scale = jnp.sqrt(jnp.maximum(eps_b ** 2 - image_norm ** 2, 0.0) / c + windows ** 2)
  else:   # as the official L1 branch, the window norms are multiplied by c too
    scale = (jnp.maximum(eps_b - image_norm, 0.0) / c + windows) * c
  new = new / (1e-12 + window_norm(new, first)) * scale
  delta = jnp.where(first, new, jnp.where(second, 0.0, delta))
  return _into_ball(x, delta, eps, norm)


class _RunState(NamedTuple):
  i: jax.Array          # iterations run
  x_best: jax.Array
  margin: jax.Array     # margin at x_best (the official margin_min); <= 0 means done
  queries: jax.Array


def _single_run(logits_fn, x, y, keys, todo, *, eps, n_queries, p_init, norm):
  """The official `attack_single_run` (`norm` branch) on the examples in `todo`; the others stay at x, unqueried."""
  start_keys, loop_keys = parts.split(keys)
  if norm == 'linf':
    stripes = jax.vmap(lambda k: jax.random.rademacher(k, (1,) + x.shape[2:], x.dtype))(start_keys)
    start = jnp.clip(x + parts.per_example(eps, x) * stripes, 0.0, 1.0)
  else:
    start = _window_start(x, start_keys, eps, norm)
  x_best = jnp.where(_rows(todo, x), start, x)
  margin = jnp.where(todo, logit_margin(logits_fn(x_best), y), 0.0)   # 0: never active
  queries = todo.astype(jnp.int32)

  def body(s):
    active = s.margin > 0
    step_keys = parts.fold_in(loop_keys, s.i)
    if norm == 'linf':
      x_new = _propose(s.x_best, x, step_keys, square_side(s.i, x.shape[1:], p_init), eps)
    else:
      x_new = _propose_windows(s.x_best, x, step_keys, s.i, eps, p_init, norm)
    margin = logit_margin(logits_fn(x_new), y)
    # With the margin loss the official "improved or misclassified" is just "lower margin" for active examples.
    better = active & (margin < s.margin)
    return _RunState(s.i + 1, jnp.where(_rows(better, x), x_new, s.x_best), jnp.where(better, margin, s.margin),
                     s.queries + active)

  def cond(s):
    return (s.i < n_queries) & (s.margin > 0).any()

  final = jax.lax.while_loop(cond, body, _RunState(jnp.int32(0), x_best, margin, queries))
  return final.x_best, final.queries


def square(logits_fn, x, y, key, *, eps, n_queries=5000, p_init=0.8, restarts=1, norm='linf'):
  """Square attack under L-inf, L2 or L1 (`norm`), as AutoAttack's standard version (see the module doc).

  Args:
    x: NHWC batch in [0, 1]; y: (B,) labels.
    key: one key (split per example) or (B,) per-example keys, e.g. `parts.example_keys` of dataset indices.
    eps: scalar or per-example (B,) radius.
    n_queries: iterations per restart (the official n_queries); may be traced.
    p_init: initial fraction of pixels a square covers.
    restarts: runs on the examples still robust, each with fresh keys (the official n_restarts).
  Returns:
    AttackOutput(x_adv, steps): x_adv is adversarial where found and x elsewhere; steps are per-example queries.
  """
  keys = parts.example_keys(key, x.shape[0])
  robust = logits_fn(x).argmax(-1) == y
  x_adv, queries = x, jnp.zeros_like(y, jnp.int32)
  for r in range(restarts):
    x_best, used = _single_run(logits_fn, x, y, parts.fold_in(keys, r), robust, eps=eps, n_queries=n_queries,
                               p_init=p_init, norm=norm)
    broken = robust & (logits_fn(x_best).argmax(-1) != y)   # as `perturb`, keep only points that are misclassified
    x_adv = jnp.where(_rows(broken, x), x_best, x_adv)
    robust, queries = robust & ~broken, queries + used
  return AttackOutput(jax.lax.stop_gradient(x_adv), queries)
