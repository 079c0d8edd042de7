"""The train state, and the update every trainer ends its step with.

Trainers run per device inside `jax.shard_map` over a 1-D mesh (pmap semantics). Everything in the state is
replicated except `memory`, the per-example memory of methods such as FGSM-PGI, whose rows are sharded over the
mesh (see `advjax.methods.memory`).
"""
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

AXIS = 'data'


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema: Any = None      # dict(params, batch_stats): exponential moving averages of the weights, when kept
  method: Any = None   # a method's own learned state, replicated: LAS-AT's policy, FGSM-SDI's generator
  memory: Any = None   # a method's per-example (or per-batch-slot) arrays, rows sharded over the mesh

  @property
  def variables(self):
    """What `model.apply` takes for the raw weights."""
    return dict(params=self.params, batch_stats=self.batch_stats)


def specs(state):
  """The state's PartitionSpecs: replicated, except the rows of `memory`."""
  replicated = jax.tree.map(lambda _: P(), state)
  return replicated.replace(memory=jax.tree.map(lambda _: P(AXIS), state.memory))


def make_mesh(devices=None):
  devices = jax.devices() if devices is None else devices
  return jax.make_mesh((len(devices),), (AXIS,), devices=devices)


def memory_rows(num_examples, mesh):
  """Rows of a per-example memory: the examples, padded to a whole number of rows per device."""
  devices = mesh.devices.size
  return -(-num_examples // devices) * devices


def create_train_state(model, tx, input_shape, key, mesh, ema=False, extras=None):
  """Initial state (float32 parameters and optimiser state whatever the compute dtype), placed on the mesh.

  `extras(key) -> (method_state, memory)` initialises a method's own state, if it has one.
  """
  def init():
    variables = model.init(key, jnp.zeros((1, *input_shape)), train=False)
    params = variables['params']
    method, memory = extras(jax.random.fold_in(key, 1)) if extras else (None, None)
    return TrainState(step=jnp.int32(0), params=params, batch_stats=variables['batch_stats'],
                      opt_state=tx.init(params), ema=dict(variables) if ema else None, method=method, memory=memory)

  shardings = jax.tree.map(lambda spec: NamedSharding(mesh, spec), specs(jax.eval_shape(init)),
                           is_leaf=lambda x: isinstance(x, P))
  return jax.jit(init, out_shardings=shardings)()


def update_ema(ema, variables, step, decay):
  """One EMA step with TensorFlow's warm-up: the decay is min(decay, (1 + t) / (10 + t)) at step t."""
  step = jnp.asarray(step, jnp.float32)
  decay = jnp.minimum(decay, (1 + step) / (10 + step))
  return optax.incremental_update(variables, ema, 1 - decay)


def example_keys(key, step, indices):
  """One key per example from (key, step, dataset index): noise that does not depend on the device split."""
  step_key = jax.random.fold_in(key, step)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(step_key, indices)


def train_forward(model, params, batch_stats, x):
  """Logits of the model in training mode, and its updated BatchNorm statistics."""
  logits, updates = model.apply(dict(params=params, batch_stats=batch_stats), x, train=True, mutable=['batch_stats'])
  return logits, updates['batch_stats']


def local_value_and_grad(loss_fn, params):
  """`value_and_grad(loss_fn, has_aux=True)` at replicated `params`, the gradient this device's alone.

  It differentiates a device-varying copy of the parameters, so the gradient stays per device (as under pmap)
  rather than being summed across devices implicitly; callers average it with `lax.pmean`.
  """
  return jax.value_and_grad(loss_fn, has_aux=True)(jax.lax.pcast(params, AXIS, to='varying'))


def apply_gradients(state, tx, grads, batch_stats, *, config, at_params=None):
  """The optimiser step on the device-averaged gradient, new BatchNorm statistics, step count and EMA.

  `at_params`: where the gradient was taken, when not at `state.params` (AWP's perturbed weights): weight decay
  and the update are computed there, and the update is applied to `state.params`, as AWP's restore-after-step does.
  """
  grads = jax.lax.pmean(grads, AXIS)
  if config.bn_stats == 'per_device':
    batch_stats = jax.lax.pmean(batch_stats, AXIS)
  updates, opt_state = tx.update(grads, state.opt_state, state.params if at_params is None else at_params)
  new = state.replace(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                      batch_stats=batch_stats, opt_state=opt_state)
  if new.ema is not None:
    new = new.replace(ema=update_ema(new.ema, new.variables, state.step, config.ema_decay))
  return new
