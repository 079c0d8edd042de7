"""TRADES and MART against their official code (tests/official/trades_mart.py), step for step: the same weights,
batch and start noise give the same adversarial points, losses, weights and BatchNorm statistics after two optimiser
steps (float64 networks: see harness.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from advjax import methods
from advjax import step as step_lib
from advjax import train_state as ts
from helpers import load_config
from official import harness, trades_mart
from official.harness import BATCH, KEY, nchw, float64  # noqa: F401  (autouse)

STEPS = 2


@pytest.fixture(scope='module')
def setup():
  with jax.enable_x64(True):
    yield harness.small_cnn_setup(load_config('trades'))


@pytest.mark.parametrize('name', ['trades', 'mart'])
def test_two_steps_equal_the_official_code(setup, name):
  model, mesh, state, batch = setup
  config = load_config(name, batch_size=BATCH, lr_schedule=((1, harness.LR),))
  config.model.update(name='small_cnn', dtype='float64')
  a = config.attack
  state, tx = harness.fresh_state(state, config)
  net = harness.official_small_cnn(model, state)
  optimizer = torch.optim.SGD(net.parameters(), lr=harness.LR, momentum=0.9,
                              weight_decay=config.optimizer.weight_decay)
  train_step = step_lib.make_train_step(model, tx, config, mesh, KEY)
  hparams = methods.hparams(config, epoch=1)
  attack = harness.jitted_attack(model, methods.METHODS[name].attack(config), hparams)
  host = jax.device_get(batch)
  x, y = jnp.asarray(host['image']), jnp.asarray(host['label'])
  sums = step_lib.zero_metrics(config)
  for step in range(STEPS):
    ours = attack(state.variables, x, y, ts.example_keys(KEY, step, jnp.asarray(host['index'])))
    start_noise, _ = harness.advjax_draws(step, host['index'], x.shape[1:], config)
    their_adv, their_loss = trades_mart.train_step(
        net, optimizer, nchw(x), torch.from_numpy(np.array(y)).long(), method=name, start_noise=start_noise,
        step_size=a.step_size, epsilon=a.eps, perturb_steps=a.steps, beta=config.beta)
    before = float(sums['loss'])
    state, sums = train_step(state, batch, hparams, sums)

    np.testing.assert_allclose(nchw(ours.x_adv).numpy(), their_adv.numpy(), atol=1e-5, rtol=0, err_msg=f'step {step}')
    assert (float(sums['loss']) - before) / BATCH == pytest.approx(their_loss, rel=1e-5)

  harness.assert_same_variables(state, net)
