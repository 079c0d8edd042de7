"""APGD (Croce & Hein, ICML 2020): PGD with momentum and a step size that halves when progress stalls.

Follows the official AutoAttack `autopgd_base.py` (fra31/auto-attack a392200) under L-inf and L2: start on the
surface of the eps-ball (x + eps u / ||u||, u uniform in [-1, 1] for L-inf, normal for L2), step 2 eps along sign(g)
or g / ||g||_2, momentum 0.75, the L2 projection rescaling x' - x to at most eps before clipping to [0, 1];
checkpoints after 22, 19, 16, ... iterations (for 100) where a per-example step size halves and the iterate returns to
its best point if the loss rose on at most rho of the interval's steps or the best loss did not improve since the last
checkpoint. Under L1 (Croce & Hein, ICML 2021) its sparse version: steps of size eps along the signs of the largest
gradient entries (the top fraction adapts to the sparsity of the best point), the exact L1-and-box projection, no
momentum, and optionally the official `use_largereps` schedule (radii 3, 2, 1 eps over 30/30/40% of the iterations).
Fixed shapes throughout: one `fori_loop`, every flag, step size and best point per example; the checkpoint
iterations are static. Returns the clean input for points not broken.
"""
import math

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
  return v / parts.per_example(parts.norm_of(v, norm) + 1e-12, v)


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


def _forward(logits_fn, keys, randomized):
  """draw -> (v -> logits): a deterministic logits_fn as it is; a randomised `logits_fn(x, key)` at its `draw`-th
  forward, each example from its own key (`parts.one_draw`)."""
  if not randomized:
    return lambda draw: logits_fn
  return lambda draw: parts.one_draw(logits_fn, parts.fold_in(keys, draw))


def _loss_and_grad(forward, y, loss, target, eot_iter=1):
  """(v, call) -> (per-example loss, logits, gradient of the summed loss) for `loss` ('ce', 'dlr', 'dlr_targeted').

  With eot_iter > 1, the official EoT: the gradient summed over eot_iter forwards (draws call * eot_iter + j of a
  randomised model) in order, then divided; the loss and logits are the last forward's."""
  objective = {'ce': lambda z: optax.softmax_cross_entropy_with_integer_labels(z, y),
               'dlr': lambda z: dlr_loss(z, y),
               'dlr_targeted': lambda z: targeted_dlr_loss(z, y, target)}[loss]

  def one_forward(v, draw):
    def total(v):
      logits = forward(draw)(v)
      per_example = objective(logits)
      return per_example.sum(), (per_example, logits)
    (_, (per_example, logits)), grad = jax.value_and_grad(total, has_aux=True)(v)
    return per_example, logits, grad

  def loss_and_grad(v, call):
    first = one_forward(v, call * eot_iter)
    if eot_iter == 1:
      return first

    def add(j, summed):
      per_example, logits, grad = one_forward(v, call * eot_iter + j)
      return per_example, logits, summed[2] + grad
    per_example, logits, grad = jax.lax.fori_loop(1, eot_iter, add, first)
    return per_example, logits, grad / eot_iter
  return loss_and_grad


