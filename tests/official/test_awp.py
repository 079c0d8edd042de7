"""AT-AWP and TRADES-AWP against their official code (tests/official/awp.py), step for step, each from its own config
(`configs/awp.py` and its `trades` variant; the official side from its scripts' defaults): the same weights, batch
and draws give the same adversarial points, losses, weights and BatchNorm statistics (float64 networks: see
harness.py). The SmallCNN stands in for the PreActResNet-18 and WRN-34-10, and the LR is held at one value; AT-AWP's
CIFAR normalisation (outside the official model, inside advjax's) is part of what is compared.
"""
import functools

import jax
import numpy as np
import pytest
import torch

from advjax import methods, models, schedules
from advjax import step as step_lib
from advjax import train_state as ts
from helpers import load_config
from official import awp, harness, nets
from official.harness import BATCH, KEY, nchw, float64  # noqa: F401  (autouse)



def _config(variant=None):
  config = load_config('awp', variant, batch_size=BATCH, lr_schedule=((1, harness.LR),))
  config.model.update(name='small_cnn', dtype='float64')
  return config


@pytest.fixture(scope='module')
def at_awp():
  with jax.enable_x64(True):
    yield _config(), harness.small_cnn_setup(_config())


@pytest.fixture(scope='module')
def trades_awp():
  with jax.enable_x64(True):
    yield _config('trades'), harness.small_cnn_setup(_config('trades'))


def recomputed_attack(config):
  """advjax's attack of the config outside the train step, with the model in eval or training mode (the train step
  picks the mode itself: this is to compare the points)."""
  attack, model = methods.METHODS[config.method].attack(config), models.from_config(config.model, 10)

  @functools.partial(jax.jit, static_argnums=5)
  def run(state, x, y, keys, hparams, train_mode):
    if train_mode:
      forward = lambda v, batch_stats: ts.train_forward(model, state.params, batch_stats, v)
      return attack(forward, x, y, keys, hparams, model_state=state.batch_stats).x_adv
    return attack(lambda v: model.apply(state.variables, v, train=False), x, y, keys, hparams).x_adv

  return run


def run_and_compare(config, setup, official, epochs, first_steps):
  """Steps advjax's train step and the official code side by side, comparing after each step: `official(net)` gives
  `batch(x, y, step, start_noise) -> (x_adv, loss, whether the attack ran in training mode)` for the torch network."""
  model, mesh, state, batch = setup
  state, tx = harness.fresh_state(state, config)
  official_batch = official(harness.official_small_cnn(model, state))
  train_step = step_lib.make_train_step(model, tx, config, mesh, KEY)
  attack = recomputed_attack(config)
  host = jax.device_get(batch)
  x, y = host['image'], host['label']
  sums = step_lib.zero_metrics(config)
  modes = []
  for step, (epoch, first_step) in enumerate(zip(epochs, first_steps)):
    hparams = methods.hparams(config, epoch, first_step=first_step)
    start_noise, _ = harness.advjax_draws(step, host['index'], x.shape[1:], config)
    their_adv, their_loss, train_mode = official_batch(nchw(x), torch.from_numpy(y).long(), step, start_noise)
    ours = attack(state, x, y, ts.example_keys(KEY, step, host['index']), hparams, train_mode)
    before = float(sums['loss'])
    state, sums = train_step(state, batch, hparams, sums)

    np.testing.assert_allclose(nchw(ours).numpy(), their_adv.numpy(), atol=1e-5, rtol=0, err_msg=f'step {step}')
    assert (float(sums['loss']) - before) / BATCH == pytest.approx(their_loss, rel=1e-5), f'step {step}'
    harness.assert_same_variables(state, official_batch.net)
    modes.append(train_mode)
  return modes


def optimisers(net, args, proxy_lr):
  """The scripts' SGD on the model (its LR held here) and plain SGD on the proxy, with the proxy."""
  proxy = nets.SmallCNN().double()
  opt = torch.optim.SGD(net.parameters(), lr=harness.LR, momentum=args['momentum'], weight_decay=args['weight_decay'])
  return opt, proxy, torch.optim.SGD(proxy.parameters(), lr=proxy_lr)


def test_at_awp_steps_over_an_epoch_boundary_equal_the_official_code(at_awp):
  """An epoch of one batch, then two: the official attack runs in training mode, except in the batch after the first
  epoch's evaluation."""
  config, setup = at_awp
  args = awp.AT_AWP_ARGS
  epochs = [1, 2, 2]

  def official(net):
    opt, proxy, proxy_opt = optimisers(net, args, args['proxy_lr'])
    adversary = awp.AdvWeightPerturb(net, proxy, proxy_opt, args['awp_gamma'])

    def batch(x, y, step, start_noise):
      if step and epochs[step] > epochs[step - 1]:
        net.eval()   # the evaluation after the epoch
      train_mode = net.training
      x_adv, loss = awp.at_awp_train_batch(net, opt, adversary, x, y, epoch=epochs[step] - 1, lr=harness.LR,
                                           start_noise=start_noise)
      return x_adv, loss, train_mode

    batch.net = net
    return batch

  modes = run_and_compare(config, setup, official, epochs, first_steps=[0, 1, 1])
  assert modes == [True, False, True]


def test_trades_awp_steps_before_and_after_the_warm_up_equal_the_official_code(trades_awp):
  """Epochs 9 and 10: AWP starts in the second."""
  config, setup = trades_awp
  args = awp.TRADES_AWP_ARGS

  def official(net):
    opt, proxy, proxy_opt = optimisers(net, args, args['lr'])
    adversary = awp.TradesAWP(net, proxy, proxy_opt, args['awp_gamma'])

    def batch(x, y, step, start_noise):
      x_adv, loss = awp.trades_awp_train_batch(net, opt, adversary, x, y, epoch=9 + step, start_noise=start_noise)
      return x_adv, loss, False

    batch.net = net
    return batch

  run_and_compare(config, setup, official, epochs=[9, 10], first_steps=[0, 1])


def test_trades_awp_schedules_are_the_official_ones():
  """The LR of every epoch (`adjust_learning_rate`, epochs from 1) and AWP's start (`epoch >= awp_warmup`), in the
  full-length config."""
  config = load_config('awp', 'trades')
  args = awp.TRADES_AWP_ARGS
  optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=args['lr'])
  steps_per_epoch = 2
  lr = schedules.per_step(config.lr_schedule, steps_per_epoch)
  for epoch in range(1, config.num_epochs + 1):
    want = awp.adjust_learning_rate(optimizer, epoch)
    for count in range((epoch - 1) * steps_per_epoch, epoch * steps_per_epoch):
      assert float(lr(count)) == pytest.approx(want, rel=1e-6), epoch
    gamma = methods.hparams(config, epoch).get('awp_gamma', 0.0)
    assert gamma == (args['awp_gamma'] if epoch >= args['awp_warmup'] else 0.0), epoch


def test_at_awp_learning_rate_is_the_official_schedule_at_each_batch_end():
  """`lr_schedule(epoch + (i + 1) / n)`, epochs from 0: the last batch before each drop already has the lower LR."""
  config, n = load_config('awp'), 3
  want = [awp.at_awp_lr_schedule(epoch + (i + 1) / n) for epoch in range(config.num_epochs) for i in range(n)]
  np.testing.assert_allclose(harness.learning_rates(config, n), want, rtol=1e-6)
