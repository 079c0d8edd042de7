"""Fast and learned methods' parts: the sharded per-example memory, FGSM-PGI's memory through a shuffled epoch and
a resume, FGSM-SDI's generator range, AWP's perturbation, label-smoothed CE and the cyclic learning rate."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from advjax import checkpoint, methods, models, schedules, train
from advjax.methods import awp, memory, search
from advjax import step as step_lib
from advjax import train_state as ts
from advjax.data import pipeline
from advjax.models import generator
from helpers import load_config


def test_memory_rows_follow_the_dataset_index_across_devices():
  mesh = ts.make_mesh(jax.devices()[:2])
  rows = ts.memory_rows(9, mesh)
  assert rows == 10   # padded to whole rows per device
  sharded = NamedSharding(mesh, P(ts.AXIS))
  table = jax.device_put(jnp.zeros((rows, 3)), sharded)
  read_then_write = jax.jit(jax.shard_map(lambda m, i, v: (memory.read(m, i), memory.write(m, i, v)), mesh=mesh,
                                          in_specs=(P(ts.AXIS),) * 3, out_specs=(P(ts.AXIS),) * 2))
  put = lambda a: jax.device_put(jnp.asarray(a, jnp.float32 if np.ndim(a) > 1 else jnp.int32), sharded)
  order = np.random.RandomState(0).permutation(9)
  value = lambda index: index[:, None] + np.array([0.0, 0.1, 0.2])
  for batch in (order[:4], order[4:8]):   # each device writes rows another device holds, and its own
    before, table = read_then_write(table, put(batch), put(value(batch)))
    np.testing.assert_array_equal(before, 0)
  stored = np.asarray(table)
  np.testing.assert_allclose(stored[order[:8]], value(order[:8]))
  np.testing.assert_array_equal(stored[order[8:]], 0)   # never written: unchanged
  again, _ = read_then_write(table, put(order[:8][::-1]), put(np.zeros((8, 3))))
  np.testing.assert_allclose(again, value(order[:8][::-1]))


@pytest.fixture(scope='module')
def digits():
  from sklearn.datasets import load_digits
  d = load_digits()
  return (np.round(d.images[:16, :, :, None] * 255 / 16).astype(np.uint8), d.target[:16].astype(np.int32))


def expected_pgi_delta(config, variables, x, y, delta0):
  """FGSM-EP's new perturbation by hand: the model in training mode on the whole global batch."""
  model = models.from_config(config.model, 10)   # no mapped axis: BatchNorm over the whole batch
  def loss(v):
    logits, _ = model.apply(variables, v, train=True, mutable=['batch_stats'])
    return search.smoothed_cross_entropy(logits, y, config.label_confidence).mean()
  grad = jax.grad(loss)(x + delta0)
  a = config.attack
  return np.clip(x + np.clip(delta0 + a.step_size * np.sign(grad), -a.eps, a.eps), 0, 1) - x


def test_pgi_memory_after_a_shuffled_epoch_and_a_resume(digits, tmp_path):
  images, labels = digits
  config = load_config('fgsm_pgi', 'digits,ep', batch_size=8)
  mesh = ts.make_mesh(jax.devices()[:2])
  model = train.build_model(config, 10)
  tx = step_lib.make_optimizer(config, steps_per_epoch=2)
  state = train.create_state(config, model, tx, images.shape[1:], len(labels), jax.random.key(0), mesh)
  loader = pipeline.Loader(mesh, images, labels, config.batch_size)
  train_step = step_lib.make_train_step(model, tx, config, mesh, jax.random.key(2))
  hparams, sums = methods.hparams(config, 1, first_step=0), step_lib.zero_metrics(config)
  positions = loader.train_positions(jax.random.key(3), epoch=1)
  assert not np.array_equal(positions, np.arange(len(positions))), 'the epoch should be shuffled'
  for batch in loader.batches(positions, jax.random.key(4)):
    before = jax.device_get(state)
    index, x, y = (np.asarray(batch[k]) for k in ('index', 'image', 'label'))
    state, sums = train_step(state, batch, hparams, sums)
    stored = np.asarray(state.memory['delta'])
    expected = expected_pgi_delta(config, before.variables, x, y, before.memory['delta'][index])
    differs = lambda a, b: np.mean(np.abs(a - b) > 1e-5)
    assert differs(stored[index], expected) < 0.01   # (a near-zero gradient may flip a sign or two)
    assert differs(stored[index], np.roll(expected, 1, axis=0)) > 0.2, 'a neighbour\'s perturbation would differ'
    others = np.setdiff1d(np.arange(len(labels)), index)
    np.testing.assert_array_equal(stored[others], before.memory['delta'][others])

  saver = checkpoint.Checkpointer(tmp_path)
  saver.save(1, state, sums)
  saver.close()
  fresh = train.create_state(config, model, tx, images.shape[1:], len(labels), jax.random.key(9), mesh)
  restored, restored_sums, batches_done = checkpoint.Checkpointer(tmp_path).restore(fresh, step_lib.zero_metrics(config))
  assert batches_done == 1
  np.testing.assert_array_equal(restored_sums['loss'], sums['loss'])
  np.testing.assert_array_equal(restored.memory['delta'], state.memory['delta'])
  assert restored.memory['delta'].sharding.spec == P(ts.AXIS)


