"""Pure, jit-able adversarial attacks: `attack(logits_fn, x, y, key, **hyperparameters) -> AttackOutput`."""
from advjax.attacks import losses, parts
from advjax.attacks.auto_pgd import apgd, apgd_targeted
from advjax.attacks.auto_attack import autoattack
from advjax.attacks.fab import fab_targeted
from advjax.attacks.iterative import (AttackOutput, compaction_sizes, early_stopped_pgd, fgsm, fosc, per_example_pgd,
                                      pgd, pgd_fosc, pgd_k_tau)
from advjax.attacks.square_attack import square

__all__ = ['AttackOutput', 'apgd', 'apgd_targeted', 'autoattack', 'compaction_sizes', 'early_stopped_pgd',
           'fab_targeted', 'fgsm', 'fosc', 'per_example_pgd', 'pgd', 'pgd_fosc', 'pgd_k_tau', 'square', 'losses', 'parts']
