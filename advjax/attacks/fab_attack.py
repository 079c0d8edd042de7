"""FAB-T: the targeted Fast Adaptive Boundary attack (Croce & Hein, ICML 2020), as AutoAttack runs it.

FAB looks for the smallest adversarial perturbation: at each step it linearises the boundary between the true class
y and a target class t (z_t - z_y and its gradient), projects both the current point and the clean point onto that
hyperplane inside the pixel box (the exact L-inf, L2 or L1 projection), extrapolates both projections by eta and
mixes them, biased toward the clean point by alpha = min(|d_cur| / (|d_cur| + |d_clean|), alpha_max); once a point
is misclassified it keeps it if it is the smallest so far and steps back toward the clean point by beta. This
follows fra31/auto-attack (`fab_base.FABAttack.attack_single_run` and `perturb` with targeted=True,
`fab_pt.FABAttack_PT.get_diff_logits_grads_batch_targeted`, `fab_projections.projection_linf`, `projection_l2`,
`projection_l1`) with AutoAttack's "standard" settings: one restart, which starts at the clean point (so the attack
is deterministic and `key` is unused), 100 iterations, and the targets the 2nd, 3rd, ... highest classes at the
clean point, each run attacking only the correctly classified examples not yet broken; an example is broken when its
best point is misclassified within eps, and every other example is returned as its clean input. The one deliberate
difference is shape: the batch keeps its size, so every target run computes on all examples and merges results only
for those still being attacked (the official code gathers them into a smaller batch); a run is skipped when none is
left.
"""
import math

import jax
import jax.numpy as jnp

from advjax.attacks import parts
from advjax.attacks.iterative import AttackOutput

_NOT_FOUND = 1e10   # the official norm of "no adversarial point yet"


def _take(values, index):
  """values[i, index[i]] for every row i."""
  return jnp.take_along_axis(values, index[:, None], axis=1)[:, 0]


def projection_linf(points, w, b):
  """Smallest L-inf step d with w.(points + d) = b and points + d in [0, 1], per row: `projection_linf`.

  points, w: (N, D); b: (N,). Where the box misses the hyperplane, d is the move to the box corner nearest to it.
  With lambda the step's L-inf norm, the best move is d_i = -sign(w_i) min(lambda, reach_i) (reach_i: how far
  coordinate i can go toward the side that lowers w.z), so w.d is piecewise linear in lambda with kinks at the
  reaches; a bisection over the reaches sorted in descending order finds the piece that meets the hyperplane.
  """
  num_features = points.shape[1]
  side = jnp.where((w * points).sum(1) - b >= 0, 1.0, -1.0).astype(w.dtype)
  w, b = w * side[:, None], b * side                      # orient w so that the point is on the positive side
  to_one = (w < 0).astype(points.dtype)                   # coordinates that lower w.z by rising (others fall to 0)
  nonzero = (w != 0).astype(points.dtype)
  corner = (to_one - points) * nonzero                    # the whole way to the corner that lowers w.z most
  reach = to_one - points * (2 * to_one - 1)
  descending = jnp.argsort(reach, axis=1)[:, ::-1]
  needed = b - (w * points).sum(1)                        # the change of w.z the step must make (<= 0)
  at_corner = (w * corner).sum(1)
  w_desc = jnp.take_along_axis(w, descending, 1)
  # While the k+1 farthest-reaching coordinates are capped at lambda and the rest go all the way,
  # w.d(lambda) = offset[k] - slope[k] * lambda.
  slope = jnp.cumsum(jnp.abs(w_desc), 1)
  offset = jnp.cumsum(-w_desc * jnp.take_along_axis(corner, descending, 1), 1) + at_corner[:, None]
  reach_desc = jnp.take_along_axis(reach, descending, 1)
  all_capped = needed - (offset[:, -1] - slope[:, -1] * reach_desc[:, -1]) > 0
  partly_capped = (needed - at_corner > 0) & ~all_capped

  low = jnp.zeros(points.shape[:1], jnp.int32)
  high = low + num_features - 1
  for _ in range(math.ceil(math.log2(num_features))):    # the official bisection, run on every row
    mid = (low + high) // 2
    short = needed - (_take(offset, mid) - _take(slope, mid) * _take(reach_desc, mid)) > 0
    low, high = jnp.where(short, mid, low), jnp.where(short, high, mid)

  # Rows not selected by the `where`s below may divide by zero there; as in the official code, their values are unused.
  lambda_all = jnp.maximum((needed - offset[:, -1]) / -slope[:, -1], 0)[:, None]
  lambda_part = jnp.maximum((needed - _take(offset, low)) / -_take(slope, low), 0)[:, None]
  d_all = (2 * to_one - 1) * lambda_all
  d_part = jnp.minimum(lambda_part, corner) * to_one + jnp.maximum(-lambda_part, corner) * (1 - to_one)
  d = jnp.where(all_capped[:, None], d_all, jnp.where(partly_capped[:, None], d_part, corner))
  return d * nonzero


