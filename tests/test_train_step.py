"""The data-parallel train step: same result on 1 and 2 devices; schedules and the on-device pipeline."""
import jax
import numpy as np
import pytest

from advjax import methods, schedules, train
from advjax import step as step_lib
from advjax import train_state as ts
from advjax.data import pipeline
from helpers import load_config


def one_step(config, devices, images, labels, steps=1):
  """The state and metric sums after `steps` train steps on the batch (images, labels), with their states."""
  mesh = ts.make_mesh(devices)
  model = train.build_model(config, 10)
  tx = step_lib.make_optimizer(config, steps_per_epoch=10)
  state = train.create_state(config, model, tx, images.shape[1:], len(labels), jax.random.key(0), mesh)
  loader = pipeline.Loader(mesh, images, labels, len(labels), crop_padding=2, flip=True)
  batch = loader.batch(np.arange(len(labels)), jax.random.key(1))
  train_step = step_lib.make_train_step(model, tx, config, mesh, jax.random.key(2))
  hparams = methods.hparams(config, epoch=8, first_step=0)
  metrics, history = step_lib.zero_metrics(config), [jax.device_get(state)]
  for _ in range(steps):
    state, metrics = train_step(state, batch, hparams, metrics)
    history.append(jax.device_get(state))
  return history[-1], jax.device_get(metrics), history


@pytest.fixture(scope='module')
def digits():
  from sklearn.datasets import load_digits
  d = load_digits()
  return (np.round(d.images[:16, :, :, None] * 255 / 16).astype(np.uint8), d.target[:16].astype(np.int32))


# FAT-TRADES and FAT-MART are FAT's attack with TRADES' and MART's losses, LAS-TRADES LAS-AT's step with TRADES'
# loss, each part covered by another case.
@pytest.mark.parametrize('method', sorted(set(methods.METHODS) - {'fat_trades', 'fat_mart', 'las_trades'}))
def test_one_step_is_the_same_on_one_and_two_devices(digits, method):
  assert jax.device_count() == 2, 'conftest asks for 2 CPU devices'
  config = load_config(method, 'digits')   # each method's own config, on the quick-start data
  config.batch_size = len(digits[1])       # the batch below: Free-AT and FGSM-BP keep one slot per example of it
  config.attack.compact_min_size = 4        # early-stopped attacks compact 16 -> 8 -> 4 and 8 -> 4 examples
  if method == 'cat':
    config.cat.batch_mixing = False   # with it, each device mixes its own shard: another function of the batch
  one = one_step(config, jax.devices()[:1], *digits)
  two = one_step(config, jax.devices()[:2], *digits)
  for a, b in zip(jax.tree.leaves((one[0].params, one[0].batch_stats)),
                  jax.tree.leaves((two[0].params, two[0].batch_stats))):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert one[1]['attack_steps'] == two[1]['attack_steps']
  assert one[1]['examples'] == two[1]['examples'] == 16
  np.testing.assert_allclose(one[1]['loss'], two[1]['loss'], rtol=1e-5)
  moved = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(one[0].params), jax.tree.leaves(
      ts.create_train_state(train.build_model(config, 10), step_lib.make_optimizer(config, 10), (8, 8, 1),
                                  jax.random.key(0), ts.make_mesh(jax.devices()[:1])).params)))
  assert moved > 1e-4, 'the step should change the parameters'


def test_per_device_batch_norm_differs_from_global(digits):
  config = load_config('quickstart', bn_stats='per_device')
  per_device = one_step(config, jax.devices()[:2], *digits)
  config.bn_stats = 'global'
  global_bn = one_step(config, jax.devices()[:2], *digits)
  gap = max(float(np.abs(a - b).max()) for a, b in zip(jax.tree.leaves(per_device[0].params),
                                                       jax.tree.leaves(global_bn[0].params)))
  assert gap > 1e-6


def test_bfloat16_compute_keeps_float32_parameters_and_optimiser_state(digits):
  config = load_config('madry', 'digits')
  full = one_step(config, jax.devices()[:2], *digits)
  config.model.dtype = 'bfloat16'
  mixed = one_step(config, jax.devices()[:2], *digits)
  leaves = jax.tree.leaves((mixed[0].params, mixed[0].opt_state, mixed[0].batch_stats))
  assert {leaf.dtype for leaf in leaves if leaf.ndim} == {np.dtype(np.float32)}
  np.testing.assert_allclose(mixed[1]['loss'], full[1]['loss'], rtol=0.05)   # same loss up to bf16 rounding
  assert mixed[1]['loss'] != full[1]['loss']                                  # ... but computed in bf16


