"""DAT against its official Keras code (tests/official/dat.py), step for step: the same weights, batch and start
noise give the same FOSC-stopped points and per-example step counts, losses, weights and BatchNorm statistics after
two optimiser steps, in the first epoch (plain CE) and in a later one (each example's CE weighted by its own
detached adversarial CE) (float64 networks: see harness.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from advjax import methods
from advjax import step as step_lib
from advjax import train_state as ts
from helpers import load_config
from official import dat, harness
from official.harness import BATCH, KEY, nchw, float64  # noqa: F401  (autouse)

STEPS = 2


@pytest.fixture(scope='module')
def setup():
  with jax.enable_x64(True):
    yield harness.small_cnn_setup(load_config('dat'))


@pytest.mark.parametrize('epoch', [1, 2])
def test_two_steps_equal_the_official_code(setup, epoch):
  model, mesh, state, batch = setup
  config = load_config('dat', batch_size=BATCH, lr_schedule=((1, harness.LR),))
  config.model.update(name='small_cnn', dtype='float64')
  config.attack.compact_min_size = 0
  a, o = config.attack, config.optimizer
  state, tx = harness.fresh_state(state, config)
  net = harness.official_small_cnn(model, state)
  optimizer = dat.KerasSGD(net, lr=harness.LR, momentum=o.momentum, decay=o.keras_time_decay, l2=o.weight_decay / 2)
  train_step = step_lib.make_train_step(model, tx, config, mesh, KEY)
  hparams = methods.hparams(config, epoch)
  attack = harness.jitted_attack(model, methods.METHODS['dat'].attack(config), hparams)
  host = jax.device_get(batch)
  x, y = jnp.asarray(host['image']), jnp.asarray(host['label'])
  sums = step_lib.zero_metrics(config)
  all_steps = []
  for step in range(STEPS):
    ours = attack(state.variables, x, y, ts.example_keys(KEY, step, jnp.asarray(host['index'])))
    start_noise, _ = harness.advjax_draws(step, host['index'], x.shape[1:], config)
    their_adv, their_steps, their_loss = dat.train_step(
        net, optimizer, nchw(x), torch.from_numpy(np.array(y)).long(), ep=epoch - 1, start_noise=start_noise,
        epsilon=a.eps, nb_iter=a.steps, fosc_max=config.fosc.c_max, dynamic_epoch=config.fosc.decay_epochs)
    before = float(sums['loss'])
    state, sums = train_step(state, batch, hparams, sums)

    np.testing.assert_array_equal(np.asarray(ours.steps), their_steps.numpy())
    np.testing.assert_allclose(nchw(ours.x_adv).numpy(), their_adv.numpy(), atol=1e-5, rtol=0, err_msg=f'step {step}')
    assert (float(sums['loss']) - before) / BATCH == pytest.approx(their_loss, rel=1e-5)
    all_steps.append(their_steps.numpy())

  harness.assert_same_variables(state, net)
  assert len(np.unique(np.stack(all_steps))) >= 3, all_steps   # the batch exercises the FOSC stop
