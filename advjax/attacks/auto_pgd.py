"""APGD (Croce & Hein, ICML 2020): PGD with momentum and a step size that halves when progress stalls.

Follows the official AutoAttack `autopgd_base.py` as specified in methods.md §9.2, under L-inf and L2: start on the
surface of the eps-ball (x + eps u / ||u||, u uniform in [-1, 1] for L-inf, normal for L2), step 2 eps along sign(g)
or g / ||g||_2, momentum 0.75, the L2 projection rescaling x' - x to at most eps before clipping to [0, 1];
checkpoints after 22, 19, 16, ... iterations (for 100) where a per-example step size halves and the iterate returns to
its best point if the loss rose on at most rho of the interval's steps or the best loss did not improve since the last
checkpoint. Fixed shapes throughout: one `fori_loop`, every flag, step size and best point per example; the checkpoint
iterations are static. Returns the clean input for points not broken.
"""
import jax
import jax.numpy as jnp
import numpy as np
import optax

from advjax.attacks import parts
from advjax.attacks.iterative import AttackOutput


def _sorted_logits(logits):
  return jnp.sort(logits, axis=-1)   # ascending: [..., -1] is the largest


def dlr_loss(logits, y):
  """Difference of logits ratio: -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3), invariant to shift and scale."""
  z = _sorted_logits(logits)
  z_y = jnp.take_along_axis(logits, y[:, None], -1)[:, 0]
  top_is_y = jnp.argmax(logits, -1) == y
  best_other = jnp.where(top_is_y, z[:, -2], z[:, -1])
  return -(z_y - best_other) / (z[:, -1] - z[:, -3] + 1e-12)


def targeted_dlr_loss(logits, y, target):
  """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2): APGD-T's loss (needs at least 4 classes)."""
  z = _sorted_logits(logits)
  pick = lambda labels: jnp.take_along_axis(logits, labels[:, None], -1)[:, 0]
  return -(pick(y) - pick(target)) / (z[:, -1] - 0.5 * (z[:, -3] + z[:, -4]) + 1e-12)


def checkpoints(steps):
  """(is_checkpoint, interval length) per iteration: intervals 0.22 N, then 0.03 N shorter, at least 0.06 N."""
  interval, decrement, shortest = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
  is_checkpoint, lengths, count = np.zeros(steps, bool), np.zeros(steps, np.int32), 0
  for i in range(steps):
    count += 1
    if count == interval:
      is_checkpoint[i], lengths[i], count = True, interval, 0
      interval = max(interval - decrement, shortest)
  return jnp.asarray(is_checkpoint), jnp.asarray(lengths)


def _normalize(v, norm):
  """The official `normalize`: v / (||v|| + 1e-12) per example."""
  flat = v.reshape(v.shape[0], -1)
  size = jnp.abs(flat).max(-1) if norm == 'linf' else jnp.sqrt((flat ** 2).sum(-1))
  return v / parts.per_example(size + 1e-12, v)


def _step_and_projection(norm, x, eps):
  """The step direction from the gradient and the projection under `norm`, as `attack_single_run` computes them:
  the L2 projection rescales x' - x to at most eps, then clips to [0, 1]."""
  eps_b = parts.per_example(eps, x)
  if norm == 'linf':
    return jnp.sign, lambda v: jnp.clip(jnp.clip(v, x - eps_b, x + eps_b), 0.0, 1.0)
  if norm == 'l2':
    def project(v):
      size = jnp.sqrt(((v - x) ** 2).reshape(x.shape[0], -1).sum(-1))
      return jnp.clip(x + _normalize(v - x, norm) * jnp.minimum(eps_b, parts.per_example(size, x)), 0.0, 1.0)
    return lambda grad: _normalize(grad, norm), project
  raise ValueError(f"APGD's norm must be 'linf' or 'l2', got {norm!r}")


