"""FAT, FAT for TRADES, FAT for MART and FAT's PGD-K baseline against the official code (tests/official/fat.py), step
for step: the same weights, batch and draws give the same adversarial points, per-example step counts, losses,
weights and BatchNorm statistics after two optimiser steps (float64 networks: see harness.py).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from advjax import methods
from advjax import step as step_lib
from advjax import train_state as ts
from helpers import load_config
from official import fat, harness
from official.harness import BATCH, KEY, nchw, float64  # noqa: F401  (autouse)

STEPS = 2


@pytest.fixture(scope='module')
def setup():
  with jax.enable_x64(True):
    yield harness.small_cnn_setup(load_config('fat'))


# (advjax method, its config, the official loop, tau, omega): each method's own config (start, attack loss, omega).
CASES = {
    'fat_tau0': ('fat', 'fat', 0),
    'madry': ('madry', 'fat', 10),           # FAT's loop with tau = K and omega 0: PGD-10
    'fat_trades_tau1': ('fat_trades', 'fat_trades', 1),
    'fat_mart_tau1': ('fat_mart', 'fat_mart', 1),
}


@pytest.mark.parametrize('case', list(CASES))
def test_two_steps_equal_the_official_code(setup, case):
  name, official, tau = CASES[case]
  model, mesh, state, batch = setup
  config = load_config(name, batch_size=BATCH, lr_schedule=((1, harness.LR),), tau_schedule=((1, tau),))
  config.model.update(name='small_cnn', dtype='float64')
  config.attack.compact_min_size = 0   # one masked loop (compaction gives the same results; tested elsewhere)
  if name == 'madry':
    config.attack.noise_std = 0.0
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
  all_steps = []
  for step in range(STEPS):
    ours = attack(state.variables, x, y, ts.example_keys(KEY, step, jnp.asarray(host['index'])))
    start_noise, step_noise = harness.advjax_draws(step, host['index'], x.shape[1:], config)
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

  harness.assert_same_variables(state, net)
  if name == 'madry':
    assert (np.stack(all_steps) == a.steps).all()
  else:   # the batch exercises the early stop: examples stop at different steps
    assert len(np.unique(np.stack(all_steps))) >= 3, all_steps


def test_pre_2021_label_check_equals_the_official_code_before_6e461e0(setup):
  """`attack.misaligned_labels`: FAT's attack as `earlystop.py` ran before commit 6e461e0, through the compaction
  cascade (8 -> 4 -> 2 examples); on this batch it stops other examples than the fixed check does."""
  model, _, state, batch = setup
  config = load_config('fat', tau_schedule=((1, 1),))
  config.attack.update(misaligned_labels=True, compact_min_size=2)
  a, host = config.attack, jax.device_get(batch)
  x, y = jnp.asarray(host['image']), jnp.asarray(host['label'])
  attack = harness.jitted_attack(model, methods.METHODS['fat'].attack(config), methods.hparams(config, epoch=1))
  ours = attack(state.variables, x, y, ts.example_keys(KEY, 0, jnp.asarray(host['index'])))
  start_noise, step_noise = harness.advjax_draws(0, host['index'], x.shape[1:], config)
  net = harness.official_small_cnn(model, state)
  run = lambda before: fat.earlystop(net, nchw(x), torch.from_numpy(np.array(y)).long(), a.step_size, a.eps, a.steps,
                                     1, start_noise, step_noise, omega=a.noise_std, before_6e461e0=before)
  adv, _, _, origin, _, steps = run(True)
  their_adv = torch.empty_like(adv)
  their_adv[origin] = adv
  np.testing.assert_array_equal(np.asarray(ours.steps), steps.numpy())
  np.testing.assert_allclose(nchw(ours.x_adv).numpy(), their_adv.numpy(), atol=1e-5, rtol=0)
  assert not np.array_equal(steps.numpy(), run(False)[-1].numpy())


@pytest.mark.parametrize('name', ['fat_trades', 'fat_mart'])
def test_per_epoch_evaluation_equals_the_official_code(setup, name):
  """The PGD-20 FAT_for_TRADES.py and FAT_for_MART.py evaluate with every epoch: "Madry" start clip01(x + U(-eps,
  eps)), step 0.003. (FAT.py's, step eps/4, is the default protocol: the same code with another step.)"""
  model, _, state, batch = setup
  config = load_config(name)
  e = config.eval
  attack = jax.jit(lambda variables, x, y, keys: step_lib.eval_attack(config)(
      lambda v: model.apply(variables, v, train=False), x, y, keys))
  host = jax.device_get(batch)
  x, y = jnp.asarray(host['image']), jnp.asarray(host['label'])
  ours = attack(state.variables, x, y, ts.example_keys(KEY, 0, jnp.asarray(host['index'])))
  eval_config = load_config(name)
  eval_config.attack = e   # the draws of the evaluation's attack
  start_noise, _ = harness.advjax_draws(0, host['index'], x.shape[1:], eval_config)
  net = harness.official_small_cnn(model, state)
  theirs = fat.madry_pgd(net, nchw(x), torch.from_numpy(np.array(y)).long(), epsilon=e.eps, step_size=e.step_size,
                         num_steps=e.steps, start_noise=start_noise)
  np.testing.assert_allclose(nchw(ours.x_adv).numpy(), theirs.detach().numpy(), atol=1e-5, rtol=0)
