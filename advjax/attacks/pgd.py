"""L-inf gradient attacks: FGSM, PGD-K (with restarts) and FAT's early-stopped PGD-K-tau.

All are pure functions of (logits_fn, x, y, key, ...) that jit, vmap and nest inside a jitted train step. Inputs
live in [0, 1]; `logits_fn` is any closure x -> logits (a Flax model in eval mode, a Haiku function, ...).
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

from advjax.attacks import losses, parts


class AttackOutput(NamedTuple):
  x_adv: jax.Array  # adversarial batch, same shape as x, detached
  steps: jax.Array  # int32 (B,): gradient steps each example took (FAT's BP count)


def _loss_and_grad(logits_fn, objective, x_adv):
  """Logits at x_adv and the gradient of the summed per-example objective (= per-example gradients)."""
  def total(v):
    logits = logits_fn(v)
    return objective(logits).sum(), logits

  (_, logits), grad = jax.value_and_grad(total, has_aux=True)(x_adv)
  return logits, grad


def _start(logits_fn, x, y, key, loss, eps, init, clip_init):
  keys = parts.example_keys(key, x.shape[0])
  init_keys, noise_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
  objective = loss(logits_fn, x, y)
  return objective, parts.random_start(init_keys, x, eps, init, clip_init), noise_keys


def pgd(logits_fn, x, y, key, *, eps, step_size, steps, loss=losses.cross_entropy, init='uniform',
        clip_init=True, noise_std=0.0, restarts=1):
  """PGD-K under L-inf (Madry et al.): `steps` signed ascent steps on `loss`, projected after each.

  Args:
    eps, step_size: scalars or per-example (B,) arrays.
    steps: K, a static int.
    loss: an attack-loss factory from `advjax.attacks.losses`.
    init / clip_init: the start, see `parts.random_start`.
    noise_std: FAT's omega, Gaussian noise added at every step.
    restarts: independent runs; each example keeps its worst case (misclassified first, then highest loss).
  """
  def run(key):
    objective, x_adv, noise_keys = _start(logits_fn, x, y, key, loss, eps, init, clip_init)

    def body(k, x_adv):
      _, grad = _loss_and_grad(logits_fn, objective, x_adv)
      return parts.signed_step(x_adv, x, grad, eps=eps, step_size=step_size,
                               noise_keys=parts.fold_in(noise_keys, k), noise_std=noise_std)

    return jax.lax.fori_loop(0, steps, body, x_adv), objective

  all_steps = jnp.full(x.shape[:1], steps * restarts, jnp.int32)
  if restarts == 1:
    return AttackOutput(jax.lax.stop_gradient(run(key)[0]), all_steps)

  keys = parts.example_keys(key, x.shape[0])

  def score(x_adv, objective):
    logits = logits_fn(x_adv)
    return logits.argmax(-1) != y, objective(logits)

  def restart(r, best):
    best_x, best_wrong, best_loss = best
    x_adv, objective = run(parts.fold_in(keys, r))
    wrong, value = score(x_adv, objective)
    better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (value > best_loss))
    return (jnp.where(parts.per_example(better, x), x_adv, best_x),
            best_wrong | wrong, jnp.where(better, value, best_loss))

  x_first, objective = run(parts.fold_in(keys, 0))
  best = jax.lax.fori_loop(1, restarts, restart, (x_first, *score(x_first, objective)))
  return AttackOutput(jax.lax.stop_gradient(best[0]), all_steps)


def fgsm(logits_fn, x, y, key, *, eps, loss=losses.cross_entropy, init='none'):
  """FGSM (Goodfellow et al.): one signed step of size eps, from x unless a random start is asked for."""
  return pgd(logits_fn, x, y, key, eps=eps, step_size=eps, steps=1, loss=loss, init=init)


class _EarlyStopState(NamedTuple):
  k: jax.Array          # iterations run
  x_adv: jax.Array
  counters: jax.Array   # per-example tau left
  active: jax.Array     # still attacking
  steps: jax.Array      # steps taken


def pgd_k_tau(logits_fn, x, y, key, *, eps, step_size, steps, tau, loss=losses.cross_entropy,
              init='uniform', clip_init=True, noise_std=0.0, budget=None):
  """Early-stopped PGD-K-tau, FAT's Algorithm 1 as its official code runs it (Zhang et al., ICML 2020).

  Each example carries a counter set to tau. Before every step the model checks the current point; a
  misclassified example with counter 0 stops where it is, one with counter > 0 decrements it and steps on;
  a correctly classified example steps without decrementing. The loop ends when every example has stopped or
  `steps` iterations ran (the point after the K-th step is never checked). So tau = 0 returns the first
  misclassified point, and tau >= K is exactly PGD-K.

  The batch keeps its shape and order: stopping is a per-example mask in a `lax.while_loop`.

  Args:
    tau: int scalar or (B,) array; may be traced, so a tau schedule does not recompile.
    budget: optional (B,) int array of per-example step budgets (<= steps); None means `steps` for all.
    Others as in `pgd`.
  Returns:
    AttackOutput whose `steps` are the per-example gradient steps taken (summed over a batch: FAT's BP count).
  """
  objective, x_adv, noise_keys = _start(logits_fn, x, y, key, loss, eps, init, clip_init)
  zeros = jnp.zeros_like(y, jnp.int32)   # per-example carries made from y: varying like it inside shard_map
  budget = zeros + (steps if budget is None else jnp.asarray(budget, jnp.int32))

  def body(s):
    logits, grad = _loss_and_grad(logits_fn, objective, s.x_adv)
    misclassified = s.active & (logits.argmax(-1) != y)
    stop = misclassified & (s.counters == 0)
    counters = s.counters - (misclassified & ~stop)
    active = s.active & ~stop & (s.k < budget)
    stepped = parts.signed_step(s.x_adv, x, grad, eps=eps, step_size=step_size,
                                noise_keys=parts.fold_in(noise_keys, s.k), noise_std=noise_std)
    x_adv = jnp.where(parts.per_example(active, x), stepped, s.x_adv)
    return _EarlyStopState(s.k + 1, x_adv, counters, active, s.steps + active)

  def cond(s):
    return (s.k < steps) & s.active.any()

  start = _EarlyStopState(jnp.int32(0), x_adv, zeros + jnp.asarray(tau, jnp.int32), zeros == 0, zeros)
  final = jax.lax.while_loop(cond, body, start)
  return AttackOutput(jax.lax.stop_gradient(final.x_adv), final.steps)
