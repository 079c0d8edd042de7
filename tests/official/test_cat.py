"""CAT against its official code (tests/official/cat.py), step for step: the same weights, batch and draws give the
same mixed batch (points and per-example steps), loss and accuracy, and the same weights and BatchNorm statistics
after three Adam steps at levels 2, 2 and 0 (level 2 cuts the batch of 8 into 2 + 2 + 4, level 0 trains on it
natural; float64 networks: see harness.py). At the official LR the largest weight difference is 2% of the
tolerance; at ten times it, two of fc1's 802,816 weights exceed it: Adam divides by the root of each weight's squared
gradient, which magnifies the float32 iterates' last-bit differences (19 pixels at level 2; the start noise rounds
differently inside advjax's jit) where a gradient is near zero.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from advjax import models
from advjax import step as step_lib
from advjax import train_state as ts
from advjax.methods import cat
from helpers import load_config
from official import cat as official
from official import harness
from official.harness import BATCH, KEY, nchw, float64  # noqa: F401  (autouse)

LR = float(np.float32(1e-4))   # Adam at the official LR
LEVELS = (2, 2, 0)


def test_cat_equals_the_official_code():
  config = load_config('cat', batch_size=BATCH, lr_schedule=((1, LR),))
  config.cat.max_k = max(LEVELS)
  model, mesh, state, batch = harness.small_cnn_setup(config)
  state, tx = harness.fresh_state(state, config)
  net = harness.official_small_cnn(model, state)
  optimizer = torch.optim.Adam(net.parameters(), lr=LR)
  train_step = step_lib.make_train_step(model, tx, config, mesh, KEY)
  unmapped = models.from_config(config.model, 10)   # the attack outside shard_map
  mixed = {k: jax.jit(functools.partial(cat.mixed_batch, k, config, unmapped)) for k in set(LEVELS)}
  host = jax.device_get(batch)
  images, labels = nchw(host['image']), torch.from_numpy(np.array(host['label'])).long()
  sums = step_lib.zero_metrics(config)
  for step, k in enumerate(LEVELS):
    keys = ts.example_keys(KEY, step, jnp.asarray(host['index']))
    ours_adv, ours_steps, _ = mixed[k](jax.device_get(state), batch['image'], batch['label'], keys, KEY)
    start, _ = harness.advjax_draws(step, host['index'], host['image'].shape[1:], config)
    factors = {j: float(cat.step_factor(cat.step_size_key(KEY, step, j), j)) for j in range(1, k + 1)}
    their_adv, their_steps, their_loss, their_correct = official.regular_loss(
        net, optimizer, images, labels, k, epsilon=config.attack.eps, step_size=config.attack.step_size,
        start_noise=start, step_factor=factors)
    before = jax.device_get(sums)
    state, sums = train_step(state, batch, {'steps': k}, sums)
    np.testing.assert_allclose(nchw(ours_adv).numpy(), their_adv.numpy(), atol=1e-5, rtol=0, err_msg=f'step {step}')
    np.testing.assert_array_equal(np.asarray(ours_steps), their_steps.numpy())
    assert float(sums['attack_steps'] - before['attack_steps']) == int(their_steps.sum())
    assert (float(sums['loss']) - float(before['loss'])) / BATCH == pytest.approx(their_loss, rel=1e-5)
    assert float(sums['adv_correct'] - before['adv_correct']) == their_correct
  harness.assert_same_variables(state, net)