def apgd(logits_fn, x, y, key, *, eps, steps=100, loss='ce', target=None, rho=0.75, norm='linf', start=None,
         restarts=1, large_eps=False, eot_iter=1, randomized=False):
  """APGD under L-inf, L2 or L1 (`norm`) on `loss` ('ce', 'dlr', or 'dlr_targeted' with `target` labels), from a
  random point on the ball's surface (L1: a normal draw projected into the ball) or from `start` (the official
  `x_init`); `restarts` runs from fresh starts, each kept for the points still robust (the official `n_restarts`);
  `large_eps` (L1 only) the official `use_largereps` schedule; `eot_iter` the gradients averaged per step (the
  official EoT, for randomised models). `randomized`: `logits_fn(x, key)` is a randomised model, each forward a
  fresh draw from the example's key; an example counts as broken when an iterate is misclassified on its draw.

  Returns AttackOutput: the last misclassified iterate where one was found (AutoAttack's `x_best_adv`), the clean x
  elsewhere; `steps` counts gradient evaluations.
  """
  keys = parts.example_keys(key, x.shape[0])
  if restarts > 1:
    check = _forward(logits_fn, parts.fold_in(keys, restarts), randomized)   # draws apart from every restart's
    x_adv, robust, used = x, check(0)(x).argmax(-1) == y, jnp.zeros_like(y, jnp.int32)
    for r in range(restarts):
      out = apgd(logits_fn, x, y, parts.fold_in(keys, r), eps=eps, steps=steps, loss=loss, target=target, rho=rho,
                 norm=norm, large_eps=large_eps, eot_iter=eot_iter, randomized=randomized)
      broken = robust & (check(r + 1)(out.x_adv).argmax(-1) != y)
      x_adv, robust = jnp.where(parts.per_example(broken, x), out.x_adv, x_adv), robust & ~broken
      used = used + out.steps
    return AttackOutput(x_adv, used)
  if large_eps and norm != 'l1':
    raise ValueError(f"large_eps is APGD-L1's schedule, not {norm}'s")
  draw_keys = None
  if randomized:   # the model's draws from a stream of their own
    keys, draw_keys = parts.split(keys)
  loss_and_grad = _loss_and_grad(_forward(logits_fn, draw_keys, randomized), y, loss, target, eot_iter)
  if norm == 'l1':
    run = _large_eps_l1 if large_eps else _apgd_l1
    _, broken, x_adv = run(loss_and_grad, x, y, keys, eps, steps, start)
    x_adv = jnp.clip(x_adv, 0.0, 1.0)   # the projection's float32 rounding can leave [0, 1] by 1e-7
    return AttackOutput(jax.lax.stop_gradient(jnp.where(parts.per_example(broken, x), x_adv, x)),
                        jnp.full(y.shape, (steps + (3 if large_eps else 1)) * eot_iter, jnp.int32))
  eps_b = parts.per_example(eps, x)
  step_direction, project = _step_and_projection(norm, x, eps)
  if start is None:
    noise = parts.uniform_noise(keys, x, -1.0, 1.0) if norm == 'linf' else parts.normal_noise(keys, x)
    start = x + eps_b * _normalize(noise, norm)
  x0 = jnp.clip(start, 0.0, 1.0)
  loss0, logits0, grad0 = loss_and_grad(x0, 0)
  wrong0 = logits0.argmax(-1) != y
  is_checkpoint, lengths = checkpoints(steps)
  expand = lambda mask: parts.per_example(mask, x)

  def body(i, s):
    (x_cur, x_old, grad, eta, x_best, grad_best, loss_best, x_adv, broken, reduced_last, loss_best_last, prev_loss,
     n_up) = s
    momentum = jnp.where(i == 0, 1.0, 0.75)
    z = project(x_cur + parts.per_example(eta, x) * step_direction(grad))
    x_next = project(x_cur + momentum * (z - x_cur) + (1 - momentum) * (x_cur - x_old))
    value, logits, grad = loss_and_grad(x_next, i + 1)
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
                      jnp.full(y.shape, (steps + 1) * eot_iter, jnp.int32))


