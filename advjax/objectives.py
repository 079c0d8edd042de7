"""Training methods: how each one attacks and what it minimises.

A method is a small record. `attack(logits_fn, x, y, key, tau)` makes the training points (the model in eval mode);
`loss(forward, model_state, x, x_adv, y)` is the outer loss, where `forward(v, model_state) -> (logits,
model_state)` runs the model in training mode and threads its BatchNorm state, so a method may use as many forwards
as its paper does.
"""
import functools
from typing import Callable, NamedTuple

import optax

from advjax import attacks
from advjax.attacks import losses


class Method(NamedTuple):
  early_stopped: bool   # PGD-K-tau (the FAT family) or PGD-K
  loss: Callable


def madry_loss(forward, model_state, x, x_adv, y):
  """Madry et al.: mean cross-entropy on the adversarial points."""
  del x
  logits, model_state = forward(x_adv, model_state)
  return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), (logits, model_state)


METHODS = {
    'madry': Method(early_stopped=False, loss=madry_loss),   # PGD-AT
    'fat': Method(early_stopped=True, loss=madry_loss),      # FAT (Zhang et al., 2020)
}


def training_attack(config):
  """The method's attack from `config.attack`, as `attack(logits_fn, x, y, key, tau)`."""
  a = config.attack
  kwargs = dict(eps=a.eps, step_size=a.step_size, steps=a.steps, loss=losses.get(a.loss, a.kappa), init=a.init,
                clip_init=a.clip_init, noise_std=a.noise_std)
  if METHODS[config.method].early_stopped:
    return lambda logits_fn, x, y, key, tau: attacks.pgd_k_tau(logits_fn, x, y, key, tau=tau, **kwargs)
  attack = functools.partial(attacks.pgd, **kwargs)
  return lambda logits_fn, x, y, key, tau: attack(logits_fn, x, y, key)
