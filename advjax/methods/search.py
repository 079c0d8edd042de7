"""The search-based training methods' parts: how each attacks, what it minimises, which settings change by epoch.

These methods (`methods.METHODS`) are three builders, each taking the config:
- `attack(config) -> attack(logits_fn, x, y, key, hparams) -> AttackOutput` makes the training points (the model in
  eval mode; PGD's also takes `model_state=` with a training-mode forward, see `step.attack_then_loss_step`);
- `loss(config) -> loss(forward, model_state, x, x_adv, y, weights=None) -> (loss, (adversarial logits,
  model_state))` is the outer loss, where `forward(v, model_state) -> (logits, model_state)` runs the model in
  training mode and threads its BatchNorm state, so a method uses as many forwards, in the order, its official code
  does; `weights` are per-example weights of its mean over the batch (the attack's `loss_weights`: DAT's);
- `hparams(config, epoch) -> dict` gives the epoch's scheduled attack settings (tau, FOSC threshold), passed
  into the jitted step as traced scalars so that a schedule never recompiles.
"""
import jax
import jax.numpy as jnp
import optax
from jax.scipy.special import xlogy

from advjax import attacks, schedules
from advjax.attacks import losses


# --- Outer losses ------------------------------------------------------------------------------------------------------

def cross_entropy(logits, y):
  """Per-example CE(logits, y) with integer labels."""
  return optax.softmax_cross_entropy_with_integer_labels(logits, y)


def smoothed_cross_entropy(logits, y, confidence):
  """CE against `confidence` on y and (1 - confidence) / (C - 1) on each other class (the Jia et al. repos' LS-CE;
  confidence 1 is plain CE)."""
  num_classes = logits.shape[-1]
  targets = jax.nn.one_hot(y, num_classes) * (confidence - (1 - confidence) / (num_classes - 1))
  targets = targets + (1 - confidence) / (num_classes - 1)
  return optax.softmax_cross_entropy(logits, targets)


def kl_divergence(target_logits, logits):
  """Per-example KL(p_target || p) summed over classes; gradients flow into both (TRADES does not detach)."""
  target_log_probs = jax.nn.log_softmax(target_logits)
  return jnp.sum(jnp.exp(target_log_probs) * (target_log_probs - jax.nn.log_softmax(logits)), axis=-1)


def batch_mean(per_example, weights=None):
  """The batch mean of per-example values, optionally weighted: mean_i(w_i v_i)."""
  return per_example.mean() if weights is None else (weights * per_example).mean()


def _mean_at_adversarial(per_example_loss):
  """The outer loss mean_i(w_i per_example_loss(f(x'_i), y_i)), one training-mode forward at the adversarial points."""
  def loss(forward, model_state, x, x_adv, y, weights=None):
    del x
    logits, model_state = forward(x_adv, model_state)
    return batch_mean(per_example_loss(logits, y), weights), (logits, model_state)

  return loss


def madry_loss(config):
  """Madry et al. (and FAT, CAT): mean cross-entropy on the adversarial points."""
  del config
  return _mean_at_adversarial(cross_entropy)


def keras_cross_entropy(logits, y):
  """DAT's `losses.py` CE on the softmax outputs: p_y clipped to [1e-7, 1 - 1e-7] (Keras' epsilon), so an example
  with p_y outside passes no gradient (seen in tests/official/test_search_dat.py once a step made examples confidently
  wrong)."""
  p = jnp.take_along_axis(jax.nn.softmax(logits), y[:, None], axis=-1)[:, 0]
  return -jnp.log(jnp.clip(p, 1e-7, 1 - 1e-7))


def dat_loss(config):
  """DAT: the (optionally weighted, see `fosc_attack`) mean of Keras' CE on the adversarial points."""
  del config
  return _mean_at_adversarial(keras_cross_entropy)


FORWARD_ORDERS = ('natural_first', 'adversarial_first')


def _natural_and_adversarial(config, forward, model_state, x, x_adv):
  """The training-mode logits of x and x_adv, computed in `config.forward_order`: the order BatchNorm's running
  statistics see them in (the official FAT-for-TRADES: natural first, FAT-for-MART: adversarial first, both
  tests/official/test_search_fat.py; TRADES' and MART's code, read: natural first)."""
  if config.get('forward_order', 'natural_first') == 'adversarial_first':
    adv_logits, model_state = forward(x_adv, model_state)
    natural_logits, model_state = forward(x, model_state)
  else:
    natural_logits, model_state = forward(x, model_state)
    adv_logits, model_state = forward(x_adv, model_state)
  return natural_logits, adv_logits, model_state


def trades_loss(config):
  """TRADES: CE(f(x), y) + beta * mean_i KL(p(x_i) || p(x'_i)), all forwards in training mode.

  The natural logits of a training-mode forward feed both the CE and the KL target, which is not detached, as in
  the official code. By default two forwards in `forward_order` (FAT-for-TRADES': natural first). `trades_forwards
  = 3` repeats the official `trades.py` exactly (natural, adversarial, natural again for the KL target: the same
  gradient, but BatchNorm running statistics updated three times).
  """
  beta, forwards = config.beta, config.get('trades_forwards', 2)

  def loss(forward, model_state, x, x_adv, y, weights=None):
    natural_logits, adv_logits, model_state = _natural_and_adversarial(config, forward, model_state, x, x_adv)
    target_logits = natural_logits
    if forwards == 3:
      target_logits, model_state = forward(x, model_state)
    per_example = cross_entropy(natural_logits, y) + beta * kl_divergence(target_logits, adv_logits)
    return batch_mean(per_example, weights), (adv_logits, model_state)

  return loss


