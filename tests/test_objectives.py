"""Outer losses against NumPy references (values and what gradients flow through), FOSC, DAT and CAT attacks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from advjax import attacks, methods
from advjax.methods import cat, search
from helpers import C, D, load_config, mlp_logits, mlp_params, numpy_ce_gradient

B = 6


def np_softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def np_ce(z, y):
  return -np.log(np_softmax(z)[np.arange(len(y)), y])


def np_trades(nat, adv, y, beta):
  p, q = np_softmax(nat), np_softmax(adv)
  return np_ce(nat, y).mean() + beta * (p * (np.log(p) - np.log(q))).sum(-1).mean()


def np_mart(nat, adv, y, beta):
  """MART's official `mart_loss`, line by line."""
  adv_probs, nat_probs = np_softmax(adv), np_softmax(nat)
  top2 = np.argsort(adv_probs, axis=1)[:, -2:]
  new_y = np.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
  loss_adv = np_ce(adv, y).mean() - np.log(1.0001 - adv_probs + 1e-12)[np.arange(len(y)), new_y].mean()
  true_probs = nat_probs[np.arange(len(y)), y]
  kl = (nat_probs * (np.log(nat_probs) - np.log(adv_probs + 1e-12))).sum(1)
  return loss_adv + beta * (kl * (1.0000001 - true_probs)).sum() / len(y)


def counting_forward(v, count):
  """A 'model' whose logits are its input; the state counts forwards."""
  return v, count + 1


def numerical_gradient(f, *args, h=1e-6):
  """Central differences of f with respect to each argument (float64)."""
  grads = []
  for i, a in enumerate(args):
    g = np.zeros_like(a)
    for idx in np.ndindex(a.shape):
      up, down = [x.copy() for x in args], [x.copy() for x in args]
      up[i][idx] += h
      down[i][idx] -= h
      g[idx] = (f(*up) - f(*down)) / (2 * h)
    grads.append(g)
  return grads


def logits_case(seed):
  rng = np.random.RandomState(seed)
  nat, adv = rng.randn(B, C) * 2, rng.randn(B, C) * 2
  y = rng.randint(0, C, B)
  adv[0, y[0]] = 8.0                      # a confidently correct adversarial example
  adv[1] = [9.0 - 0.1 * k if k != y[1] else -9.0 for k in range(C)]   # near-ties between confident wrong classes
  return nat, adv, y


@pytest.mark.parametrize('name, reference', [('trades', np_trades), ('mart', np_mart)])
def test_losses_match_numpy_values_and_gradients(name, reference):
  config = load_config(name, beta=3.0)
  with jax.enable_x64(True):
    for seed in range(3):
      nat, adv, y = logits_case(seed)
      loss_fn = methods.METHODS[name].loss(config)
      value = lambda n, a: loss_fn(counting_forward, 0, n, a, jnp.asarray(y))[0]
      np.testing.assert_allclose(value(nat, adv), reference(nat, adv, y, 3.0), rtol=1e-10)
      # Every term is differentiated (nothing detached), as in the official code.
      grads = jax.grad(value, argnums=(0, 1))(jnp.asarray(nat), jnp.asarray(adv))
      want = numerical_gradient(lambda n, a: reference(n, a, y, 3.0), nat, adv)
      for got, expected in zip(grads, want):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_trades_forward_modes():
  nat, adv, y = logits_case(0)
  two = search.trades_loss(load_config('trades', trades_forwards=2))(counting_forward, 0, nat, adv, jnp.asarray(y))
  three = search.trades_loss(load_config('trades'))(counting_forward, 0, nat, adv, jnp.asarray(y))
  np.testing.assert_allclose(two[0], three[0], rtol=1e-6)
  assert two[1][1] == 2 and three[1][1] == 3
  np.testing.assert_array_equal(two[1][0], adv)   # reports the adversarial logits


def test_fosc_closed_form_on_a_linear_model():
  rng = np.random.RandomState(0)
  w = jnp.asarray(rng.randn(D), jnp.float32)
  x = jnp.asarray(rng.uniform(0.3, 0.7, (B, D)), jnp.float32)
  x_adv = x + jnp.asarray(rng.uniform(-0.05, 0.05, (B, D)), jnp.float32)
  grad = jax.grad(lambda v: (v @ w).sum())(x_adv)   # per-example gradients of a summed linear loss: w
  want = 0.1 * jnp.abs(w).sum() - (x_adv - x) @ w
  np.testing.assert_allclose(attacks.fosc(x_adv, x, grad, 0.1), want, rtol=1e-5)
  vertex = x + 0.1 * jnp.sign(w)                    # the point of the ball that maximises the linear loss
  np.testing.assert_allclose(attacks.fosc(vertex, x, grad, 0.1), 0.0, atol=1e-5)

  linear_loss = lambda logits_fn, x, y: lambda logits: logits[:, 0]
  out = attacks.pgd_fosc(lambda v: (v @ w)[:, None], x, jnp.zeros(B, jnp.int32), jax.random.key(0), eps=0.1,
                         step_size=0.1, steps=5, threshold=1e-4, init="none", loss=linear_loss)
  np.testing.assert_array_equal(out.steps, 1)      # one step reaches the vertex, where FOSC is 0 (to rounding)
  np.testing.assert_allclose(out.x_adv, vertex, atol=1e-6)
  np.testing.assert_allclose(out.fosc, 0.0, atol=1e-5)