def test_sdi_generator_output_stays_in_the_eps_ball():
  eps = 8 / 255
  net = generator.SDIGenerator(eps=eps)
  x = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
  grad_sign = jnp.sign(jax.random.normal(jax.random.key(1), x.shape))
  variables = net.init(jax.random.key(2), x, grad_sign, train=False)
  scaled = dict(variables, params=jax.tree.map(lambda p: 50 * p, variables['params']))   # drive tanh to saturation
  for v in (variables, scaled):
    out_eval = net.apply(v, x, grad_sign, train=False)
    out_train, _ = net.apply(v, x, grad_sign, train=True, mutable=['batch_stats'])
    for out in (out_eval, out_train):
      assert out.shape == x.shape
      assert jnp.abs(out).max() <= np.float32(eps)   # eps as the float32 the generator computes in
  assert float(jnp.abs(out_train).max()) > 0.99 * eps   # the bound is reached, not merely respected


def test_awp_perturbs_each_weight_matrix_by_gamma_times_its_norm():
  rng = np.random.RandomState(0)
  params = dict(conv=dict(kernel=rng.randn(3, 3, 2, 4), bias=rng.randn(4)), bn=dict(scale=rng.randn(4)),
                dense=dict(kernel=rng.randn(5, 3)))
  grads = jax.tree.map(lambda p: rng.randn(*p.shape), params)
  v = awp.weight_perturbation(grads, params, 0.01)
  for path in (('conv', 'kernel'), ('dense', 'kernel')):
    w, g, d = (tree[path[0]][path[1]] for tree in (params, grads, v))
    np.testing.assert_allclose(np.linalg.norm(d), 0.01 * np.linalg.norm(w), rtol=1e-6)
    np.testing.assert_allclose(d / np.linalg.norm(d), g / np.linalg.norm(g), rtol=1e-6)
  np.testing.assert_array_equal(v['conv']['bias'], 0)   # biases and BatchNorm are not perturbed
  np.testing.assert_array_equal(v['bn']['scale'], 0)


def test_smoothed_cross_entropy_against_numpy():
  logits = np.random.RandomState(0).randn(5, 10)
  y = np.array([0, 3, 9, 3, 1])
  log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  targets = np.full((5, 10), 0.3 / 9)
  targets[np.arange(5), y] = 0.7
  np.testing.assert_allclose(search.smoothed_cross_entropy(logits, y, 0.7), -(targets * log_probs).sum(-1),
                             rtol=1e-5)
  np.testing.assert_allclose(search.smoothed_cross_entropy(logits, y, 1.0), search.cross_entropy(logits, y),
                             rtol=1e-5)


def test_linear_lr_schedule_is_wongs_cyclic_schedule():
  lr = schedules.per_step(((1, 0.0), (8.5, 0.2), (16, 0.0)), 10, 'linear')   # 15 epochs of 10 steps
  np.testing.assert_allclose([lr(s) for s in (0, 37.5, 75, 112.5, 150, 200)], [0, 0.1, 0.2, 0.1, 0, 0], atol=1e-7)
