"""The per-device train and eval steps, mapped over a 1-D device mesh (pmap semantics via jit(shard_map)).

Inside a step each device sees its shard of the global batch. Gradients and metrics are averaged or summed across
devices explicitly; BatchNorm statistics are averaged across devices by the model itself (`bn_axis_name`), so a run
computes the same function whatever the number of devices, or per device with `bn_stats='per_device'`.
"""
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from advjax import attacks, objectives, schedules
from advjax.attacks import losses

AXIS = 'data'


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema: Any = None   # dict(params, batch_stats): exponential moving averages of the weights, when kept

  @property
  def variables(self):
    """What `model.apply` takes for the raw weights."""
    return dict(params=self.params, batch_stats=self.batch_stats)


def make_mesh(devices=None):
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (AXIS,), devices=devices)


def make_optimizer(config, steps_per_epoch):
  """SGD with momentum and coupled weight decay (PyTorch's `SGD(weight_decay=...)`), LR piecewise by epoch."""
  o = config.optimizer
  return optax.chain(
      optax.add_decayed_weights(o.weight_decay),
      optax.sgd(schedules.per_step(config.lr_schedule, steps_per_epoch), momentum=o.momentum, nesterov=o.nesterov))


def create_train_state(model, tx, input_shape, key, mesh, ema=False):
  """Initial state (float32 parameters and optimiser state whatever the compute dtype), replicated on the mesh."""
  @functools.partial(jax.jit, out_shardings=NamedSharding(mesh, P()))
  def init():
    variables = model.init(key, jnp.zeros((1, *input_shape)), train=False)
    params = variables['params']
    return TrainState(step=jnp.int32(0), params=params, batch_stats=variables['batch_stats'],
                      opt_state=tx.init(params), ema=dict(variables) if ema else None)
  return init()


def update_ema(ema, variables, step, decay):
  """One EMA step with TensorFlow's warm-up: the decay is min(decay, (1 + t) / (10 + t)) at step t."""
  step = jnp.asarray(step, jnp.float32)
  decay = jnp.minimum(decay, (1 + step) / (10 + step))
  return optax.incremental_update(variables, ema, 1 - decay)


def example_keys(key, step, indices):
  """One key per example from (key, step, dataset index): noise that does not depend on the device split."""
  step_key = jax.random.fold_in(key, step)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, indices)


def zero_metrics(config):
  """The running metric sums a train step adds to, before the first step."""
  names = ('loss', 'adv_correct', 'attack_steps', 'examples')
  names += ('fosc',) if objectives.METHODS[config.method].hparams is objectives.fosc_hparams else ()
  return {name: jnp.zeros((), jnp.float32) for name in names}


def make_train_step(model, tx, config, mesh, key):
  """Jitted `train_step(state, batch, hparams, sums) -> (state, sums + this step's metric sums)`.

  `hparams` holds the epoch's scheduled attack settings (`objectives.Method.hparams`); they are traced, so a
  schedule never recompiles. Metrics are summed inside the step: no host sync per step, and no second multi-device
  program in flight beside it (XLA:CPU can deadlock two programs' collectives on a small thread pool).
  """
  method = objectives.METHODS[config.method]
  attack, outer_loss = method.attack(config), method.loss(config)
  per_device_bn = config.bn_stats == 'per_device'

  def step(state, batch, hparams, sums):
    x, y = batch['image'], batch['label']
    logits_fn = lambda v: model.apply(state.variables, v, train=False)
    adv = attack(logits_fn, x, y, example_keys(key, state.step, batch['index']), hparams)

    def loss_fn(params):
      def forward(v, batch_stats):
        logits, updates = model.apply(dict(params=params, batch_stats=batch_stats), v, train=True,
                                      mutable=['batch_stats'])
        return logits, updates['batch_stats']
      return outer_loss(forward, state.batch_stats, x, adv.x_adv, y)

    # Differentiate a device-varying copy of the parameters: the gradient stays per device (as under pmap) rather
    # than being summed across devices implicitly, and the explicit pmean below averages it.
    local_params = jax.lax.pcast(state.params, AXIS, to='varying')
    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(local_params)
    grads = jax.lax.pmean(grads, AXIS)
    if per_device_bn:
      batch_stats = jax.lax.pmean(batch_stats, AXIS)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                       batch_stats=batch_stats, opt_state=opt_state, ema=state.ema)
    if state.ema is not None:
      state = state.replace(ema=update_ema(state.ema, state.variables, state.step - 1, config.ema_decay))
    metrics = dict(loss=loss * y.shape[0], adv_correct=(logits.argmax(-1) == y).sum(),
                   attack_steps=adv.steps.sum(), examples=y.shape[0])
    if adv.fosc is not None:
      metrics['fosc'] = adv.fosc.sum()
    metrics = jax.lax.psum(jax.tree.map(lambda v: jnp.asarray(v, jnp.float32), metrics), AXIS)
    return state, jax.tree.map(jnp.add, sums, metrics)

  mapped = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(AXIS), P(), P()), out_specs=(P(), P()))
  return jax.jit(mapped, donate_argnums=0)


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