def projection_l2(points, w, b):
  """Smallest L2 step d with w.(points + d) = b and points + d in [0, 1], per row: `projection_l2`, transcribed.

  Moving along -w, coordinate i hits the box at r_i; sorted by r, the hyperplane offset reached is piecewise linear
  (slopes: the squared weights of the coordinates not yet at the box), and a bisection finds the piece that meets
  b; coordinates past their r_i stay at the box. Where the box misses the hyperplane, d goes to the box corner.
  """
  huge = 1e12
  c = (w * points).sum(1) - b
  side = jnp.where(c >= 0, 1.0, -1.0).astype(w.dtype)
  w, c = w * side[:, None], c * side
  moving = jnp.abs(w) > 1e-8
  r = jnp.clip(jnp.maximum(points / w, (points - 1) / w), -huge, huge)
  r = jnp.where(~moving | (r == -huge), huge, r)
  order = jnp.argsort(r, axis=1)
  rs = jnp.take_along_axis(r, order, 1)
  rs2 = jnp.pad(rs[:, 1:], ((0, 0), (0, 1)))
  rs, rs2 = jnp.where(rs == huge, 0.0, rs), jnp.where(rs2 == huge, 0.0, rs2)
  w3s = jnp.take_along_axis(w ** 2, order, 1)
  w5 = w3s.sum(1, keepdims=True)
  ws = w5 - jnp.cumsum(w3s, 1)
  d = -(r * w) * moving
  s = jnp.concatenate([-w5 * rs[:, :1], jnp.cumsum((rs - rs2) * ws, 1) - w5 * rs[:, :1]], 1)
  to_plane = s[:, 0] + c < 0            # the plane is reached before any coordinate hits the box
  at_corner = (d * w).sum(1) + c > 0    # the box misses the plane
  between = ~(to_plane | at_corner)

  low = jnp.zeros(points.shape[:1], points.dtype)
  high = low + points.shape[1] - 1
  for _ in range(math.ceil(math.log2(points.shape[1]))):   # the official bisection, run on every row
    mid = jnp.floor((low + high) / 2)
    short = _take(s, mid.astype(jnp.int32)) + c > 0
    low, high = jnp.where(short, mid, low), jnp.where(short, high, mid)
  low = low.astype(jnp.int32)

  # As in the official code, rows not selected below may divide by zero; their values are unused.
  alpha_plane = c / w5[:, 0]
  ws_low = _take(ws, low)
  alpha = jnp.where(ws_low == 0, 0.0, (_take(s, low) + c) / ws_low + _take(rs, low))
  past = (alpha[:, None] > r).astype(points.dtype)
  d_between = d * past - alpha[:, None] * w * (1 - past)
  d = jnp.where(to_plane[:, None], -alpha_plane[:, None] * w, jnp.where(between[:, None], d_between, d))
  return d * moving


def projection_l1(points, w, b):
  """Smallest L1 step d with w.(points + d) = b and points + d in [0, 1], per row: `projection_l1`, transcribed.

  An L1 step spends its budget on the coordinates with the largest |w_i| first (the cheapest per unit of w.z),
  each up to the box; sorted by 1 / |w_i|, the offset reached is a cumulative sum, and a bisection finds the
  coordinate that completes the move (alpha); those before it go to the box, those after stay.
  """
  c = (w * points).sum(1) - b
  side = jnp.where(c >= 0, 1.0, -1.0).astype(w.dtype)
  w, c = w * side[:, None], c * side
  r = jnp.minimum(jnp.abs(1 / w), 1e12)
  order = jnp.argsort(r, axis=1, stable=True)
  rank = jnp.argsort(order, axis=1)
  d = (-points + (w < 0)) * (w != 0)                      # every coordinate to the box's side lowering w.z
  s = jnp.cumsum(jnp.concatenate([c[:, None], jnp.take_along_axis(
      jnp.minimum(-w * points, w * (1 - points)), order, 1)], 1), 1)
  reaches = s[:, -1] < 0                                   # the box meets the plane (else: the corner)

  low = jnp.zeros(points.shape[:1], jnp.int32)
  high = low + s.shape[1]
  for _ in range(math.ceil(math.log2(w.shape[1]))):       # the official bisection, run on every row
    mid = (low + high) // 2
    short = _take(s, mid) > 0
    low, high = jnp.where(short, mid, low), jnp.where(short, high, mid)

  # As in the official code, rows that do not reach the plane may divide by zero here; their values are unused.
  last = _take(order, jnp.minimum(low, w.shape[1] - 1))
  alpha = -_take(s, low) / _take(w, last)
  d_reach = jnp.where(jnp.arange(w.shape[1]) == last[:, None], alpha[:, None], d * (rank < low[:, None]))
  return jnp.where(reaches[:, None], d_reach, d) * (jnp.abs(w) > 1e-8)


