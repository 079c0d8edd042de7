"""The data-parallel train step: same result on 1 and 2 devices; schedules and the on-device pipeline."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import objectives, schedules, train
from advjax import step as step_lib
from advjax.data import pipeline
from helpers import load_config


def one_step(config, devices, images, labels):
  mesh = step_lib.make_mesh(devices)
  model = train.build_model(config, 10)
  tx = step_lib.make_optimizer(config, steps_per_epoch=10)
  state = step_lib.create_train_state(model, tx, images.shape[1:], jax.random.key(0), mesh)
  batch_fn = pipeline.make_batch_fn(mesh, len(labels), crop_padding=2, flip=True)
  batch = batch_fn(images, labels, jnp.arange(len(labels)), 0, jax.random.key(1))
  train_step = step_lib.make_train_step(model, tx, config, mesh, jax.random.key(2))
  hparams = objectives.METHODS[config.method].hparams(config, epoch=8)
  state, metrics = train_step(state, batch, hparams, step_lib.zero_metrics(config))
  return jax.device_get((state, metrics))


@pytest.fixture(scope='module')
def digits():
  from sklearn.datasets import load_digits
  d = load_digits()
  return (np.round(d.images[:16, :, :, None] * 255 / 16).astype(np.uint8), d.target[:16].astype(np.int32))


@pytest.mark.parametrize('method', sorted(objectives.METHODS))
def test_one_step_is_the_same_on_one_and_two_devices(digits, method):
  assert jax.device_count() == 2, 'conftest asks for 2 CPU devices'
  config = load_config(method, 'digits')   # each method's own config, on the quick-start data
  one = one_step(config, jax.devices()[:1], *digits)
  two = one_step(config, jax.devices()[:2], *digits)
  for a, b in zip(jax.tree.leaves((one[0].params, one[0].batch_stats)),
                  jax.tree.leaves((two[0].params, two[0].batch_stats))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert one[1]['attack_steps'] == two[1]['attack_steps']
  assert one[1]['examples'] == two[1]['examples'] == 16
  np.testing.assert_allclose(one[1]['loss'], two[1]['loss'], rtol=1e-5)
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(one[0].params), jax.tree.leaves(
      step_lib.create_train_state(train.build_model(config, 10), step_lib.make_optimizer(config, 10), (8, 8, 1),
                                  jax.random.key(0), step_lib.make_mesh(jax.devices()[:1])).params)))
  assert moved > 1e-4, 'the step should change the parameters'


def test_per_device_batch_norm_differs_from_global(digits):
  config = load_config('quickstart', bn_stats='per_device')
  per_device = one_step(config, jax.devices()[:2], *digits)
  config.bn_stats = 'global'
  global_bn = one_step(config, jax.devices()[:2], *digits)
  gap = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(per_device[0].params),
                                                       jax.tree.leaves(global_bn[0].params)))
  assert gap > 1e-6


def test_schedules_by_epoch():
  fat_tau = ((1, 0), (51, 1), (91, 2))
  assert [schedules.value_at(fat_tau, e) for e in (1, 50, 51, 90, 91, 120)] == [0, 0, 1, 1, 2, 2]
  lr = ((1, 0.1), (60, 0.01), (90, 0.001))
  per_step = schedules.per_step(lr, steps_per_epoch=10)
  for count, epoch in [(0, 1), (589, 59), (590, 60), (899, 90), (900, 91), (5000, 501)]:
    np.testing.assert_allclose(per_step(count), schedules.value_at(lr, epoch), rtol=1e-6)


def test_batches_crop_flip_and_pad():
  mesh = step_lib.make_mesh()
  images = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4, 1) + 1    # no zeros: padding is visible
  labels = np.arange(6, dtype=np.int32)
  plain = jax.device_get(pipeline.make_batch_fn(mesh, 4)(images, labels, jnp.arange(8), 4, jax.random.key(0)))
  np.testing.assert_array_equal(plain['mask'], [True, True, False, False])
  np.testing.assert_array_equal(plain['label'][:2], [4, 5])
  np.testing.assert_allclose(plain['image'][:2], images[4:6] / 255.0)

  augment = pipeline.make_batch_fn(mesh, 6, crop_padding=1, flip=True)
  order = jnp.asarray([5, 4, 3, 2, 1, 0])
  out = np.asarray(augment(images, labels, order, 0, jax.random.key(3))['image'] * 255).round()
  again = np.asarray(augment(images, labels, order[::-1], 0, jax.random.key(3))['image'] * 255).round()
  np.testing.assert_array_equal(out, again[::-1])   # augmentation is keyed by dataset index, not batch position
  for row, index in enumerate(np.asarray(order)):
    padded = np.pad(images[index, :, :, 0].astype(float), 1)
    candidates = [padded[dy:dy + 4, dx:dx + 4] for dy in range(3) for dx in range(3)]
    candidates += [c[:, ::-1] for c in candidates]
    assert any(np.array_equal(out[row, :, :, 0], c) for c in candidates)