def apgd(logits_fn, x, y, key, *, eps, steps=100, loss='ce', target=None, rho=0.75, norm='linf', start=None,
         restarts=1):
  """APGD under L-inf or L2 (`norm`) on `loss` ('ce', 'dlr', or 'dlr_targeted' with `target` labels), from a random
  point on the ball's surface (or from `start`, the official `x_init`); `restarts` runs from fresh starts, each
  kept for the points still robust (the official `n_restarts`).

  Returns AttackOutput: the last misclassified iterate where one was found (AutoAttack's `x_best_adv`), the clean x
  elsewhere; `steps` counts gradient evaluations.
  """
  if restarts > 1:
    keys = parts.example_keys(key, x.shape[0])
    x_adv, robust = x, logits_fn(x).argmax(-1) == y
    for r in range(restarts):
      out = apgd(logits_fn, x, y, parts.fold_in(keys, r), eps=eps, steps=steps, loss=loss, target=target, rho=rho,
                 norm=norm)
      broken = robust & (logits_fn(out.x_adv).argmax(-1) != y)
      x_adv, robust = jnp.where(parts.per_example(broken, x), out.x_adv, x_adv), robust & ~broken
    return AttackOutput(x_adv, jnp.full(y.shape, restarts * (steps + 1), jnp.int32))
  objectives = {'ce': lambda z: optax.softmax_cross_entropy_with_integer_labels(z, y),
                'dlr': lambda z: dlr_loss(z, y),
                'dlr_targeted': lambda z: targeted_dlr_loss(z, y, target)}
  objective = objectives[loss]
  eps_b = parts.per_example(eps, x)
  step_direction, project = _step_and_projection(norm, x, eps)

  def loss_and_grad(v):
    def total(v):
      logits = logits_fn(v)
      per_example = objective(logits)
      return per_example.sum(), (per_example, logits)
    (_, (per_example, logits)), grad = jax.value_and_grad(total, has_aux=True)(v)
    return per_example, logits, grad

  keys = parts.example_keys(key, x.shape[0])
  if start is None:
    noise = parts.uniform_noise(keys, x, -1.0, 1.0) if norm == 'linf' else parts.normal_noise(keys, x)
    start = x + eps_b * _normalize(noise, norm)
  x0 = jnp.clip(start, 0.0, 1.0)
  loss0, logits0, grad0 = loss_and_grad(x0)
  wrong0 = logits0.argmax(-1) != y
  is_checkpoint, lengths = checkpoints(steps)
  expand = lambda mask: parts.per_example(mask, x)

  def body(i, s):
    (x_cur, x_old, grad, eta, x_best, grad_best, loss_best, x_adv, broken, reduced_last, loss_best_last, prev_loss,
     n_up) = s
    momentum = jnp.where(i == 0, 1.0, 0.75)
    z = project(x_cur + parts.per_example(eta, x) * step_direction(grad))
    x_next = project(x_cur + momentum * (z - x_cur) + (1 - momentum) * (x_cur - x_old))
    value, logits, grad = loss_and_grad(x_next)
    wrong = logits.argmax(-1) != y
    x_adv = jnp.where(expand(wrong), x_next, x_adv)   # the latest misclassified iterate, as the official code
    broken = broken | wrong
    improved = value > loss_best
    x_best = jnp.where(expand(improved), x_next, x_best)
    grad_best = jnp.where(expand(improved), grad, grad_best)
    loss_best = jnp.where(improved, value, loss_best)
    n_up = n_up + (value.astype(jnp.float32) > prev_loss.astype(jnp.float32))   # the official loss_steps: float32
    # At a checkpoint: halve the step and go back to the best point if progress stalled.
    check = is_checkpoint[i]
    reduce = check & ((n_up <= rho * lengths[i]) | (~reduced_last & (loss_best <= loss_best_last)))
    eta = jnp.where(reduce, eta / 2, eta)
    x_next = jnp.where(expand(reduce), x_best, x_next)
    grad = jnp.where(expand(reduce), grad_best, grad)
    reduced_last = jnp.where(check, reduce, reduced_last)
    loss_best_last = jnp.where(check, loss_best, loss_best_last)
    n_up = jnp.where(check, 0, n_up)
    return (x_next, x_cur, grad, eta, x_best, grad_best, loss_best, x_adv, broken, reduced_last, loss_best_last,
            value, n_up)

  zeros = jnp.zeros_like(loss0)   # per-example carries made from the loss: varying like it inside shard_map
  state = (x0, x0, grad0, zeros + 2 * jnp.asarray(eps, x.dtype), x0, grad0, loss0,
           jnp.where(expand(wrong0), x0, x), wrong0, zeros == 0, loss0, zeros, zeros.astype(jnp.int32))
  final = jax.lax.fori_loop(0, steps, body, state)
  x_adv, broken = final[7], final[8]
  return AttackOutput(jax.lax.stop_gradient(jnp.where(expand(broken), x_adv, x)),
                      jnp.full(y.shape, steps + 1, jnp.int32))


def apgd_targeted(logits_fn, x, y, key, *, eps, steps=100, n_targets=9, rho=0.75, norm='linf'):
  """APGD-T: targeted DLR towards the 2nd, 3rd, ... most likely classes at x, each run on the points still robust."""
  logits = logits_fn(x)
  n_targets = min(n_targets, logits.shape[-1] - 1)
  ranked = jnp.argsort(logits, axis=-1)    # ascending
  x_adv, broken = x, logits.argmax(-1) != y
  for r in range(n_targets):
    out = apgd(logits_fn, x, y, parts.fold_in(parts.example_keys(key, x.shape[0]), r), eps=eps, steps=steps,
               loss='dlr_targeted', target=ranked[:, -(r + 2)], rho=rho, norm=norm)
    newly = ~broken & (logits_fn(out.x_adv).argmax(-1) != y)
    x_adv = jnp.where(parts.per_example(newly, x), out.x_adv, x_adv)
    broken = broken | newly
  return AttackOutput(x_adv, jnp.full(y.shape, n_targets * (steps + 1), jnp.int32))
