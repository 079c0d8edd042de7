"""Square attack (L-inf, L2 and L1): constraints, the official schedule, black-box success under gradient masking, query
accounting and independence from how the batch is split."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax.attacks import parts
from advjax.attacks.iterative import pgd
from advjax.attacks.square_attack import square, square_side

SHAPE, CLASSES, QUERIES = (6, 6, 3), 4, 200


def linear_model(seed, quantise=False):
  w = jax.random.normal(jax.random.key(seed), (int(np.prod(SHAPE)), CLASSES))

  def logits_fn(x):
    if quantise:   # round() has zero gradient: PGD sees no signal, Square only needs the logits
      x = jnp.round(x * 8) / 8
    return x.reshape(x.shape[0], -1) @ w

  return logits_fn


def batch(seed, n):
  return jax.random.uniform(jax.random.key(seed), (n,) + SHAPE)


@functools.partial(jax.jit, static_argnames=('logits_fn', 'n_queries', 'norm'))
def run_square(logits_fn, x, y, key, eps, n_queries=QUERIES, norm='linf'):
  return square(logits_fn, x, y, key, eps=eps, n_queries=n_queries, norm=norm)


def official_p_selection(it, p_init=0.8):
  """autoattack/square.py `p_selection` with rescale_schedule False, transcribed."""
  for bound, k in [(8000, 9), (6000, 8), (4000, 7), (2000, 6), (1000, 5), (500, 4), (200, 3), (50, 2), (10, 1)]:
    if it > bound:
      return p_init / 2 ** k
  return p_init


def test_square_side_follows_the_official_schedule():
  for shape in [(32, 32, 3), (28, 28, 1), SHAPE, (2, 40, 3)]:   # a strip: the square is clamped to its height
    h, w, c = shape
    its = np.arange(10000)
    want = [min(max(int(round(np.sqrt(official_p_selection(it) * c * h * w / c))), 1), min(h, w)) for it in its]
    np.testing.assert_array_equal(np.asarray(square_side(jnp.asarray(its), shape)), want)
  assert [int(square_side(i, (32, 32, 3))) for i in (0, 11, 51, 201, 3000, 4999)] == [29, 20, 14, 10, 4, 3]
  assert int(square_side(0, (2, 40, 3))) == 2   # 8 unclamped


def test_points_stay_in_the_ball_and_the_box():
  for seed in range(3):
    x, eps = batch(seed, 8), 0.05 * (seed + 1)
    x = x.at[0].set(0.0).at[1].set(1.0)   # corners of the box
    logits_fn = linear_model(seed)
    for norm, radius in (('linf', eps), ('l2', 4 * eps), ('l1', 12 * eps)):
      out = run_square(logits_fn, x, logits_fn(x).argmax(-1), jax.random.key(seed), radius, norm=norm)
      delta = (out.x_adv - x).reshape(len(x), -1)
      size = {'linf': jnp.abs(delta).max(-1), 'l2': jnp.sqrt((delta ** 2).sum(-1)), 'l1': jnp.abs(delta).sum(-1)}[norm]
      assert float(size.max()) <= radius * (1 + 1e-5) + 1e-5, norm
      assert float(out.x_adv.min()) >= 0.0 and float(out.x_adv.max()) <= 1.0


def test_l2_sides_follow_the_official_schedule():
  h, w, c = SHAPE
  for it in (0, 11, 51, 201, 3000):
    side = max(int(round(np.sqrt(official_p_selection(it) * c * h * w / c))), 3)
    side = min(side + (side % 2 == 0), h, w)
    assert int(square_side(it, SHAPE, norm='l2')) == side


@pytest.mark.parametrize('norm, eps', [('linf', 0.1), ('l2', 0.6)])
def test_beats_pgd_when_gradients_are_masked(norm, eps):
  logits_fn = linear_model(1, quantise=True)
  x = batch(1, 32)
  y = logits_fn(x).argmax(-1)
  key = jax.random.key(2)
  accuracy = lambda x_adv: float((logits_fn(x_adv).argmax(-1) == y).mean())
  pgd_out = jax.jit(lambda x, y: pgd(logits_fn, x, y, key, eps=eps, step_size=eps / 4, steps=20, norm=norm))(x, y)
  square_out = run_square(logits_fn, x, y, key, eps, norm=norm)
  assert accuracy(square_out.x_adv) <= accuracy(pgd_out.x_adv) - 0.4, (accuracy(square_out.x_adv),
                                                                       accuracy(pgd_out.x_adv))


def test_query_accounting_and_untouched_points():
  logits_fn = linear_model(3)
  x = batch(3, 16)
  y = logits_fn(x).argmax(-1)
  y = y.at[:4].set((y[:4] + 1) % CLASSES)   # misclassified from the start
  eps = 0.05
  out = run_square(logits_fn, x, y, jax.random.key(3), eps)
  steps, x_adv = np.asarray(out.steps), np.asarray(out.x_adv)
  np.testing.assert_array_equal(steps[:4], 0)
  np.testing.assert_array_equal(x_adv[:4], np.asarray(x[:4]))
  broken = np.asarray(logits_fn(out.x_adv).argmax(-1) != y)[4:]
  assert 0 < broken.sum() < 12, 'the case should have both broken and robust examples'
  assert (steps[4:] >= 1).all() and (steps <= QUERIES + 1).all()
  np.testing.assert_array_equal(steps[4:][~broken], QUERIES + 1)   # robust: the whole budget, returned clean
  np.testing.assert_array_equal(x_adv[4:][~broken], np.asarray(x[4:])[~broken])
  assert (steps[4:][broken] < QUERIES + 1).all()


def test_independent_of_batch_split():
  logits_fn = linear_model(4)
  x = batch(4, 12)
  y = logits_fn(x).argmax(-1)
  keys = parts.example_keys(jax.random.key(4), 12)
  eps = jnp.linspace(0.02, 0.08, 12)
  whole = run_square(logits_fn, x, y, keys, eps)
  half = run_square(logits_fn, x[:6], y[:6], keys[:6], eps[:6])
  np.testing.assert_array_equal(np.asarray(half.x_adv), np.asarray(whole.x_adv[:6]))
  np.testing.assert_array_equal(np.asarray(half.steps), np.asarray(whole.steps[:6]))
