"""AutoAttack (Croce & Hein, ICML 2020) under L-inf, L2 or L1: the standard version (APGD-CE, APGD-T, FAB-T, Square),
the 'plus' version and the 'rand' version (APGD-CE and APGD-DLR with EoT) for randomised models.

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


@functools.lru_cache(maxsize=64)
def rand_stages(eps, *, norm='linf', steps=100, eot_iter=20, randomized=False):
  """The 'rand' cascade for randomised models (`_set_version('rand')`): APGD-CE and APGD-DLR, one run each, every
  step's gradient averaged over 20 forwards (EoT). `randomized`: the model is `logits_fn(x, key)`."""
  return tuple((name, functools.partial(apgd, eps=eps, steps=steps, loss=loss, norm=norm, eot_iter=eot_iter,
                                        randomized=randomized))
               for name, loss in (('APGD-CE', 'ce'), ('APGD-DLR', 'dlr')))


VERSIONS = {'standard': standard_stages, 'plus': plus_stages, 'rand': rand_stages}


def _stage_on(size, attack, predict, x, y, keys, check_keys):
  """One stage on the first `size` points still robust (gathered to the front, in order), merged back."""
  def run(carry):
    x_adv, robust, work = carry
    front = jnp.argsort(~robust, stable=True)[:size]
    out = attack(x[front], y[front], keys[front])
    attacked = robust[front]
    broken = attacked & (predict(out.x_adv, check_keys[front]) != y[front])
    x_adv = x_adv.at[front].set(jnp.where(parts.per_example(broken, out.x_adv), out.x_adv, x_adv[front]))
    return x_adv, robust.at[front].set(attacked & ~broken), work.at[front].add(jnp.where(attacked, out.steps, 0))
  return run


def autoattack(logits_fn, x, y, key, *, eps, version='standard', randomized=False, compact_min_size=0,
               **stage_settings):
  """The worst case over a version's cascade ('standard', 'plus' or 'rand'): AttackOutput(x_adv, gradient
  evaluations or queries per example).

  randomized: `logits_fn(x, key)` is a randomised model (version 'rand' only); every forward, the robustness checks
  between stages too, is a fresh draw from the example's key, as the official code runs one forward per check.
  compact_min_size > 0: each stage runs at the smallest of the static sizes B, B/2, B/4, ... (down to this) that
  holds the points still robust, gathered to the front (`lax.switch`; each size compiles every stage once more), as
  `early_stopped_pgd` compacts; the results are the same, since each example's draws come from its own key.
  """
  if randomized and version != 'rand':
    raise ValueError(f"a randomised model takes version 'rand' (APGD with EoT), not {version!r}")
  keys = parts.example_keys(key, x.shape[0])
  check_keys = keys
  if randomized:   # the checks' draws from a stream of their own
    keys, check_keys = parts.split(keys)
    stage_settings['randomized'] = True
  predict = lambda v, k: (parts.one_draw(logits_fn, k)(v) if randomized else logits_fn(v)).argmax(-1)
  sizes = compaction_sizes(x.shape[0], compact_min_size) if compact_min_size else [x.shape[0]]
  carry = (x, predict(x, parts.fold_in(check_keys, 0)) == y, jnp.zeros_like(y, jnp.int32))
  for stage, (_, attack) in enumerate(VERSIONS[version](eps, **stage_settings)):
    run = functools.partial(attack, logits_fn)
    stage_keys, stage_checks = parts.fold_in(keys, stage), parts.fold_in(check_keys, stage + 1)
    branches = [lambda c: c] + [_stage_on(size, run, predict, x, y, stage_keys, stage_checks) for size in sizes]
    survivors = carry[1].sum()
    carry = jax.lax.switch(jnp.where(survivors > 0, (jnp.asarray(sizes) >= survivors).sum(), 0), branches, carry)
  return AttackOutput(jax.lax.stop_gradient(carry[0]), carry[2])