PROJECTIONS = {'linf': projection_linf, 'l2': projection_l2, 'l1': projection_l1}


def _flat(v):
  return v.reshape(v.shape[0], -1)


def _margin_and_grad(logits_fn, x, y, target):
  """z_t - z_y per example and its input gradient (that of the batch sum: examples are independent)."""
  def total(v):
    logits = logits_fn(v)
    margin = _take(logits, target) - _take(logits, y)
    return margin.sum(), margin

  (_, margin), grad = jax.value_and_grad(total, has_aux=True)(x)
  return margin.astype(x.dtype), grad   # logits of another precision (bf16) must not change the iterates' dtype


def _fab_step(x_cur, x, margin, grad, alpha_max, eta, norm):
  """Projects x_cur and the clean x onto the linearised boundary {z: margin + grad.(z - x_cur) = 0} and returns the
  alpha-weighted mix of the two eta-extrapolated projections, clipped to the box."""
  w = _flat(grad)
  b = (w * _flat(x_cur)).sum(1) - margin
  d_cur = PROJECTIONS[norm](_flat(x_cur), w, b).reshape(x.shape)
  d_clean = PROJECTIONS[norm](_flat(x), w, b).reshape(x.shape)
  n_cur, n_clean = jnp.maximum(parts.norm_of(d_cur, norm), 1e-8), jnp.maximum(parts.norm_of(d_clean, norm), 1e-8)
  alpha = parts.per_example(jnp.clip(n_cur / (n_cur + n_clean), 0.0, alpha_max), x)
  return jnp.clip((x_cur + eta * d_cur) * (1 - alpha) + (x + eta * d_clean) * alpha, 0.0, 1.0)


def _closest_boundary(logits_fn, x, y, norm):
  """The untargeted `get_diff_logits_grads_batch` and class choice: per example, z_j - z_y and its gradient for the
  class j whose linearised boundary is nearest, |z_j - z_y| / ||grad||_dual (L1 for L-inf, L2 for L2, L-inf for
  L1)."""
  logits, vjp = jax.vjp(logits_fn, x)
  classes = jnp.eye(logits.shape[-1], dtype=logits.dtype)
  # One cotangent per class, made from the logits so that it varies like them inside shard_map: (B, C, ...) grads.
  grads = jnp.moveaxis(jax.vmap(lambda e: vjp(jnp.zeros_like(logits) + e)[0])(classes), 0, 1)
  rows = jnp.arange(x.shape[0])
  diff = (logits - logits[rows, y][:, None]).at[rows, y].set(1e10)
  diff_grads = grads - grads[rows, y][:, None]
  flat = diff_grads.reshape(diff_grads.shape[:2] + (-1,))
  dual = {'linf': lambda f: jnp.abs(f).sum(-1), 'l2': lambda f: jnp.sqrt((f ** 2).sum(-1)),
          'l1': lambda f: jnp.abs(f).max(-1)}[norm](flat)
  nearest = jnp.argmin(jnp.abs(diff) / (1e-12 + dual), axis=1)
  return diff[rows, nearest].astype(x.dtype), diff_grads[rows, nearest]


def _target_run(logits_fn, x, y, target, *, steps, alpha_max, eta, beta, norm, start=None):
  """One FAB run from the clean point (or `start`), toward `target` (None: the nearest boundary at each step): the
  smallest misclassified point found and its `norm` distance to x (_NOT_FOUND, with x itself, where none was)."""
  def body(_, state):
    x_cur, best_x, best_norm = state
    if target is None:
      margin, grad = _closest_boundary(logits_fn, x_cur, y, norm)
    else:
      margin, grad = _margin_and_grad(logits_fn, x_cur, y, target)
    x_cur = _fab_step(x_cur, x, margin, grad, alpha_max, eta, norm)
    is_adv = logits_fn(x_cur).argmax(-1) != y
    distance = parts.norm_of(x_cur - x, norm)
    better = is_adv & (distance < best_norm)
    best_x = jnp.where(parts.per_example(better, x), x_cur, best_x)
    best_norm = jnp.where(better, distance, best_norm)
    x_cur = jnp.where(parts.per_example(is_adv, x), x + (x_cur - x) * beta, x_cur)   # the backward step
    return x_cur, best_x, best_norm

  not_found = jnp.zeros_like(y, x.dtype) + _NOT_FOUND     # made from y: varying like it inside shard_map
  _, best_x, best_norm = jax.lax.fori_loop(0, steps, body, (x if start is None else start, x, not_found))
  return best_x, best_norm


