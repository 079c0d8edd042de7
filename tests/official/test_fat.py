"""FAT, FAT for TRADES, FAT for MART and FAT's PGD-K baseline against the official code (tests/official/fat.py), step
for step: the same weights, batch and draws give the same adversarial points, per-example step counts, losses,
weights and BatchNorm statistics after two optimiser steps.

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

from advjax import interop, methods, models, train
from advjax import step as step_lib
from advjax import train_state as ts
from advjax.data import pipeline
from helpers import load_config
from official import fat, nets

BATCH, STEPS = 8, 2
KEY = jax.random.key(2)   # the train step's


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


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


@pytest.fixture(scope='module')
def setup():
  with jax.enable_x64(True):
    yield _setup()


def _setup():
  """SmallCNN weights in float64, 1 device, and a batch half of whose labels are the model's own predictions (so that
  those examples are attacked until misclassified, the rest stop by tau)."""
  config = load_config('fat')
  config.model.update(name='small_cnn', dtype='float64')
  mesh = ts.make_mesh(jax.devices()[:1])
  model = train.build_model(config, 10)
  tx = step_lib.make_optimizer(config, steps_per_epoch=10)
  state = train.create_state(config, model, tx, (32, 32, 3), BATCH, jax.random.key(0), mesh)
  images = np.random.RandomState(0).randint(0, 256, (BATCH, 32, 32, 3)).astype(np.uint8)
  # Running statistics of the data, as a trained network has: at their init (mean 0, var 1) the eval-mode network
  # barely depends on its input, and its near-zero input gradients make the comparison a test of rounding.
  stats = jax.jit(lambda v: ts.train_forward(models.from_config(config.model, 10), state.params, v, images / 255.0)[1])
  batch_stats = state.batch_stats
  for _ in range(30):
    batch_stats = stats(batch_stats)
  wide = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)
  state = jax.device_put(state.replace(params=wide(state.params), batch_stats=wide(batch_stats)),
                         jax.tree.map(lambda a: a.sharding, state))
  predicted = np.asarray(model.apply(state.variables, images / 255.0, train=False).argmax(-1))
  labels = np.where(np.arange(BATCH) % 2 == 0, predicted, (predicted + 1 + np.arange(BATCH)) % 10).astype(np.int32)
  batch = pipeline.Loader(mesh, images, labels, BATCH, crop_padding=0, flip=False).batch(np.arange(BATCH),
                                                                                         jax.random.key(1))
  return model, mesh, state, batch


# (advjax method, its config, the official loop, tau, omega): each method's own config (start, attack loss, omega).
CASES = {
    'fat_tau0': ('fat', 'fat', 0),
    'fat_tau2': ('fat', 'fat', 2),
    'madry': ('madry', 'fat', 10),           # FAT's loop with tau = K and omega 0: PGD-10
    'fat_trades_tau1': ('fat_trades', 'fat_trades', 1),
    'fat_mart_tau1': ('fat_mart', 'fat_mart', 1),
}


@pytest.mark.parametrize('case', list(CASES))
def test_two_steps_equal_the_official_code(setup, case):
  name, official, tau = CASES[case]
  model, mesh, state, batch = setup
  config = load_config(name, batch_size=BATCH, lr_schedule=((1, 0.05),), tau_schedule=((1, tau),))
  config.model.update(name='small_cnn', dtype='float64')
  config.attack.compact_min_size = 0   # one masked loop (compaction gives the same results; tested elsewhere)
  if name == 'madry':
    config.attack.noise_std = 0.0
  a = config.attack
  tx = step_lib.make_optimizer(config, steps_per_epoch=10)
  state = jax.tree.map(jnp.copy, state.replace(opt_state=tx.init(state.params)))   # the train step donates it
  net = nets.SmallCNN().double()
  net.load_state_dict(interop.to_torch(model, jax.device_get(state.variables)))
  lr = float(np.float32(0.05))   # advjax's LR schedule holds float32 values
  optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=config.optimizer.weight_decay)
  train_step = step_lib.make_train_step(model, tx, config, mesh, KEY)
  attack = methods.METHODS[name].attack(config)
  hparams = methods.hparams(config, epoch=1)
  host = jax.device_get(batch)
  x, y = jnp.asarray(host['image']), jnp.asarray(host['label'])
  sums = step_lib.zero_metrics(config)
  all_steps = []
  for step in range(STEPS):
    logits_fn = lambda v, s=state: model.apply(jax.device_get(s.variables), v, train=False)
    ours = attack(logits_fn, x, y, ts.example_keys(KEY, step, jnp.asarray(host['index'])), hparams)
    start_noise, step_noise = advjax_draws(step, host['index'], x.shape[1:], config)
    their_adv, their_steps, their_loss = fat.train_step(
        net, optimizer, nchw(x), torch.from_numpy(np.array(y)).long(), method=official, tau=tau,
        start_noise=start_noise, step_noise=step_noise, epsilon=a.eps, step_size=a.step_size, num_steps=a.steps,
        omega=a.noise_std, beta=config.get('beta', 6.0))
    before = float(sums['loss'])
    state, sums = train_step(state, batch, hparams, sums)

    np.testing.assert_array_equal(np.asarray(ours.steps), their_steps.numpy())
    np.testing.assert_allclose(nchw(ours.x_adv).numpy(), their_adv.numpy(), atol=1e-5, rtol=0, err_msg=f'step {step}')
    assert (float(sums['loss']) - before) / BATCH == pytest.approx(their_loss, rel=1e-5)
    all_steps.append(their_steps.numpy())

  theirs = traverse_util.flatten_dict(interop.load_torch(net.state_dict(), 'small_cnn')[1])
  ours = traverse_util.flatten_dict(jax.device_get(state.variables))
  assert ours.keys() == theirs.keys()
  for path, want in theirs.items():
    np.testing.assert_allclose(ours[path], want, rtol=1e-4, atol=1e-6 * np.abs(want).max(), err_msg='/'.join(path))
  if name == 'madry':
    assert (np.stack(all_steps) == a.steps).all()
  else:   # the batch exercises the early stop: examples stop at different steps
    assert len(np.unique(np.stack(all_steps))) >= 3, all_steps
