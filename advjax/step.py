"""The per-device train and eval steps, mapped over a 1-D device mesh (pmap semantics via jit(shard_map)).

Inside a step each device sees its shard of the global batch. Gradients and metrics are averaged or summed across
devices explicitly; BatchNorm statistics are averaged across devices by the model itself (`bn_axis_name`), so a step
computes the same function whatever the number of devices, or per device with `bn_stats='per_device'`.
"""
import jax
import jax.numpy as jnp
import optax
from flax import traverse_util
from jax.sharding import PartitionSpec as P

from advjax import attacks, methods, schedules
from advjax.methods import awp
from advjax import train_state as ts
from advjax.train_state import AXIS, example_keys
from advjax.attacks import losses


def make_optimizer(config, steps_per_epoch):
  """SGD with momentum and coupled weight decay (PyTorch's `SGD(weight_decay=...)`), LR by epoch; or, with
  `optimizer.name='adam'`, PyTorch's `Adam` (betas 0.9 / 0.999, eps 1e-8, the same coupled decay) (CAT).

  Methods that update the weights more than once per batch (Free-AT's replays) count their updates per epoch.
  `optimizer.weight_decay_on='kernels'` decays only the convolution and dense kernels, as Keras' and TF's L2
  regularisers on kernels do (DAT, Free-AT). `optimizer.keras_time_decay=d` is Keras 2's `SGD(decay=d)` (DAT): the
  LR divided by 1 + d t at update t (from 0), in Keras' velocity form v <- mu v - lr g, w <- w + v, which differs
  from PyTorch's w <- w - lr (mu b + g) once the LR changes. `optimizer.lr_at_batch_end`: each update's LR is the
  schedule at the end of its batch (AT-AWP, FGSM-GA; see `schedules.per_step`).
  """
  o = config.optimizer
  updates_per_epoch = steps_per_epoch * methods.METHODS[config.method].updates_per_batch(config)
  lr = schedules.per_step(config.lr_schedule, updates_per_epoch, config.lr_interpolation,
                          at_batch_end=o.get('lr_at_batch_end', False))
  kernels = lambda params: traverse_util.path_aware_map(lambda path, _: path[-1] == 'kernel', params)
  decay = optax.add_decayed_weights(o.weight_decay, mask=kernels if o.get('weight_decay_on') == 'kernels' else None)
  if o.get('name', 'sgd') == 'adam':
    return optax.chain(decay, optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8))
  time_decay = o.get('keras_time_decay', 0.0)
  if time_decay:
    keras_lr = lambda count: lr(count) / (1 + time_decay * count)
    return optax.chain(decay, optax.scale_by_learning_rate(keras_lr), optax.trace(o.momentum, nesterov=o.nesterov))
  return optax.chain(decay, optax.sgd(lr, momentum=o.momentum, nesterov=o.nesterov))


def zero_metrics(config):
  """The running metric sums a train step adds to, before the first step; and `first_nonfinite_step`, the first
  optimiser step after which the loss or the weights were not finite (inf while there is none)."""
  names = ('loss', 'adv_correct', 'attack_steps', 'examples') + methods.METHODS[config.method].extra_metrics
  return {name: jnp.zeros((), jnp.float32) for name in names} | {'first_nonfinite_step': jnp.float32(jnp.inf)}


def attack_then_loss_step(model, tx, config, key):
  """The per-device step of the search-based methods: the method's attack, then one optimiser step on its outer loss
  in training mode, at AWP-perturbed weights when `hparams['awp_gamma'] > 0`.

  The attack sees the model in `attack.model_mode`: 'eval' (the default); 'train', every forward of the attack
  updating BatchNorm (PGD's attacks); or 'train_except_after_eval', as AT-AWP's `train_cifar10.py`, whose model stays
  in training mode except in the first batch after each epoch's evaluation (`hparams['eval_mode_step']`).
  `attack.score_forward` adds a forward at the attack's result (the restart selection of Rice et al.'s `attack_pgd`,
  which AT-AWP runs for its one restart): in training mode it updates BatchNorm. `clean_forward_after_step`: a
  training-mode forward on the natural batch at the new weights (AT-AWP's clean training accuracy), which does too.
  """
  method = methods.METHODS[config.method]
  attack, outer_loss = method.attack(config), method.loss(config)
  mode, score_forward = config.attack.get('model_mode', 'eval'), config.attack.get('score_forward', False)

  def attack_in_mode(train_mode, state, x, y, keys, hparams):
    """The attack's output and the BatchNorm statistics after it."""
    if not train_mode:
      return attack(lambda v: model.apply(state.variables, v, train=False), x, y, keys, hparams), state.batch_stats
    forward = lambda v, batch_stats: ts.train_forward(model, state.params, batch_stats, v)
    adv = attack(forward, x, y, keys, hparams, model_state=state.batch_stats)
    batch_stats = forward(adv.x_adv, adv.model_state)[1] if score_forward else adv.model_state
    return adv._replace(model_state=None), batch_stats

  def step(state, batch, hparams):
    x, y = batch['image'], batch['label']
    run = lambda train_mode: attack_in_mode(train_mode, state, x, y, example_keys(key, state.step, batch['index']),
                                            hparams)
    if mode == 'train_except_after_eval':
      adv, attack_stats = jax.lax.cond(state.step == hparams['eval_mode_step'], lambda: run(False), lambda: run(True))
    else:
      adv, attack_stats = run(mode == 'train')

    def loss_fn(params):
      forward = lambda v, batch_stats: ts.train_forward(model, params, batch_stats, v)
      return outer_loss(forward, attack_stats, x, adv.x_adv, y, adv.loss_weights)

    perturbed = awp.perturb(loss_fn, state.params, hparams.get('awp_gamma', 0.0))
    (loss, (logits, batch_stats)), grads = ts.local_value_and_grad(loss_fn, perturbed)
    state = ts.apply_gradients(state, tx, grads, batch_stats, config=config, at_params=perturbed)
    if config.get('clean_forward_after_step', False):
      batch_stats = ts.train_forward(model, state.params, state.batch_stats, x)[1]
      if config.bn_stats == 'per_device':   # as apply_gradients leaves them: the same on every device
        batch_stats = jax.lax.pmean(batch_stats, AXIS)
      state = state.replace(batch_stats=batch_stats)
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


def eval_attack(config):
  """`attack(logits_fn, x, y, keys) -> AttackOutput`: the per-epoch evaluation's PGD, `config.eval`."""
  e = config.eval
  kwargs = dict(eps=e.eps, step_size=e.step_size, steps=e.steps, loss=losses.get(e.loss, e.kappa), init=e.init,
                clip_init=e.clip_init, restarts=e.restarts, norm=e.norm)
  return lambda logits_fn, x, y, keys: attacks.pgd(logits_fn, x, y, keys, **kwargs)


def make_eval_step(model, config, mesh, key):
  """Jitted `eval_step(variables, batch) -> metric sums`: natural and PGD accuracy under `config.eval`."""
  attack = eval_attack(config)

  def step(variables, batch):
    x, y, mask = batch['image'], batch['label'], batch['mask']
    logits_fn = lambda v: model.apply(variables, v, train=False)
    adv = attack(logits_fn, x, y, example_keys(key, 0, batch['index']))
    correct = lambda v: ((logits_fn(v).argmax(-1) == y) & mask).sum()
    metrics = dict(natural_correct=correct(x), pgd_correct=correct(adv.x_adv), examples=mask.sum())
    return jax.lax.psum(metrics, AXIS)

  return jax.jit(jax.shard_map(step, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P()))