def fab(logits_fn, x, y, key, *, eps, steps=100, restarts=5, alpha_max=0.1, eta=1.05, beta=0.9, norm='linf'):
  """Untargeted FAB under L-inf, L2 or L1, as AutoAttack's 'plus' version runs it ('fab', `perturb` with
  targeted=False): each step heads for the nearest linearised boundary; the first restart starts at the clean
  point, the others at x + eps / 2 * u / ||u|| (u uniform in [-1, 1] for L-inf, normal for L2 and L1), each on the
  points still robust. Returns AttackOutput as `fab_targeted` does."""
  keys = parts.example_keys(key, x.shape[0])
  eps = jnp.zeros_like(y, x.dtype) + jnp.asarray(eps, x.dtype)
  x_adv, robust, used = x, logits_fn(x).argmax(-1) == y, jnp.zeros_like(y, jnp.int32)
  for r in range(restarts):
    start = None
    if r:
      restart_keys = parts.fold_in(keys, r)
      noise = (parts.uniform_noise(restart_keys, x, -1.0, 1.0) if norm == 'linf' else
               parts.normal_noise(restart_keys, x))
      start = jnp.clip(x + parts.per_example(eps / 2 / parts.norm_of(noise, norm), x) * noise, 0.0, 1.0)
    best_x, best_norm = _target_run(logits_fn, x, y, None, steps=steps, alpha_max=alpha_max, eta=eta, beta=beta,
                                    norm=norm, start=start)
    broken = robust & (best_norm <= eps) & (logits_fn(best_x).argmax(-1) != y)
    x_adv = jnp.where(parts.per_example(broken, x), best_x, x_adv)
    used, robust = used + steps * robust, robust & ~broken
  return AttackOutput(jax.lax.stop_gradient(x_adv), used)


def fab_targeted(logits_fn, x, y, key, *, eps, steps=100, n_targets=9, alpha_max=0.1, eta=1.05, beta=0.9,
                 norm='linf'):
  """FAB-T under L-inf, L2 or L1 (`norm`) with AutoAttack's standard settings (the cascade's 'fab-t').

  Args:
    eps: the threat radius, scalar or per-example (B,): only points within it count as broken.
    steps: iterations per target run (one gradient each).
    n_targets: target runs, capped at C - 1; the k-th targets the class with the (k+1)-th highest clean logit.
    key: unused (one restart, from the clean point); kept for the common attack signature.
  Returns:
    AttackOutput: the smallest adversarial point found for broken examples, the clean x for the others; `steps`
    counts each example's gradient evaluations (`steps` per target run it took part in).
  """
  del key
  clean_logits = logits_fn(x)
  n_targets = min(n_targets, clean_logits.shape[-1] - 1)
  ranked = jnp.argsort(clean_logits, axis=-1)[:, ::-1]   # ranked[:, k]: the class with the (k+1)-th highest logit
  eps = jnp.zeros_like(y, x.dtype) + jnp.asarray(eps, x.dtype)
  run_kw = dict(steps=steps, alpha_max=alpha_max, eta=eta, beta=beta, norm=norm)

  def attack_target(k, state):
    x_adv, robust, used = state

    def run(_):
      best_x, best_norm = _target_run(logits_fn, x, y, ranked[:, k], **run_kw)
      # The official re-check of the returned point: misclassified and within eps.
      broken = robust & (best_norm <= eps) & (logits_fn(best_x).argmax(-1) != y)
      return jnp.where(parts.per_example(broken, x), best_x, x_adv), robust & ~broken

    x_next, robust_next = jax.lax.cond(robust.any(), run, lambda _: (x_adv, robust), None)
    return x_next, robust_next, used + steps * robust

  start = (x, clean_logits.argmax(-1) == y, jnp.zeros_like(y, jnp.int32))
  x_adv, _, used = jax.lax.fori_loop(1, n_targets + 1, attack_target, start)
  return AttackOutput(jax.lax.stop_gradient(x_adv), used)