def numpy_dat(p, x, y, eps, alpha, K, c):
  """DAT's `pgd_attack.py` loop (reference = clean input, no random start)."""
  x_adv, moving = x.copy(), np.ones(len(x), bool)
  _, g = numpy_ce_gradient(p, x_adv, y)
  steps = np.zeros(len(x), int)
  for _ in range(K):
    x_adv = np.where(moving[:, None], np.clip(np.clip(x_adv + alpha * np.sign(g), x - eps, x + eps), 0, 1), x_adv)
    steps += moving
    _, g = numpy_ce_gradient(p, x_adv, y)
    fosc = eps * np.abs(g).sum(1) - ((x_adv - x) * g).sum(1)
    moving &= fosc > c
  return x_adv, steps, fosc


def test_dat_freezes_exactly_the_examples_at_or_below_the_threshold():
  with jax.enable_x64(True):
    p = mlp_params(0)
    rng = np.random.RandomState(1)
    x, y = rng.uniform(0, 1, (64, D)), rng.randint(0, C, 64)
    jax_p = jax.tree.map(jnp.asarray, p)
    threshold = 0.5
    out = attacks.pgd_fosc(lambda v: mlp_logits(jax_p, v), jnp.asarray(x), jnp.asarray(y), jax.random.key(0),
                           eps=0.2, step_size=0.05, steps=8, threshold=threshold, init='none')
    want_x, want_steps, want_fosc = numpy_dat(p, x, y, eps=0.2, alpha=0.05, K=8, c=threshold)
  np.testing.assert_array_equal(out.steps, want_steps)
  np.testing.assert_allclose(out.x_adv, want_x, atol=1e-12)
  np.testing.assert_allclose(out.fosc, want_fosc, atol=1e-9)
  stopped = want_steps < 8
  assert 0 < stopped.sum() < 64
  assert (np.asarray(out.fosc)[stopped] <= threshold).all() and (np.asarray(out.fosc)[~stopped] > threshold).any()


def test_fosc_reference_point_option():
  p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), mlp_params(2))
  x = jax.random.uniform(jax.random.key(0), (B, D))
  y = jnp.zeros(B, jnp.int32)
  kw = dict(eps=0.1, step_size=0.025, steps=4, threshold=0.0)
  clean = attacks.pgd_fosc(lambda v: mlp_logits(p, v), x, y, jax.random.key(1), **kw)
  start = attacks.pgd_fosc(lambda v: mlp_logits(p, v), x, y, jax.random.key(1), reference='start', **kw)
  assert not np.allclose(clean.fosc, start.fosc)
  with pytest.raises(ValueError, match="'clean' or 'start'"):
    attacks.pgd_fosc(lambda v: mlp_logits(p, v), x, y, jax.random.key(1), reference='origin', **kw)


def test_cat_levels_follow_the_schedule_and_cut_the_batch_into_k_plus_one_parts():
  config = load_config('cat', 'fat_table1,digits')
  assert [cat.steps_hparams(config, e)['steps'] for e in (1, 2, 3, 15)] == [0, 1, 2, 10]
  for batch_size, k in [(8, 0), (8, 2), (8, 3), (200, 7), (9, 8)]:
    parts = cat.parts(batch_size, k)
    assert [steps for _, _, steps in parts] == list(range(k + 1))
    assert [start for start, _, _ in parts] == [0] + [stop for _, stop, _ in parts[:-1]]   # contiguous
    assert parts[-1][1] == batch_size and {stop - start for start, stop, _ in parts[:-1]} <= {batch_size // (k + 1)}
  assert cat.parts(8, 3, batch_mixing=False) == [(0, 8, 3)]


def test_dat_threshold_schedule():
  config = load_config('dat')
  values = [search.fosc_hparams(config, e)['fosc_threshold'] for e in (1, 51, 101, 120)]
  np.testing.assert_allclose(values, [0.5, 0.25, 0.0, 0.0])