def _apgd_l1(loss_and_grad, x, y, keys, eps, steps, start):
  """The official `attack_single_run` under L1: (x_best, broken, last misclassified iterate).

  Each step moves eps along sign(g) on the entries where |g| is among the largest `topk` fraction, divided by their
  count, then projects onto the L1 ball and [0, 1]. Every max(0.04 N, 1) iterations: if the best point got sparser
  by 5%, the step resets to eps and the iterate returns to the best point; otherwise the step shrinks by 1.5 (to at
  least eps / 10); topk follows the best point's sparsity / 1.5.
  """
  n_fts = x[0].size
  eps = jnp.asarray(eps, x.dtype)
  given = start is not None
  if not given:   # a normal draw projected into the ball; the first top fraction 20% of the entries
    noise = parts.normal_noise(keys, x)
    start = x + noise + parts.l1_projection(x, noise, eps)
  x0 = jnp.clip(start, 0.0, 1.0)
  loss0, logits0, grad0 = loss_and_grad(x0, 0)
  zeros = jnp.zeros_like(loss0, jnp.float32)   # per-example carries varying like the loss inside shard_map
  sp_old = parts.l0_norm(x0 - x) if given else zeros.astype(jnp.int32) + n_fts
  topk = sp_old.astype(jnp.float32) / n_fts / 1.5 if given else zeros + 0.2
  wrong0 = logits0.argmax(-1) != y
  interval = max(int(0.04 * steps), 1)
  expand = lambda mask: parts.per_example(mask, x)
  flat = lambda v: v.reshape(x.shape[0], -1)

  def body(i, s):
    x_cur, grad, step, topk, sp_old, x_best, grad_best, loss_best, x_adv, broken = s
    ranked = jnp.sort(jnp.abs(flat(grad)), -1)
    cut = jnp.clip((1.0 - topk) * n_fts, 0, n_fts - 1).astype(jnp.int32)
    threshold = jnp.take_along_axis(ranked, cut[:, None], -1)[:, 0]
    direction = jnp.sign(grad * (jnp.abs(grad) >= expand(threshold)))
    delta = x_cur + expand(step) * direction / expand(parts.l1_norm(direction) + 1e-10) - x
    x_next = x + delta + parts.l1_projection(x, delta, eps)
    value, logits, grad = loss_and_grad(x_next, i + 1)
    wrong = logits.argmax(-1) != y
    x_adv = jnp.where(expand(wrong), x_next, x_adv)
    broken = broken | wrong
    improved = value > loss_best
    x_best = jnp.where(expand(improved), x_next, x_best)
    grad_best = jnp.where(expand(improved), grad, grad_best)
    loss_best = jnp.where(improved, value, loss_best)

    def adapt(carry):   # the official sparsity check at the end of each interval
      x_next, grad, step, topk, sp_old = carry
      sp_curr = parts.l0_norm(x_best - x)
      sparser = sp_curr.astype(jnp.float32) / sp_old < 0.95
      step = jnp.clip(jnp.where(sparser, eps, step / 1.5), eps / 10, eps)
      return (jnp.where(expand(sparser), x_best, x_next), jnp.where(expand(sparser), grad_best, grad), step,
              sp_curr.astype(jnp.float32) / n_fts / 1.5, sp_curr)
    x_next, grad, step, topk, sp_old = jax.lax.cond(
        (i + 1) % interval == 0, adapt, lambda c: c, (x_next, grad, step, topk, sp_old))
    return x_next, grad, step, topk, sp_old, x_best, grad_best, loss_best, x_adv, broken

  state = (x0, grad0, jnp.zeros_like(loss0) + eps, topk, sp_old, x0, grad0, loss0, jnp.where(expand(wrong0), x0, x),
           wrong0)
  *_, x_best, _, _, x_adv, broken = jax.lax.fori_loop(0, steps, body, state)
  return x_best, broken, x_adv


def _large_eps_l1(loss_and_grad, x, y, keys, eps, steps, start):
  """The official `decr_eps_pgd`: L1 APGD at radii 3, 2 and 1 eps for ceil(0.3 N), ceil(0.3 N) and the remaining
  iterations, each phase from the previous one's best point projected onto its ball (the first from a normal draw,
  or `start`, projected onto the 3 eps ball); broken points and iterates are the last phase's."""
  first = math.ceil(0.3 * steps)   # as the official float arithmetic: 31 of 100
  x_init = x + parts.normal_noise(keys, x) if start is None else start
  x_init = x_init + parts.l1_projection(x, x_init - x, 3 * eps)
  calls = 0   # a randomised model's draws go on across the phases
  for factor, phase_steps in ((3, first), (2, first), (1, steps - 2 * first)):
    x_init = x_init + parts.l1_projection(x, x_init - x, factor * eps)
    phase = lambda v, call, offset=calls: loss_and_grad(v, call + offset)
    x_init, broken, x_adv = _apgd_l1(phase, x, y, keys, factor * eps, phase_steps, x_init)
    calls += phase_steps + 1
  return x_init, broken, x_adv


def apgd_targeted(logits_fn, x, y, key, *, eps, steps=100, n_targets=9, rho=0.75, norm='linf', large_eps=False):
  """APGD-T: targeted DLR towards the 2nd, 3rd, ... most likely classes at x, each run on the points still robust."""
  logits = logits_fn(x)
  n_targets = min(n_targets, logits.shape[-1] - 1)
  ranked = jnp.argsort(logits, axis=-1)    # ascending
  x_adv, broken = x, logits.argmax(-1) != y
  for r in range(n_targets):
    out = apgd(logits_fn, x, y, parts.fold_in(parts.example_keys(key, x.shape[0]), r), eps=eps, steps=steps,
               loss='dlr_targeted', target=ranked[:, -(r + 2)], rho=rho, norm=norm, large_eps=large_eps)
    newly = ~broken & (logits_fn(out.x_adv).argmax(-1) != y)
    x_adv = jnp.where(parts.per_example(newly, x), out.x_adv, x_adv)
    broken = broken | newly
  return AttackOutput(x_adv, jnp.full(y.shape, n_targets * (steps + 1), jnp.int32))
