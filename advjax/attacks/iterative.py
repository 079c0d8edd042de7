"""Iterative gradient attacks under L-inf or L2: FGSM, PGD-K (with restarts) and early-stopped PGD: FAT's PGD-K-tau,
DAT's FOSC (L-inf).

All are pure functions of (logits_fn, x, y, key, ...) that jit, vmap and nest inside a jitted train step. Inputs
live in [0, 1]; `logits_fn` is any closure x -> logits (a Flax model in eval mode, a Haiku function, ...).
"""
import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from advjax.attacks import losses, parts


class AttackOutput(NamedTuple):
  x_adv: jax.Array  # adversarial batch, same shape as x, detached
  steps: jax.Array  # int32 (B,): gradient steps each example took (FAT's BP count)
  fosc: Optional[jax.Array] = None   # (B,) FOSC value at the returned points, where the attack computes it (DAT)
  loss_weights: Optional[jax.Array] = None   # (B,) the outer loss's per-example weights, where the method sets them
  model_state: Any = None   # what a forward with state carried out of the attack (`pgd`'s model_state)


def _loss_and_grad(logits_fn, objective, x_adv):
  """Logits at x_adv and the gradient of the summed per-example objective (= per-example gradients)."""
  logits, grad, _ = _threaded_loss_and_grad(lambda v, state: (logits_fn(v), state), objective, x_adv, None)
  return logits, grad


def _threaded_loss_and_grad(forward, objective, x_adv, model_state):
  """`_loss_and_grad` for `forward(v, model_state) -> (logits, model_state)`, and the state after the forward."""
  def total(v):
    logits, state = forward(v, model_state)
    return objective(logits).sum(), (logits, state)

  (_, (logits, state)), grad = jax.value_and_grad(total, has_aux=True)(x_adv)
  return logits, grad, state


def _start(logits_fn, x, y, key, loss, eps, init, clip_init, norm):
  keys = parts.example_keys(key, x.shape[0])
  init_keys, noise_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
  objective = loss(logits_fn, x, y)
  return objective, parts.random_start(init_keys, x, eps, init, clip_init, norm), noise_keys


def pgd(logits_fn, x, y, key, *, eps, step_size, steps, loss=losses.cross_entropy, init='uniform',
        clip_init=True, noise_std=0.0, restarts=1, model_state=None, norm='linf'):
  """PGD-K (Madry et al.): `steps` ascent steps on `loss` (signed under L-inf, normalised under L2: `norm`),
  projected after each.

  Args:
    eps, step_size: scalars or per-example (B,) arrays.
    steps: K, an int; may be traced (curriculum schedules), at the cost of a while loop.
    loss: an attack-loss factory from `advjax.attacks.losses`.
    init / clip_init: the start, see `parts.random_start`.
    noise_std: FAT's omega, Gaussian noise added at every step.
    restarts: independent runs; each example keeps its worst case (misclassified first, then highest loss).
    model_state: for a forward with state, the BatchNorm statistics of a model in training mode: then
      `logits_fn(v, model_state) -> (logits, model_state)`, the steps' forwards thread the state in turn and
      `AttackOutput.model_state` is the state after the last (one restart; the attack loss's own forward, TRADES'
      clean logits, sees `model_state` and leaves it as it is).
  """
  if model_state is not None and restarts != 1:
    raise ValueError(f'a forward with state (model_state) takes one restart, got restarts={restarts}')
  forward = logits_fn if model_state is not None else lambda v, state: (logits_fn(v), state)

  def run(key):
    objective, x_adv, noise_keys = _start(lambda v: forward(v, model_state)[0], x, y, key, loss, eps, init,
                                          clip_init, norm)

    def body(k, carry):
      x_adv, state = carry
      _, grad, state = _threaded_loss_and_grad(forward, objective, x_adv, state)
      return parts.ascent_step(x_adv, x, grad, eps=eps, step_size=step_size, norm=norm,
                               noise_keys=parts.fold_in(noise_keys, k), noise_std=noise_std), state

    x_adv, state = jax.lax.fori_loop(0, steps, body, (x_adv, model_state))
    return x_adv, objective, state

  all_steps = jnp.full(x.shape[:1], steps * restarts, jnp.int32)
  if restarts == 1:
    x_adv, _, state = run(key)
    return AttackOutput(jax.lax.stop_gradient(x_adv), all_steps, model_state=state)

  keys = parts.example_keys(key, x.shape[0])

  def score(x_adv, objective):
    logits = logits_fn(x_adv)
    return logits.argmax(-1) != y, objective(logits)

  def restart(r, best):
    best_x, best_wrong, best_loss = best
    x_adv, objective, _ = run(parts.fold_in(keys, r))
    wrong, value = score(x_adv, objective)
    better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (value > best_loss))
    return (jnp.where(parts.per_example(better, x), x_adv, best_x),
            best_wrong | wrong, jnp.where(better, value, best_loss))

  x_first, objective, _ = run(parts.fold_in(keys, 0))
  best = jax.lax.fori_loop(1, restarts, restart, (x_first, *score(x_first, objective)))
  return AttackOutput(jax.lax.stop_gradient(best[0]), all_steps)


