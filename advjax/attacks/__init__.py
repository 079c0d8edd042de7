"""Pure, jit-able adversarial attacks: `attack(logits_fn, x, y, key, **hyperparameters) -> AttackOutput`."""
from advjax.attacks import losses, parts
from advjax.attacks.pgd import AttackOutput, early_stopped_pgd, fgsm, fosc, pgd, pgd_fosc, pgd_k_tau

__all__ = ['AttackOutput', 'early_stopped_pgd', 'fgsm', 'fosc', 'pgd', 'pgd_fosc', 'pgd_k_tau', 'losses', 'parts']
