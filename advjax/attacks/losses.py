"""Attack objectives, each a per-example loss that the attacker *maximises*.

An attack loss is a factory `loss(logits_fn, x, y) -> objective`, where `objective(logits)` returns one value
per example. The factory runs once before the attack loop, so a loss that needs the clean prediction (TRADES' KL)
computes it once and the others pay nothing.
"""
import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits_fn, x, y):
  """CE(f(x'), y): Madry, FAT, MART and most evaluations."""
  del logits_fn, x
  return lambda logits: optax.softmax_cross_entropy_with_integer_labels(logits, y)


def kl_to_clean(logits_fn, x, y):
  """KL(p(x) || p(x')) against the clean prediction, computed once (TRADES, FAT-TRADES)."""
  del y
  clean_log_probs = jax.nn.log_softmax(logits_fn(x))

  def objective(logits):
    log_probs = jax.nn.log_softmax(logits)
    return jnp.sum(jnp.exp(clean_log_probs) * (clean_log_probs - log_probs), axis=-1)

  return objective


def logit_margin(logits, y):
  """z_y - max_{j != y} z_j: positive where the example is classified correctly."""
  true_logit = jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]
  others = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
  return true_logit - others.max(axis=-1)


def margin(kappa=None):
  """CW-style margin loss: -max(margin + kappa, 0), or -margin when kappa is None.

  FAT's CW evaluation uses kappa = 50; the Jia et al. repositories use the plain margin (kappa None).
  """
  def factory(logits_fn, x, y):
    del logits_fn, x
    if kappa is None:
      return lambda logits: -logit_margin(logits, y)
    return lambda logits: -jax.nn.relu(logit_margin(logits, y) + kappa)

  return factory


def get(name, kappa=None):
  """The attack loss called `name` in configs: 'ce', 'kl' or 'cw'."""
  losses = {'ce': cross_entropy, 'kl': kl_to_clean, 'cw': margin(kappa)}
  if name not in losses:
    raise ValueError(f'unknown attack loss {name!r}; choose one of {sorted(losses)}')
  return losses[name]