def mart_terms(natural_logits, adv_logits, y):
  """MART's per-example boosted CE and weighted KL, with the official code's constants (Wang et al., ICLR 2020)."""
  adv_probs = jax.nn.softmax(adv_logits)
  top2 = jax.lax.top_k(adv_probs, 2)[1]
  runner_up = jnp.where(top2[:, 0] == y, top2[:, 1], top2[:, 0])   # most likely wrong class
  runner_up_prob = jnp.take_along_axis(adv_probs, runner_up[:, None], axis=-1)[:, 0]
  boosted_ce = cross_entropy(adv_logits, y) - jnp.log(1.0001 - runner_up_prob + 1e-12)
  natural_probs = jax.nn.softmax(natural_logits)
  # PyTorch's KLDivLoss: p log p - p log q, with 0 log 0 = 0.
  kl = jnp.sum(xlogy(natural_probs, natural_probs) - natural_probs * jnp.log(adv_probs + 1e-12), axis=-1)
  true_prob = jnp.take_along_axis(natural_probs, y[:, None], axis=-1)[:, 0]
  return boosted_ce, kl * (1.0000001 - true_prob)


def mart_loss(config):
  """MART: mean BCE(x') + beta * mean KL(p(x) || p(x')) (1 - p_y(x)); nothing detached; forwards in
  `forward_order`."""
  beta = config.beta

  def loss(forward, model_state, x, x_adv, y, weights=None):
    natural_logits, adv_logits, model_state = _natural_and_adversarial(config, forward, model_state, x, x_adv)
    boosted_ce, weighted_kl = mart_terms(natural_logits, adv_logits, y)
    return batch_mean(boosted_ce + beta * weighted_kl, weights), (adv_logits, model_state)

  return loss


# --- Attacks -----------------------------------------------------------------------------------------------------------

def _attack_settings(config):
  a = config.attack
  return dict(eps=a.eps, step_size=a.step_size, loss=losses.get(a.loss, a.kappa), init=a.init,
              clip_init=a.clip_init, noise_std=a.noise_std, norm=a.norm)


def pgd_attack(config):
  """PGD-K (Madry, TRADES, MART); `model_state` for a model in training mode (see `attacks.pgd`)."""
  settings = _attack_settings(config)
  return lambda logits_fn, x, y, key, hp, model_state=None: attacks.pgd(
      logits_fn, x, y, key, steps=config.attack.steps, model_state=model_state, **settings)


def early_stopped_attack(config):
  """PGD-K-tau (the FAT family), tau from `hparams`; `attack.misaligned_labels`: the pre-2021 `earlystop.py`'s
  label check (see `attacks.pgd_k_tau`), per device."""
  settings = dict(_attack_settings(config), compact_min_size=config.attack.compact_min_size,
                  misaligned_labels=config.attack.get('misaligned_labels', False))
  return lambda logits_fn, x, y, key, hp: attacks.pgd_k_tau(logits_fn, x, y, key, steps=config.attack.steps,
                                                            tau=hp['tau'], **settings)


def fosc_attack(config):
  """DAT's FOSC-stopped PGD, threshold c_t from `hparams`; and, where `hparams['weight_by_adversarial_ce']`, the
  outer loss's weights.

  The weights are the official `train_models.py`'s from its second epoch on (not in the paper): each example's CE
  at its adversarial point, max(-log(p_y + 1e-12), 0), from an eval-mode forward (`model.predict`), detached, and
  divided by the share of non-zero weights as Keras' `train_on_batch(sample_weight=...)` does.
  """
  settings = dict(_attack_settings(config), compact_min_size=config.attack.compact_min_size)

  def attack(logits_fn, x, y, key, hp):
    out = attacks.pgd_fosc(logits_fn, x, y, key, steps=config.attack.steps, threshold=hp['fosc_threshold'],
                           reference=config.fosc.reference, **settings)
    if 'weight_by_adversarial_ce' not in hp:
      return out
    probs = jax.nn.softmax(logits_fn(out.x_adv))
    ce = jnp.maximum(-jnp.log(jnp.take_along_axis(probs, y[:, None], axis=-1)[:, 0] + 1e-12), 0.0)
    weights = jax.lax.stop_gradient(ce / (ce != 0).mean())
    return out._replace(loss_weights=jnp.where(hp['weight_by_adversarial_ce'], weights, 1.0))

  return attack


# --- Schedules ---------------------------------------------------------------------------------------------------------

def no_hparams(config, epoch):
  """Methods whose attack does not change by epoch."""
  del config, epoch
  return {}


def tau_hparams(config, epoch):
  """FAT: the epoch's tau from `config.tau_schedule`."""
  return dict(tau=schedules.value_at(config.tau_schedule, epoch))


def fosc_hparams(config, epoch):
  """DAT: c_t = c_max (1 - (epoch - 1) / decay_epochs), floored at 0 (`train_models.py`, epochs from 0 there), and
  the loss weights from the second epoch on, where `fosc.weight_by_adversarial_ce`."""
  f = config.fosc
  settings = dict(fosc_threshold=max(f.c_max * (1 - (epoch - 1) / f.decay_epochs), 0.0))
  if f.get('weight_by_adversarial_ce'):
    settings['weight_by_adversarial_ce'] = epoch > 1
  return settings