def test_ema_follows_the_weights_with_warm_up(digits):
  config = load_config('madry', 'digits', ema_decay=0.5)
  _, _, history = one_step(config, jax.devices()[:2], *digits, steps=3)
  assert history[0].ema is not None
  ema = history[0].variables
  for t, state in enumerate(history[1:]):
    decay = min(0.5, (1 + t) / (10 + t))   # 0.1, 0.18, 0.25: TensorFlow's warm-up, then the decay itself
    ema = jax.tree.map(lambda e, v: decay * e + (1 - decay) * v, ema, state.variables)
    for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(state.ema)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_schedules_by_epoch():
  fat_tau = ((1, 0), (51, 1), (91, 2))
  assert [schedules.value_at(fat_tau, e) for e in (1, 50, 51, 90, 91, 120)] == [0, 0, 1, 1, 2, 2]
  lr = ((1, 0.1), (60, 0.01), (90, 0.001))
  per_step = schedules.per_step(lr, steps_per_epoch=10)
  for count, epoch in [(0, 1), (589, 59), (590, 60), (899, 90), (900, 91), (5000, 501)]:
    np.testing.assert_allclose(per_step(count), schedules.value_at(lr, epoch), rtol=1e-6)


def test_batches_crop_flip_and_pad():
  mesh = ts.make_mesh()
  images = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4, 1) + 1    # no zeros: padding is visible
  labels = np.arange(6, dtype=np.int32)
  plain = pipeline.Loader(mesh, images, labels, 4)
  last = jax.device_get(list(plain.batches(plain.eval_positions(), jax.random.key(0)))[-1])
  np.testing.assert_array_equal(last['mask'], [True, True, False, False])
  np.testing.assert_array_equal(last['label'][:2], [4, 5])
  np.testing.assert_allclose(last['image'][:2], images[4:6] / 255.0)

  augment = pipeline.Loader(mesh, images, labels, 6, crop_padding=1, flip=True)
  order = np.asarray([5, 4, 3, 2, 1, 0])
  out = np.asarray(augment.batch(order, jax.random.key(3))['image'] * 255).round()
  again = np.asarray(augment.batch(order[::-1], jax.random.key(3))['image'] * 255).round()
  np.testing.assert_array_equal(out, again[::-1])   # augmentation is keyed by dataset index, not batch position
  for row, index in enumerate(order):
    padded = np.pad(images[index, :, :, 0].astype(float), 1)
    candidates = [padded[dy:dy + 4, dx:dx + 4] for dy in range(3) for dx in range(3)]
    candidates += [c[:, ::-1] for c in candidates]
    assert any(np.array_equal(out[row, :, :, 0], c) for c in candidates)


@pytest.mark.parametrize('processes', [1, 2, 3])
def test_process_shards_split_every_batch_and_the_test_set(processes):
  """Each process's shard positions, mapped back to dataset indices: disjoint global batches and full coverage."""
  mesh, n, batch = ts.make_mesh(), 23, 6
  images, labels = np.zeros((n, 2, 2, 1), np.uint8), np.arange(n, dtype=np.int32)
  shards = [pipeline.Loader(mesh, images, labels, batch, process_index=p, process_count=processes)
            for p in range(processes)]
  key = jax.random.key(0)
  train = [s.indices[s.train_positions(key, 1)].reshape(-1, batch // processes) for s in shards]
  assert len({t.shape for t in train}) == 1 and train[0].shape[0] == n // processes // (batch // processes)
  seen = np.concatenate(train, axis=1)
  assert len(np.unique(seen)) == seen.size            # no example twice in an epoch
  if processes == 1:
    np.testing.assert_array_equal(seen.ravel(), pipeline.epoch_order(key, 1, n)[:seen.size])
  evaluated = np.concatenate([s.indices[p[p >= 0]] for s in shards for p in [s.eval_positions()]])
  np.testing.assert_array_equal(np.sort(evaluated), labels)   # the test set once
  assert len({len(s.eval_positions()) for s in shards}) == 1   # as many eval batches on every process


def test_per_epoch_evaluation_subset_is_spread_over_a_class_grouped_split():
  labels = np.repeat(np.arange(10), 100)   # grouped by class, as the CIFAR-10 JPEG folders are read
  rows = train.eval_subset(len(labels), 200, seed=0)
  assert len(rows) == 200 and len(set(rows)) == 200 and np.all(np.diff(rows) > 0)
  assert np.bincount(labels[rows], minlength=10).min() >= 10   # every class, not the first two
  np.testing.assert_array_equal(train.eval_subset(len(labels), -1, seed=0), np.arange(1000))
