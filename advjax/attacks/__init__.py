"""Pure, jit-able adversarial attacks: `attack(logits_fn, x, y, key, **hyperparameters) -> AttackOutput`.

`logits_fn` is any function x -> logits: a Flax or Haiku model closed over its weights, a jax.numpy function. Inputs
are in [0, 1]; eps, step sizes and budgets are scalars or one value per example. For example, FAT's early-stopped
PGD-10 with tau 2 on a model of your own, then its worst case over the standard AutoAttack:

  import jax
  from advjax import attacks

  def logits_fn(x):                       # yours: here a linear model on flattened images
    return x.reshape(x.shape[0], -1) @ w + b

  out = attacks.pgd_k_tau(logits_fn, x, y, jax.random.key(0), eps=8 / 255, step_size=2 / 255, steps=10, tau=2)
  out.x_adv, out.steps                    # the adversarial batch, each example's gradient steps
  worst = attacks.autoattack(logits_fn, x, y, jax.random.key(1), eps=8 / 255).x_adv

Attacks are built from `parts` (per-example keys, starts, the ascent step, the projections: L-inf, L2, L1) and
`losses` (what the attacker maximises), so a new attack is a few lines: see `iterative.pgd`.
"""
from advjax.attacks import losses, parts
from advjax.attacks.auto_pgd import apgd, apgd_targeted
from advjax.attacks.auto_attack import autoattack
from advjax.attacks.fab_attack import fab, fab_targeted
from advjax.attacks.iterative import (AttackOutput, compaction_sizes, early_stopped_pgd, fgsm, fosc, per_example_pgd,
                                      pgd, pgd_fosc, pgd_k_tau)
from advjax.attacks.square_attack import square

__all__ = ['AttackOutput', 'apgd', 'apgd_targeted', 'autoattack', 'compaction_sizes', 'early_stopped_pgd', 'fab',
           'fab_targeted', 'fgsm', 'fosc', 'per_example_pgd', 'pgd', 'pgd_fosc', 'pgd_k_tau', 'square', 'losses',
           'parts']
