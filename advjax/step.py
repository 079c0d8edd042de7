"""The per-device train and eval steps, mapped over a 1-D device mesh (pmap semantics via jit(shard_map)).

Inside a step each device sees its shard of the global batch. Gradients and metrics are averaged or summed across
devices explicitly; BatchNorm statistics are averaged across devices by the model itself (`bn_axis_name`), so a step
computes the same function whatever the number of devices, or per device with `bn_stats='per_device'`.
"""
import jax
import jax.numpy as jnp
import optax
from jax.sharding import PartitionSpec as P

from advjax import attacks, awp, methods, schedules
from advjax import train_state as ts
from advjax.train_state import AXIS, example_keys
from advjax.attacks import losses


def make_optimizer(config, steps_per_epoch):
  """SGD with momentum and coupled weight decay (PyTorch's `SGD(weight_decay=...)`), LR by epoch.

  Methods that update the weights more than once per batch (Free-AT's replays) count their updates per epoch.
  """
  o = config.optimizer
  updates_per_epoch = steps_per_epoch * methods.METHODS[config.method].updates_per_batch(config)
  lr = schedules.per_step(config.lr_schedule, updates_per_epoch, config.lr_interpolation)
  return optax.chain(optax.add_decayed_weights(o.weight_decay),
                     optax.sgd(lr, momentum=o.momentum, nesterov=o.nesterov))


def zero_metrics(config):
  """The running metric sums a train step adds to, before the first step; and `first_nonfinite_step`, the first
  optimiser step after which the loss or the weights were not finite (inf while there is none)."""
  names = ('loss', 'adv_correct', 'attack_steps', 'examples') + methods.METHODS[config.method].extra_metrics
  return {name: jnp.zeros((), jnp.float32) for name in names} | {'first_nonfinite_step': jnp.float32(jnp.inf)}


def attack_then_loss_step(model, tx, config, key):
  """The per-device step of the search-based methods: the method's attack on the model in eval mode, then one
  optimiser step on its outer loss in training mode, at AWP-perturbed weights when `hparams['awp_gamma'] > 0`."""
  method = methods.METHODS[config.method]
  attack, outer_loss = method.attack(config), method.loss(config)

  def step(state, batch, hparams):
    x, y = batch['image'], batch['label']
    logits_fn = lambda v: model.apply(state.variables, v, train=False)
    adv = attack(logits_fn, x, y, example_keys(key, state.step, batch['index']), hparams)

    def loss_fn(params):
      forward = lambda v, batch_stats: ts.train_forward(model, params, batch_stats, v)
      return outer_loss(forward, state.batch_stats, x, adv.x_adv, y)

    perturbed = awp.perturb(loss_fn, state.params, hparams.get('awp_gamma', 0.0))
    (loss, (logits, batch_stats)), grads = ts.local_value_and_grad(loss_fn, perturbed)
    state = ts.apply_gradients(state, tx, grads, batch_stats, config=config, at_params=perturbed)
    metrics = dict(loss=loss * y.shape[0], adv_correct=(logits.argmax(-1) == y).sum(),
                   attack_steps=adv.steps.sum(), examples=y.shape[0])
    if adv.fosc is not None:
      metrics['fosc'] = adv.fosc.sum()
    return state, metrics

  return step


def make_train_step(model, tx, config, mesh, key):
  """Jitted `train_step(state, batch, hparams, sums) -> (state, sums + this step's metric sums)`.

  The method's per-device step (`methods.Method.step`) runs under `shard_map`. `hparams` holds the epoch's
  scheduled settings (`methods.Method.hparams`); they are traced, so a schedule never recompiles. Metrics are summed
  inside the step: no host sync per step, and no second multi-device program in flight beside it (XLA:CPU can
  deadlock two programs' collectives on a small thread pool).
  """
  per_device = (methods.METHODS[config.method].step or attack_then_loss_step)(model, tx, config, key)

  def step(state, batch, hparams, sums):
    first_step = state.step
    state, metrics = per_device(state, batch, hparams)
    metrics = jax.lax.psum(jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), metrics), AXIS)
    finite = jnp.isfinite(metrics['loss']) & all_finite(state.params)
    nonfinite_step = jnp.minimum(sums['first_nonfinite_step'], jnp.where(finite, jnp.inf, first_step))
    return state, {name: sums[name] + value for name, value in metrics.items()} | dict(
        first_nonfinite_step=nonfinite_step)

  def train_step(state, batch, hparams, sums):
    state_specs = ts.specs(state)
    return jax.shard_map(step, mesh=mesh, in_specs=(state_specs, P(AXIS), P(), P()),
                         out_specs=(state_specs, P()))(state, batch, hparams, sums)

  return jax.jit(train_step, donate_argnums=0)


def all_finite(tree):
  return jnp.all(jnp.stack([jnp.isfinite(leaf).all() for leaf in jax.tree.leaves(tree)]))


def make_eval_step(model, config, mesh, key):
  """Jitted `eval_step(variables, batch) -> metric sums`: natural and PGD accuracy under `config.eval`."""
  e = config.eval
  kwargs = dict(eps=e.eps, step_size=e.step_size, steps=e.steps, loss=losses.get(e.loss, e.kappa), init=e.init,
                clip_init=e.clip_init, restarts=e.restarts)

  def step(variables, batch):
    x, y, mask = batch['image'], batch['label'], batch['mask']
    logits_fn = lambda v: model.apply(variables, v, train=False)
    adv = attacks.pgd(logits_fn, x, y, example_keys(key, 0, batch['index']), **kwargs)
    correct = lambda v: ((logits_fn(v).argmax(-1) == y) & mask).sum()
    metrics = dict(natural_correct=correct(x), pgd_correct=correct(adv.x_adv), examples=mask.sum())
    return jax.lax.psum(metrics, AXIS)

  return jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P()))
