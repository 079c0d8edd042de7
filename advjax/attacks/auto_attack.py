"""AutoAttack (Croce & Hein, ICML 2020), the standard L-inf version: APGD-CE, APGD-T, FAB-T, Square.

Each attack starts from the clean input and counts only on the points every earlier one left robust; points
misclassified when clean are never attacked. With fixed shapes each stage runs on the whole batch and its result is
kept only for the points still robust: the same outcome, since examples are independent in eval mode.
"""
import functools

import jax
import jax.numpy as jnp

from advjax.attacks import parts
from advjax.attacks.auto_pgd import apgd, apgd_targeted
from advjax.attacks.fab import fab_targeted
from advjax.attacks.iterative import AttackOutput
from advjax.attacks.square_attack import square


def standard_stages(eps, *, steps=100, n_targets=9, square_queries=5000):
  """The standard cascade as (name, attack) pairs, with the official defaults."""
  return (
      ('APGD-CE', functools.partial(apgd, eps=eps, steps=steps, loss='ce')),
      ('APGD-T', functools.partial(apgd_targeted, eps=eps, steps=steps, n_targets=n_targets)),
      ('FAB-T', functools.partial(fab_targeted, eps=eps, steps=steps, n_targets=n_targets)),
      ('Square', functools.partial(square, eps=eps, n_queries=square_queries)),
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
