"""AutoAttack (Croce & Hein, ICML 2020) under L-inf or L2: the standard version (APGD-CE, APGD-T, FAB-T, Square) and
the 'plus' version's stages.

Each attack starts from the clean input and counts only on the points every earlier one left robust; points
misclassified when clean are never attacked. In this pure, jittable function the shapes are fixed: each stage runs on
the whole batch and its result is kept only for the points still robust (the same outcome, since examples are
independent in eval mode, at the cost of attacking broken points too). `advjax.evaluate.evaluate` runs the same
stages as the official code does, each on the survivors only, gathered into full batches on the host.
"""
import functools

import jax
import jax.numpy as jnp

from advjax.attacks import parts
from advjax.attacks.auto_pgd import apgd, apgd_targeted
from advjax.attacks.fab_attack import fab, fab_targeted
from advjax.attacks.iterative import AttackOutput
from advjax.attacks.square_attack import square


@functools.lru_cache(maxsize=64)   # the same attack objects for the same settings: their compiled forms are reused
def standard_stages(eps, *, norm='linf', steps=100, n_targets=9, square_queries=5000):
  """The standard cascade under L-inf or L2 as (name, attack) pairs, with the official defaults (the same for both
  norms: `_set_version('standard')`)."""
  return (
      ('APGD-CE', functools.partial(apgd, eps=eps, steps=steps, loss='ce', norm=norm)),
      ('APGD-T', functools.partial(apgd_targeted, eps=eps, steps=steps, n_targets=n_targets, norm=norm)),
      ('FAB-T', functools.partial(fab_targeted, eps=eps, steps=steps, n_targets=n_targets, norm=norm)),
      ('Square', functools.partial(square, eps=eps, n_queries=square_queries, norm=norm)),
  )


@functools.lru_cache(maxsize=64)
def plus_stages(eps, *, norm='linf', steps=100, n_targets=9, square_queries=5000, restarts=5):
  """The 'plus' cascade (`_set_version('plus')`): APGD-CE and APGD-DLR with 5 restarts, untargeted FAB with 5,
  Square, then APGD-T and FAB-T over 9 targets."""
  return (
      ('APGD-CE', functools.partial(apgd, eps=eps, steps=steps, loss='ce', norm=norm, restarts=restarts)),
      ('APGD-DLR', functools.partial(apgd, eps=eps, steps=steps, loss='dlr', norm=norm, restarts=restarts)),
      ('FAB', functools.partial(fab, eps=eps, steps=steps, norm=norm, restarts=restarts)),
      ('Square', functools.partial(square, eps=eps, n_queries=square_queries, norm=norm)),
      ('APGD-T', functools.partial(apgd_targeted, eps=eps, steps=steps, n_targets=n_targets, norm=norm)),
      ('FAB-T', functools.partial(fab_targeted, eps=eps, steps=steps, n_targets=n_targets, norm=norm)),
  )


def autoattack(logits_fn, x, y, key, *, eps, **stage_settings):
  """The worst case over the standard cascade: AttackOutput(x_adv, gradient evaluations or queries per example)."""
  keys = parts.example_keys(key, x.shape[0])
  x_adv, robust = x, logits_fn(x).argmax(-1) == y
  work = jnp.zeros_like(y, jnp.int32)
  for stage, (_, attack) in enumerate(standard_stages(eps, **stage_settings)):
    out = attack(logits_fn, x, y, parts.fold_in(keys, stage))
    broken = robust & (logits_fn(out.x_adv).argmax(-1) != y)
    x_adv = jnp.where(parts.per_example(broken, x), out.x_adv, x_adv)
    work = work + jnp.where(robust, out.steps, 0)
    robust = robust & ~broken
  return AttackOutput(jax.lax.stop_gradient(x_adv), work)
