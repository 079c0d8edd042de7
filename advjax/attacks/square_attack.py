"""Square attack under L-inf (Andriushchenko et al., ECCV 2020): a score-based black-box attack that needs only logits.

Follows `SquareAttack` of fra31/auto-attack (autoattack/square.py) as AutoAttack's standard cascade runs it: margin
loss on logits, p_init 0.8, 5000 queries, 1 restart, `resc_schedule=False`. Only examples classified correctly at x
are attacked. Each starts from vertical stripes x + eps * (+-1 per column and channel); at iteration i, one square of
side s(p(i)) is pushed to x_best +- 2 eps (one sign per channel), projected to the eps-ball and [0, 1], and kept when
the margin z_y - max_{j != y} z_j falls; an example stops once its margin is <= 0. As in `perturb`, the returned
point is x_best where it is misclassified and the clean x elsewhere. `steps` counts the queries of the run, as the
official `n_queries`: 1 for the start plus 1 per iteration the example was still attacked (0 for examples
misclassified at x), so at most n_queries + 1 per restart. Deliberate difference: the official draws one square
position and one sign vector per iteration for the whole batch; here each example draws its own from its own key
(the same per-example distribution), so an example's result does not depend on its batch or how it is split.
"""
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from advjax.attacks import parts
from advjax.attacks.losses import logit_margin
from advjax.attacks.iterative import AttackOutput

# The official `p_selection`: p = p_init / 2**k, where k counts the bounds below the iteration index.
_P_BOUNDS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_side(i, image_shape, p_init=0.8):
  """Side s of the square at iteration i (int or array) for NHWC images of `image_shape` = (H, W, C).

  s = max(round(sqrt(p * n_features / c)), 1) per schedule stage, computed in float64 Python with its
  round-half-to-even exactly as the official does, then looked up by stage, so a traced i gives the same sizes.
  """
  h, w, c = image_shape
  n_features = c * h * w
  sides = [max(int(round(math.sqrt(p_init / 2 ** k * n_features / c))), 1) for k in range(len(_P_BOUNDS) + 1)]
  stage = (jnp.asarray(i)[..., None] > jnp.asarray(_P_BOUNDS)).sum(-1)
  return jnp.asarray(sides, jnp.int32)[stage]


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
  return parts.clip_to_ball(x_best + delta, x, eps)


class _RunState(NamedTuple):
  i: jax.Array          # iterations run
  x_best: jax.Array
  margin: jax.Array     # margin at x_best (the official margin_min); <= 0 means done
  queries: jax.Array


def _single_run(logits_fn, x, y, keys, todo, *, eps, n_queries, p_init):
  """The official `attack_single_run` (Linf branch) on the examples in `todo`; the others stay at x, unqueried."""
  start_keys, loop_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
  stripes = jax.vmap(lambda k: jax.random.rademacher(k, (1,) + x.shape[2:], x.dtype))(start_keys)
  x_best = jnp.where(_rows(todo, x), jnp.clip(x + parts.per_example(eps, x) * stripes, 0.0, 1.0), x)
  margin = jnp.where(todo, logit_margin(logits_fn(x_best), y), 0.0)   # 0: never active
  queries = todo.astype(jnp.int32)

  def body(s):
    active = s.margin > 0
    side = square_side(s.i, x.shape[1:], p_init)
    x_new = _propose(s.x_best, x, parts.fold_in(loop_keys, s.i), side, eps)
    margin = logit_margin(logits_fn(x_new), y)
    # With the margin loss the official "improved or misclassified" is just "lower margin" for active examples.
    better = active & (margin < s.margin)
    return _RunState(s.i + 1, jnp.where(_rows(better, x), x_new, s.x_best), jnp.where(better, margin, s.margin),
                     s.queries + active)

  def cond(s):
    return (s.i < n_queries) & (s.margin > 0).any()

  final = jax.lax.while_loop(cond, body, _RunState(jnp.int32(0), x_best, margin, queries))
  return final.x_best, final.queries


def square(logits_fn, x, y, key, *, eps, n_queries=5000, p_init=0.8, restarts=1):
  """Square attack, L-inf, as AutoAttack's standard version (see the module doc).

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
                               p_init=p_init)
    broken = robust & (logits_fn(x_best).argmax(-1) != y)   # as `perturb`, keep only points that are misclassified
    x_adv = jnp.where(_rows(broken, x), x_best, x_adv)
    robust, queries = robust & ~broken, queries + used
  return AttackOutput(jax.lax.stop_gradient(x_adv), queries)
