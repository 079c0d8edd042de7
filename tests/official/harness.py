"""What the differential tests share: a float64 SmallCNN and a batch, advjax's random draws in the official code's
NCHW layout, and the comparison of the updated weights.

Both networks compute and store their weights in float64 (advjax's with dtype float64 under `jax.enable_x64`; the
images and iterates stay float32 on both sides, as in the official code): in float32 the sign in each PGD step turns
a rounding difference at a near-zero gradient (seen: 1e-7 against a typical 1e-5, after 7 steps) into a
2-step-size difference of the point, which changes the example's whole path; the KL attack starts where its gradient
is near zero; and the training gradient of the first layers moved by 1e-3 (relative) under the iterates'
float32-against-float64 rounding (3e-7).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from advjax import interop, models, train
from advjax import step as step_lib
from advjax import train_state as ts
from advjax.data import pipeline
from official import nets

@pytest.fixture(autouse=True)
def float64():
  """Every test of a module that imports it runs with float64 enabled (see above)."""
  with jax.enable_x64(True):
    yield


BATCH = 8
KEY = jax.random.key(2)   # the train step's
LR = float(np.float32(0.05))   # advjax's LR schedule holds float32 values: the official optimiser gets the same


def nchw(a):
  return torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).contiguous()


def advjax_draws(step, index, shape, config):
  """The start noise and each step's omega noise advjax draws for these examples (train_state.example_keys, then
  attacks.iterative._start's split and parts.random_start), to inject into the official code."""
  keys = ts.example_keys(KEY, step, jnp.asarray(index))
  init_keys, noise_keys = jnp.moveaxis(jax.vmap(jax.random.split)(keys), 1, 0)
  normal = lambda keys: jax.vmap(lambda k: jax.random.normal(k, shape, jnp.float32))(keys)
  eps = config.attack.eps
  if config.attack.init == 'uniform':
    start = jax.vmap(lambda k: jax.random.uniform(k, shape, jnp.float32))(init_keys) * (2 * eps) - eps
  else:
    start = 0.001 * normal(init_keys)
  noise = [normal(jax.vmap(jax.random.fold_in, (0, None))(noise_keys, s)) for s in range(config.attack.steps)]
  return nchw(start), torch.stack([nchw(n) for n in noise])


def small_cnn_setup(config):
  """SmallCNN weights in float64, 1 device, and a batch half of whose labels are the model's own predictions (so that
  an early-stopped attack iterates on those until they are misclassified, and stops the rest by tau).

  Call under `jax.enable_x64`."""
  config.model.update(name='small_cnn', dtype='float64')
  mesh = ts.make_mesh(jax.devices()[:1])
  model = train.build_model(config, 10)
  tx = step_lib.make_optimizer(config, steps_per_epoch=10)
  state = train.create_state(config, model, tx, (32, 32, 3), BATCH, jax.random.key(0), mesh)
  images = np.random.RandomState(0).randint(0, 256, (BATCH, 32, 32, 3)).astype(np.uint8)
  # Running statistics of the data, as a trained network has: at their init (mean 0, var 1) the eval-mode network
  # barely depends on its input, and its near-zero input gradients make the comparison a test of rounding.
  # (The weights and images are arguments: as constants XLA spends seconds folding each convolution.)
  unmapped = models.from_config(config.model, 10)   # `model` averages BatchNorm over the mesh: shard_map only
  stats = jax.jit(lambda params, batch_stats, x: ts.train_forward(unmapped, params, batch_stats, x)[1])
  batch_stats = state.batch_stats
  for _ in range(30):
    batch_stats = stats(state.params, batch_stats, images / 255.0)
  wide = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)
  state = jax.device_put(state.replace(params=wide(state.params), batch_stats=wide(batch_stats)),
                         jax.tree.map(lambda a: a.sharding, state))
  predicted = np.asarray(model.apply(state.variables, images / 255.0, train=False).argmax(-1))
  labels = np.where(np.arange(BATCH) % 2 == 0, predicted, (predicted + 1 + np.arange(BATCH)) % 10).astype(np.int32)
  batch = pipeline.Loader(mesh, images, labels, BATCH, crop_padding=0, flip=False).batch(np.arange(BATCH),
                                                                                         jax.random.key(1))
  return model, mesh, state, batch


def fresh_state(state, config):
  """A copy of `state` (the train step donates it) with the optimiser of `config`, and the optimiser."""
  tx = step_lib.make_optimizer(config, steps_per_epoch=10)
  return jax.tree.map(jnp.copy, state.replace(opt_state=tx.init(state.params))), tx


def jitted_attack(model, attack, hparams):
  """`attack(variables, x, y, keys)`: the method's attack on the model in eval mode, the weights an argument (as
  constants inside the attack's loop XLA would spend seconds folding each convolution)."""
  return jax.jit(lambda variables, x, y, keys: attack(lambda v: model.apply(variables, v, train=False), x, y, keys,
                                                      hparams))


def learning_rates(config, steps_per_epoch):
  """The LR of each of `config`'s updates, read off its optimiser (`step.make_optimizer`): the update of a unit
  gradient without momentum or weight decay."""
  config = config.copy_and_resolve_references()
  config.optimizer.update(momentum=0.0, weight_decay=0.0)
  tx = step_lib.make_optimizer(config, steps_per_epoch)
  update = jax.jit(lambda state: tx.update(jnp.ones(()), state, jnp.zeros(())))
  state, rates = tx.init(jnp.zeros(())), []
  for _ in range(config.num_epochs * steps_per_epoch):
    updates, state = update(state)
    rates.append(-float(updates))
  return rates


def official_small_cnn(model, state):
  net = nets.SmallCNN().double()
  net.load_state_dict(interop.to_torch(model, jax.device_get(state.variables)))
  return net


def assert_same_variables(state, net):
  """advjax's weights and BatchNorm statistics equal the PyTorch module's, within 1e-4 relative."""
  theirs = traverse_util.flatten_dict(interop.load_torch(net.state_dict(), 'small_cnn')[1])
  ours = traverse_util.flatten_dict(jax.device_get(state.variables))
  assert ours.keys() == theirs.keys()
  for path, want in theirs.items():
    np.testing.assert_allclose(ours[path], want, rtol=1e-4, atol=1e-6 * np.abs(want).max(), err_msg='/'.join(path))
