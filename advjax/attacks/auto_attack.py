"""AutoAttack (Croce & Hein, ICML 2020) under L-inf, L2 or L1: the standard version (APGD-CE, APGD-T, FAB-T, Square)
and the 'plus' version's stages.

Each attack starts from the clean input and counts only on the points every earlier one left robust; points
misclassified when clean are never attacked. In this pure, jittable function the shapes are static: each stage runs
on the whole batch and keeps its result for the points still robust (the same outcome, since examples are
independent in eval mode), or, with `compact_min_size`, on the survivors gathered into the smallest of a few halving
sizes. `advjax.evaluate.evaluate` runs the stages as the official code does, each on the survivors only, gathered
into full batches on the host.
"""
import functools

import jax
import jax.numpy as jnp

from advjax.attacks import parts
from advjax.attacks.auto_pgd import apgd, apgd_targeted
from advjax.attacks.fab_attack import fab, fab_targeted
from advjax.attacks.iterative import AttackOutput, compaction_sizes
from advjax.attacks.square_attack import square


@functools.lru_cache(maxsize=64)   # the same attack objects for the same settings: their compiled forms are reused
def standard_stages(eps, *, norm='linf', steps=100, n_targets=None, square_queries=5000):
  """The standard cascade as (name, attack) pairs with the official defaults (`_set_version('standard')`): under
  L-inf and L2 one APGD-CE run and APGD-T over 9 targets; under L1 APGD-CE with 5 restarts and APGD-T over 5
  targets, both with the large-radius schedule (`use_largereps`). FAB-T takes 9 targets under every norm."""
  l1 = norm == 'l1'
  apgd_targets = n_targets or (5 if l1 else 9)
  n_targets = n_targets or 9
  return (
      ('APGD-CE', functools.partial(apgd, eps=eps, steps=steps, loss='ce', norm=norm, restarts=5 if l1 else 1,
                                    large_eps=l1)),
      ('APGD-T', functools.partial(apgd_targeted, eps=eps, steps=steps, n_targets=apgd_targets, norm=norm,
                                   large_eps=l1)),
      ('FAB-T', functools.partial(fab_targeted, eps=eps, steps=steps, n_targets=n_targets, norm=norm)),
      ('Square', functools.partial(square, eps=eps, n_queries=square_queries, norm=norm)),
  )


@functools.lru_cache(maxsize=64)
def plus_stages(eps, *, norm='linf', steps=100, n_targets=9, square_queries=5000, restarts=5):
  """The 'plus' cascade (`_set_version('plus')`): APGD-CE and APGD-DLR with 5 restarts, untargeted FAB with 5,
  Square, then APGD-T and FAB-T over 9 targets (under L1 too, without the large-radius schedule, as the official
  code, which only logs "please check" there)."""
  return (
      ('APGD-CE', functools.partial(apgd, eps=eps, steps=steps, loss='ce', norm=norm, restarts=restarts)),
      ('APGD-DLR', functools.partial(apgd, eps=eps, steps=steps, loss='dlr', norm=norm, restarts=restarts)),
      ('FAB', functools.partial(fab, eps=eps, steps=steps, norm=norm, restarts=restarts)),
      ('Square', functools.partial(square, eps=eps, n_queries=square_queries, norm=norm)),
      ('APGD-T', functools.partial(apgd_targeted, eps=eps, steps=steps, n_targets=n_targets, norm=norm)),
      ('FAB-T', functools.partial(fab_targeted, eps=eps, steps=steps, n_targets=n_targets, norm=norm)),
  )


def _stage_on(size, attack, logits_fn, x, y, keys):
  """One stage on the first `size` points still robust (gathered to the front, in order), merged back."""
  def run(carry):
    x_adv, robust, work = carry
    front = jnp.argsort(~robust, stable=True)[:size]
    out = attack(logits_fn, x[front], y[front], keys[front])
    attacked = robust[front]
    broken = attacked & (logits_fn(out.x_adv).argmax(-1) != y[front])
    x_adv = x_adv.at[front].set(jnp.where(parts.per_example(broken, out.x_adv), out.x_adv, x_adv[front]))
    return x_adv, robust.at[front].set(attacked & ~broken), work.at[front].add(jnp.where(attacked, out.steps, 0))
  return run


def autoattack(logits_fn, x, y, key, *, eps, compact_min_size=0, **stage_settings):
  """The worst case over the standard cascade: AttackOutput(x_adv, gradient evaluations or queries per example).

  compact_min_size > 0: each stage runs at the smallest of the static sizes B, B/2, B/4, ... (down to this) that
  holds the points still robust, gathered to the front (`lax.switch`; each size compiles every stage once more), as
  `early_stopped_pgd` compacts; the results are the same, since each example's draws come from its own key.
  """
  keys = parts.example_keys(key, x.shape[0])
  sizes = compaction_sizes(x.shape[0], compact_min_size) if compact_min_size else [x.shape[0]]
  carry = (x, logits_fn(x).argmax(-1) == y, jnp.zeros_like(y, jnp.int32))
  for stage, (_, attack) in enumerate(standard_stages(eps, **stage_settings)):
    stage_keys = parts.fold_in(keys, stage)
    branches = [lambda c: c] + [_stage_on(size, attack, logits_fn, x, y, stage_keys) for size in sizes]
    survivors = carry[1].sum()
    carry = jax.lax.switch(jnp.where(survivors > 0, (jnp.asarray(sizes) >= survivors).sum(), 0), branches, carry)
  return AttackOutput(jax.lax.stop_gradient(carry[0]), carry[2])
