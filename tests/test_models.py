"""Tests for the model zoo: shapes, parameter counts, BatchNorm behaviour, normalisation, sharding, dtype."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from advjax import models


def images(shape, seed=0):
  return jax.random.uniform(jax.random.key(seed), shape)


def init(model, x):
  return model.init(jax.random.key(0), x, train=False)


def abstract_variables(name, num_classes=10, channels=3, size=32):
  """Variable shapes without running anything: cheap even for WRN-34-10."""
  model = models.get_model(name, num_classes)
  return jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                        jnp.zeros((1, size, size, channels)))


def num_params(variables):
  return sum(leaf.size for leaf in jax.tree.leaves(variables['params']))


def wrn_param_count(blocks, width, in_channels, num_classes):
  """Parameters of the TRADES WRN (without its unused sub_block1), counted layer by layer.

  A 3x3 conv has 9 * in * out weights, a BatchNorm 2 * channels (scale, bias),
  a 1x1 shortcut in * out, and the fc has a bias.
  """
  count = 9 * in_channels * 16  # stem conv
  in_planes = 16
  for out_planes in (16 * width, 32 * width, 64 * width):
    for _ in range(blocks):
      count += 2 * in_planes + 9 * in_planes * out_planes  # bn1, conv1
      count += 2 * out_planes + 9 * out_planes * out_planes  # bn2, conv2
      if in_planes != out_planes:
        count += in_planes * out_planes  # 1x1 shortcut
      in_planes = out_planes
  return count + 2 * in_planes + in_planes * num_classes + num_classes  # final bn, fc


# (name, input shape): the smallest inputs each architecture allows, to keep compiles fast.
SMALL_CASES = [
    ('tiny_cnn', (2, 8, 8, 1)),
    ('tiny_cnn', (2, 5, 7, 4)),  # odd sizes, four channels
    ('small_cnn', (2, 8, 8, 3)),
    ('resnet18', (2, 8, 8, 3)),
    ('preact_resnet18', (2, 8, 8, 3)),
    ('wrn-10-1', (2, 8, 8, 3)),
]


@pytest.mark.parametrize('name,shape', SMALL_CASES)
def test_output_shape_and_dtype(name, shape):
  model = models.get_model(name, 7)
  x = images(shape)
  variables = init(model, x)
  assert set(variables) == {'params', 'batch_stats'}
  logits = model.apply(variables, x, train=False)
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  logits, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  assert logits.shape == (2, 7) and logits.dtype == jnp.float32
  assert set(updates) == {'batch_stats'}
  assert np.all(np.isfinite(logits))


def test_resnet_param_counts_match_torch():
  assert num_params(abstract_variables('resnet18')) == 11_173_962          # kuangliu's ResNet18
  assert num_params(abstract_variables('preact_resnet18')) == 11_172_170   # Rice et al.'s PreActResNet18


@pytest.mark.parametrize('name,blocks,width', [('wrn-34-10', 5, 10), ('wrn-28-10', 4, 10), ('wrn-16-2', 2, 2),
                                               ('wrn-10-1', 1, 1), ('wrn-58-10', 9, 10), ('wrn-70-16', 11, 16)])
def test_wrn_param_count_matches_analytic(name, blocks, width):
  assert num_params(abstract_variables(name, num_classes=10)) == wrn_param_count(blocks, width, 3, 10)
  assert num_params(abstract_variables(name, num_classes=100, channels=1)) == wrn_param_count(blocks, width, 1, 100)


def test_madry_and_trades_depth_conventions_give_the_same_network():
  shapes = lambda name: jax.tree.map(lambda leaf: leaf.shape, abstract_variables(name))
  assert shapes('wrn-32-10') == shapes('wrn-34-10')


def test_is_known():
  for name in ['tiny_cnn', 'small_cnn', 'resnet18', 'wrn-34-10', 'wrn-32-10', 'wrn-28-10', 'wrn-16-2']:
    assert models.is_known(name), name
  for name in ['bogus', 'wrn-33-10', 'wrn-4-10', 'wrn-34-0', 'wrn-34', 'wrn-34-10-2', 'resnet', '']:
    assert not models.is_known(name), name
    with pytest.raises(ValueError, match='known models'):
      models.get_model(name, 10)
  assert 'wrn-34-10' in models.KNOWN_MODELS


def test_init_follows_reference_code():
  variables = init(models.get_model('tiny_cnn', 10), images((2, 8, 8, 1)))
  params = variables['params']
  kernel = params['conv1']['kernel']  # 3x3x32x64: kaiming normal, fan-out
  np.testing.assert_allclose(np.std(kernel), np.sqrt(2 / (3 * 3 * 64)), rtol=0.05)
  head = params['head']['kernel']  # PyTorch Linear: U(+-1/sqrt(fan_in))
  bound = 1 / np.sqrt(head.shape[0])
  assert np.abs(head).max() <= bound and np.abs(head).max() > 0.9 * bound
  np.testing.assert_array_equal(params['head']['bias'], 0)
  np.testing.assert_array_equal(params['bn0']['scale'], 1)
  np.testing.assert_array_equal(params['bn0']['bias'], 0)


@pytest.fixture(scope='module')
def tiny():
  """tiny_cnn with BatchNorm statistics that have moved away from their initial values."""
  model = models.get_model('tiny_cnn', 10)
  x = images((4, 8, 8, 1))
  variables = init(model, x)
  _, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
  return model, {**variables, **updates}


def test_train_mode_updates_batch_stats(tiny):
  model, variables = tiny
  _, updates = model.apply(variables, images((4, 8, 8, 1), seed=1), train=True, mutable=['batch_stats'])
  old, new = jax.tree.leaves(variables['batch_stats']), jax.tree.leaves(updates['batch_stats'])
  assert all(a.shape == b.shape for a, b in zip(old, new))
  assert all(not np.allclose(a, b) for a, b in zip(old, new))


def test_eval_is_per_example_and_train_is_not(tiny):
  model, variables = tiny
  x = images((2, 8, 8, 1))
  other = x.at[1].set(images((8, 8, 1), seed=2))
  eval_logits = lambda batch: model.apply(variables, batch, train=False)[0]
  train_logits = lambda batch: model.apply(variables, batch, train=True, mutable=['batch_stats'])[0][0]
  # Attacks rely on this: an example's eval logits must not see the rest of the batch.
  np.testing.assert_allclose(eval_logits(x), eval_logits(other), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(eval_logits(x), eval_logits(x[:1]), rtol=1e-6, atol=1e-6)
  assert not np.allclose(train_logits(x), train_logits(other), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize('train', [False, True])
def test_normalisation_inside_model(train):
  mean, std = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
  plain = models.get_model('tiny_cnn', 10)
  normalised = models.get_model('tiny_cnn', 10, mean=mean, std=std)
  x = images((2, 8, 8, 3))
  variables = init(plain, x)
  apply = lambda model, x: model.apply(variables, x, train=train, mutable=['batch_stats'])[0]
  expected = apply(plain, (x - jnp.array(mean)) / jnp.array(std))
  np.testing.assert_allclose(apply(normalised, x), expected, rtol=1e-5, atol=1e-5)


def test_bn_statistics_are_averaged_across_devices():
  assert jax.device_count() >= 2, 'tests/conftest.py should simulate two CPU devices'
  mesh = jax.make_mesh((2,), ('data',))
  x = images((4, 8, 8, 1))
  single = models.get_model('tiny_cnn', 10)
  sharded = models.get_model('tiny_cnn', 10, bn_axis_name='data')
  variables = init(single, x)

  def train_apply(variables, x):
    return sharded.apply(variables, x, train=True, mutable=['batch_stats'])

  # The averaged statistics are the same on every device, so batch_stats come back replicated.
  split = jax.jit(jax.shard_map(train_apply, mesh=mesh, in_specs=(P(), P('data')), out_specs=(P('data'), P())))
  logits, updates = split(jax.device_put(variables, NamedSharding(mesh, P())),
                          jax.device_put(x, NamedSharding(mesh, P('data'))))
  want_logits, want_updates = single.apply(variables, x, train=True, mutable=['batch_stats'])
  np.testing.assert_allclose(logits, want_logits, rtol=1e-5, atol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5), updates, want_updates)


def test_bfloat16_computation_keeps_float32_params_and_logits():
  model = models.get_model('tiny_cnn', 10, dtype=jnp.bfloat16)
  x = images((2, 8, 8, 1))
  variables = init(model, x)
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(variables))
  for train in (False, True):
    logits, updates = model.apply(variables, x, train=train, mutable=['batch_stats'])
    assert logits.dtype == jnp.float32
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(updates))
  # Same function up to bfloat16 rounding.
  float32_logits = models.get_model('tiny_cnn', 10).apply(variables, x, train=False)
  np.testing.assert_allclose(model.apply(variables, x, train=False), float32_logits, rtol=0.05, atol=0.05)