def fgsm(logits_fn, x, y, key, *, eps, loss=losses.cross_entropy, init='none', norm='linf'):
  """FGSM (Goodfellow et al.; FGM under L2): one step of size eps, from x unless a random start is asked for."""
  return pgd(logits_fn, x, y, key, eps=eps, step_size=eps, steps=1, loss=loss, init=init, norm=norm)


class _LoopState(NamedTuple):
  k: jax.Array          # iterations run
  x_adv: jax.Array
  rule_state: Any       # what the stopping rule carries per example (FAT's counters)
  active: jax.Array     # still attacking
  steps: jax.Array      # steps taken


def compaction_sizes(batch_size, min_size):
  """The static batch sizes of the compaction cascade: batch_size, then halved (rounded up) down to min_size."""
  sizes = [batch_size]
  while min_size and -(-sizes[-1] // 2) >= min_size and sizes[-1] > 1:
    sizes.append(-(-sizes[-1] // 2))
  return sizes


def early_stopped_pgd(logits_fn, x, y, key, *, eps, step_size, steps, stop_rule, rule_state=None,
                      loss=losses.cross_entropy, init='uniform', clip_init=True, noise_std=0.0, budget=None,
                      compact_min_size=16, check_start=False, start_eps=None, norm='linf'):
  """PGD in which each example stops for good once `stop_rule` says so: the loop behind PGD-K-tau, FOSC stopping
  and per-example step budgets.

  Every iteration evaluates the model and the gradient at the current points, asks
  `stop_rule(k, rule_state, examples, x_adv, logits, grad) -> (stop, rule_state)` which examples stop there, and
  takes one ascent step (signed under L-inf) for the others. `examples` holds the per-example inputs (x, y, eps,
  ...) aligned with x_adv, and `rule_state` is a pytree of per-example (B, ...) arrays. The loop ends when no
  example is active or `steps` iterations ran.

  Compaction: since the active set only shrinks, the loop runs at static batch sizes B, B/2, B/4, ... down to
  `compact_min_size` (0: never), each a `lax.while_loop`; when the active examples fit the next size they are
  gathered to the front and the next loop carries only them, so the work follows the examples still attacking.
  Results equal the uncompacted loop's (same points, same step counts) provided `logits_fn` treats examples
  independently, as a model in eval mode does. Each size compiles the model once more, and a loss that needs the
  clean prediction (TRADES' KL) recomputes it for the examples carried on.

  Args:
    budget: optional (B,) int array of per-example step budgets (<= steps); None means `steps` for all.
    compact_min_size: the smallest batch of the cascade; 0 or >= B/2 leaves the batch whole.
    start_eps: radius of the uniform start, if not `eps` (LAS-AT starts within 8/255 whatever eps it sampled).
    check_start: for a rule that decides at the start point from the logits alone (it is called with grad None
      there): a forward pass applies it before the loop, so an example stopped at its start costs one forward
      instead of a forward and backward and never enters the full-size loop. Results are unchanged.
    Others as in `pgd`.
  Returns:
    AttackOutput whose `steps` count each example's gradient steps, in the input order.
  """
  keys = parts.example_keys(key, x.shape[0])
  init_keys, noise_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
  zeros = jnp.zeros_like(y, jnp.int32)   # per-example carries made from y: varying like it inside shard_map
  broadcast = lambda v, dtype: zeros.astype(dtype) + jnp.asarray(v, dtype)   # a (B,) array from a scalar or (B,)
  examples = dict(x=x, y=y, eps=broadcast(eps, x.dtype), step_size=broadcast(step_size, x.dtype),
                  noise_keys=noise_keys, budget=broadcast(steps if budget is None else budget, jnp.int32))
  x_start = parts.random_start(init_keys, x, eps if start_eps is None else start_eps, init, clip_init, norm)
  start = _LoopState(jnp.int32(0), x_start, rule_state, zeros == 0, zeros)
  if check_start:
    stop, rule_state = stop_rule(0, rule_state, examples, x_start, logits_fn(x_start), None)
    start = start._replace(rule_state=rule_state, active=~stop & (examples['budget'] > 0))

  def body(objective, ex, s):
    logits, grad = _loss_and_grad(logits_fn, objective, s.x_adv)
    stop, rule_state = stop_rule(s.k, s.rule_state, ex, s.x_adv, logits, grad)
    if check_start:   # the rule has seen the start already
      stop = stop & (s.k > 0)
      rule_state = jax.tree.map(lambda new, old: jnp.where(s.k > 0, new, old), rule_state, s.rule_state)
    active = s.active & ~stop & (s.k < ex['budget'])
    stepped = parts.ascent_step(s.x_adv, ex['x'], grad, eps=ex['eps'], step_size=ex['step_size'], norm=norm,
                                noise_keys=parts.fold_in(ex['noise_keys'], s.k), noise_std=noise_std)
    x_adv = jnp.where(parts.per_example(active, ex['x']), stepped, s.x_adv)
    return _LoopState(s.k + 1, x_adv, rule_state, active, s.steps + active)

  def run(sizes, ex, s):
    """Loops at sizes[0] until the active examples fit sizes[1], then carries them on at that size."""
    next_size = sizes[1] if len(sizes) > 1 else 0
    objective = loss(logits_fn, ex['x'], ex['y'])
    s = jax.lax.while_loop(lambda s: (s.k < steps) & (s.active.sum() > next_size),
                           functools.partial(body, objective, ex), s)
    if not next_size:
      return s
    front = jnp.argsort(~s.active, stable=True)[:next_size]   # the active examples, in order, then stopped ones
    take = lambda v: v[front]
    sub = run(sizes[1:], jax.tree.map(take, ex), jax.tree.map(take, s._replace(k=None))._replace(k=s.k))
    put = lambda whole, part: whole.at[front].set(part)
    return jax.tree.map(put, s._replace(k=None), sub._replace(k=None))._replace(k=sub.k)

  final = run(compaction_sizes(x.shape[0], compact_min_size), examples, start)
  return AttackOutput(jax.lax.stop_gradient(final.x_adv), final.steps)


def per_example_pgd(logits_fn, x, y, key, *, eps, step_size, budget, steps, **kwargs):
  """PGD with one strategy per example, LAS-AT's attack (Jia et al., CVPR 2022): example i takes budget[i] signed
  steps of size step_size[i] projected onto its own eps[i]-ball; `steps` (static) bounds the budgets.

  Examples whose budget is spent stay where they are, as in the official code; with compaction the loop carries only
  the examples still stepping. Pass `start_eps` for LAS-AT's start U(-8/255, 8/255) whatever eps was sampled.
  **kwargs as in `early_stopped_pgd`.
  """
  def never(k, rule_state, examples, x_adv, logits, grad):
    del k, examples, x_adv, grad
    return jnp.zeros(logits.shape[:1], bool), rule_state

  return early_stopped_pgd(logits_fn, x, y, key, eps=eps, step_size=step_size, steps=steps, stop_rule=never,
                           budget=budget, **kwargs)


def pgd_k_tau(logits_fn, x, y, key, *, eps, step_size, steps, tau, misaligned_labels=False, **kwargs):
  """Early-stopped PGD-K-tau, FAT's Algorithm 1 as its official code runs it (Zhang et al., ICML 2020).

  Each example carries a counter set to tau. Before every step the model checks the current point; a
  misclassified example with counter 0 stops where it is, one with counter > 0 decrements it and steps on;
  a correctly classified example steps without decrementing. The loop ends when every example has stopped or
  `steps` iterations ran (the point after the K-th step is never checked). So tau = 0 returns the first
  misclassified point, and tau >= K is exactly PGD-K.

  Args:
    tau: int scalar or (B,) array; may be traced, so a tau schedule does not recompile.
    misaligned_labels: reproduce `earlystop.py` before commit 6e461e0 (2021-01-15), which checked the example at
      position i of the shrunken batch of examples still iterating against the label at position i of the input
      batch (`target[idx]`, not `iter_target[idx]`): the same as the fix until the first example stops.
    **kwargs: as in `early_stopped_pgd` (loss, init, clip_init, noise_std, budget, compact_min_size).
  Returns:
    AttackOutput whose `steps` are the per-example gradient steps taken (summed over a batch: FAT's BP count).
  """
  def tau_rule(k, state, examples, x_adv, logits, grad):
    del k, x_adv, grad
    counters, iterating = state
    labels = examples['y']
    if misaligned_labels:   # the examples still iterating keep their input order, also through the compaction
      labels = y[jnp.maximum(jnp.cumsum(iterating) - 1, 0)]
    misclassified = logits.argmax(-1) != labels
    stop = misclassified & (counters == 0)
    return stop, (counters - (misclassified & ~stop), iterating & ~stop)

  counters = jnp.zeros_like(y, jnp.int32) + jnp.asarray(tau, jnp.int32)
  return early_stopped_pgd(logits_fn, x, y, key, eps=eps, step_size=step_size, steps=steps, stop_rule=tau_rule,
                           rule_state=(counters, jnp.ones_like(y, bool)), check_start=True, **kwargs)


def fosc(x_adv, reference, grad, eps):
  """First-order stationary condition of Wang et al. (DAT, ICML 2019), per example:
  max_{x in B_eps(x0)} <x - x_adv, g> = eps * ||g||_1 - <x_adv - x0, g>, zero at the ball's maximising vertex."""
  flat = lambda v: v.reshape(v.shape[0], -1)
  eps = jnp.asarray(eps, grad.dtype).reshape(-1)
  return eps * jnp.abs(flat(grad)).sum(-1) - (flat(x_adv - reference) * flat(grad)).sum(-1)


def pgd_fosc(logits_fn, x, y, key, *, eps, step_size, steps, threshold, reference='clean', init='uniform',
             clip_init=False, loss=losses.cross_entropy, **kwargs):
  """DAT's attack: PGD in which an example stops once its FOSC value falls to `threshold` (c_t).

  The first step is unconditional; before each later step, examples with FOSC <= threshold freeze for good.
  FOSC uses the per-example gradient (of a summed loss). `reference` is the paper's clean input ('clean') or the
  official code's random-start point ('start'); projection is around the clean input either way.

  Returns:
    AttackOutput with `fosc`, each example's FOSC at the point returned (one more gradient, as the official code's
    K + 1 evaluations).
  """
  if reference not in ('clean', 'start'):
    raise ValueError(f"reference must be 'clean' or 'start', got {reference!r}")
  origin = x if reference == 'clean' else _start(logits_fn, x, y, key, loss, eps, init, clip_init, 'linf')[1]

  def fosc_rule(k, origin, examples, x_adv, logits, grad):
    del logits
    return (k > 0) & (fosc(x_adv, origin, grad, examples['eps']) <= threshold), origin

  out = early_stopped_pgd(logits_fn, x, y, key, eps=eps, step_size=step_size, steps=steps, stop_rule=fosc_rule,
                          rule_state=origin, init=init, clip_init=clip_init, loss=loss, **kwargs)
  _, grad = _loss_and_grad(logits_fn, loss(logits_fn, x, y), out.x_adv)
  return out._replace(fosc=fosc(out.x_adv, origin, grad, eps))
