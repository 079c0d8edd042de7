"""FAB-T: the L-inf projection against linprog, minimal perturbations of linear classifiers, the cascade's contract."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

from advjax.attacks.fab_attack import fab_targeted, projection_linf

from helpers import C, D, mlp_logits, mlp_params


def linprog_min_linf(t, w, b):
  """min ||d||_inf s.t. w.(t + d) = b, 0 <= t + d <= 1, exactly (None where infeasible). Variables: (d, s)."""
  dim = len(t)
  bound_d = np.block([[np.eye(dim), -np.ones((dim, 1))], [-np.eye(dim), -np.ones((dim, 1))]])   # |d_i| <= s
  res = linprog(np.r_[np.zeros(dim), 1.0], A_ub=bound_d, b_ub=np.zeros(2 * dim), A_eq=np.r_[w, 0.0][None],
                b_eq=[b - w @ t], bounds=[(-ti, 1 - ti) for ti in t] + [(0, None)], method='highs')
  return res.fun if res.status == 0 else None


def linear_model(seed, dim, classes):
  rng = np.random.RandomState(seed)
  W, bias = rng.randn(dim, classes).astype(np.float32), (0.1 * rng.randn(classes)).astype(np.float32)
  return (lambda v: v.reshape(v.shape[0], -1) @ W + bias), W, bias


def min_linf_to_target(W, bias, x, y, t):
  """The closed-form (LP) smallest L-inf perturbation putting x on the boundary z_t = z_y."""
  w = (W[:, t] - W[:, y]).astype(float)
  return linprog_min_linf(x.ravel().astype(float), w, -float(bias[t] - bias[y]))


def numpy_projection_linf(t, w, b):
  """fab_projections.projection_linf transliterated (boolean subsets and all)."""
  w, b = w * 1.0, b * 1.0
  sign = 2 * ((w * t).sum(1) - b >= 0) - 1
  w, b = w * sign[:, None], b * sign
  a = (w < 0).astype(float)
  d = (a - t) * (w != 0)
  p = a - t * (2 * a - 1)
  indp = np.argsort(p, axis=1)
  b = b - (w * t).sum(1)
  b0 = (w * d).sum(1)
  indp2 = indp[:, ::-1]
  ws = np.take_along_axis(w, indp2, 1)
  s = np.cumsum(np.abs(ws), 1)
  sb = np.cumsum(-ws * np.take_along_axis(d, indp2, 1), 1) + b0[:, None]
  b2 = sb[:, -1] - s[:, -1] * p[np.arange(len(p)), indp[:, 0]]
  c_l = b - b2 > 0
  c2 = (b - b0 > 0) & (b - b2 <= 0)
  lb, ub = np.zeros(c2.sum()), np.full(c2.sum(), w.shape[1] - 1.0)
  rows = np.arange(c2.sum())
  for _ in range(int(np.ceil(np.log2(w.shape[1])))):
    mid = np.floor((lb + ub) / 2)
    k = mid.astype(int)
    current = indp[c2][rows, w.shape[1] - 1 - k]
    c = b[c2] - (sb[c2][rows, k] - s[c2][rows, k] * p[c2][rows, current]) > 0
    lb, ub = np.where(c, mid, lb), np.where(c, ub, mid)
  lb = lb.astype(int)
  if c_l.any():
    d[c_l] = (2 * a[c_l] - 1) * np.maximum((b[c_l] - sb[c_l, -1]) / -s[c_l, -1], 0)[:, None]
  lmbd = np.maximum((b[c2] - sb[c2, lb]) / -s[c2, lb], 0)[:, None]
  d[c2] = np.minimum(lmbd, d[c2]) * a[c2] + np.maximum(-lmbd, d[c2]) * (1 - a[c2])
  return d * (w != 0)


def numpy_fab_t(p, x, y, eps, n_iter, n_targets, alpha_max=0.1, eta=1.05, beta=0.9):
  """fab_base.FABAttack.perturb (targeted) around attack_single_run, on flat inputs, subsetting as the original."""
  def logits(v):
    return np.tanh(v @ p['w1'] + p['b1']) @ p['w2'] + p['b2']

  def margin_and_grad(v, la, la_target):   # get_diff_logits_grads_batch_targeted for the tanh MLP
    h = np.tanh(v @ p['w1'] + p['b1'])
    z = h @ p['w2'] + p['b2']
    dz = np.eye(C)[la_target] - np.eye(C)[la]
    return (z * dz).sum(1), ((dz @ p['w2'].T) * (1 - h ** 2)) @ p['w1'].T

  adv, acc, steps = x.copy(), logits(x).argmax(1) == y, np.zeros(len(x), int)
  for target_class in range(2, n_targets + 2):
    ind = np.nonzero(acc)[0]
    if not len(ind):
      continue
    x0, la = x[ind], y[ind]
    la_target = np.argsort(logits(x0), axis=1)[:, -target_class]
    x1, best, res2 = x0.copy(), x0.copy(), np.full(len(ind), 1e10)
    for _ in range(n_iter):
      df, w = margin_and_grad(x1, la, la_target)
      b = -df + (w * x1).sum(1)
      d3 = numpy_projection_linf(np.concatenate([x1, x0]), np.concatenate([w, w]), np.concatenate([b, b]))
      a0 = np.maximum(np.abs(d3).max(1), 1e-8)[:, None]
      a1, a2 = a0[:len(ind)], a0[len(ind):]
      alpha = np.minimum(np.maximum(a1 / (a1 + a2), 0), alpha_max)
      x1 = np.clip((x1 + eta * d3[:len(ind)]) * (1 - alpha) + (x0 + d3[len(ind):] * eta) * alpha, 0, 1)
      hit = np.nonzero(logits(x1).argmax(1) != la)[0]
      t = np.abs(x1[hit] - x0[hit]).max(1)
      better = t < res2[hit]
      best[hit[better]] = x1[hit[better]]
      res2[hit] = np.where(better, t, res2[hit])
      x1[hit] = x0[hit] + (x1[hit] - x0[hit]) * beta
    steps[ind] += n_iter
    adv_curr = np.where((res2 < 1e10)[:, None], best, x0)
    robust = (logits(adv_curr).argmax(1) == la) | (np.abs(x0 - adv_curr).max(1) > eps)
    acc[ind[~robust]] = False
    adv[ind[~robust]] = adv_curr[~robust]
  return adv, steps


@pytest.mark.parametrize('dim', [1, 5, 8, 13])
def test_projection_linf_matches_linprog(dim):
  rng = np.random.RandomState(dim)
  n = 60
  t = rng.uniform(0, 1, (n, dim)).astype(np.float32)
  w = rng.randn(n, dim).astype(np.float32)
  w[rng.rand(n, dim) < 0.2] = 0                                              # flat coordinates too
  # Hyperplanes through a box point at varying distance: exercises both the all-capped and the bisection cases.
  z = t + rng.uniform(0, 1, (n, 1)) ** 3 * (rng.uniform(0, 1, (n, dim)) - t)
  b = (w * z).sum(1).astype(np.float32)
  b[:5] = (np.abs(w[:5]).sum(1) + 1) * np.sign(rng.randn(5))                  # and hyperplanes missing the box
  d = np.asarray(jax.jit(projection_linf)(t, w, b))
  moved = t + d
  assert moved.min() >= -1e-6 and moved.max() <= 1 + 1e-6
  for i in range(n):
    optimum = linprog_min_linf(t[i].astype(float), w[i].astype(float), float(b[i]))
    if optimum is None:     # missed box: d goes to the box vertex whose w.z is nearest to b
      nearest = np.where(b[i] > w[i] @ t[i], np.maximum(w[i], 0).sum(), np.minimum(w[i], 0).sum())
      np.testing.assert_allclose(w[i] @ moved[i], nearest, atol=1e-5)
    else:
      np.testing.assert_allclose(w[i] @ moved[i], b[i], atol=1e-5)
      np.testing.assert_allclose(np.abs(d[i]).max(), optimum, atol=1e-6)
  assert sum(linprog_min_linf(t[i].astype(float), w[i].astype(float), float(b[i])) is None for i in range(5)) == 5


@pytest.mark.parametrize('eta, rel_tol', [(1.05, 1e-2), (1.0005, 1e-3)])
def test_linear_classifier_minimal_perturbation(eta, rel_tol):
  """On a linear model the linearisation is exact: FAB-T lands just past the closest target-boundary point. With
  AutoAttack's eta = 1.05 the best iterate sits about 0.5% beyond it (the overshoot/backward-step fixed point);
  with eta -> 1 it is the closed-form optimum."""
  logits_fn, W, bias = linear_model(0, dim=4, classes=2)
  x = np.random.RandomState(1).uniform(0, 1, (6, 2, 2, 1)).astype(np.float32)
  y = np.asarray(logits_fn(x).argmax(-1))
  out = jax.jit(lambda x, y: fab_targeted(logits_fn, x, y, None, eps=1.0, eta=eta))(x, y)
  norms = np.abs(np.asarray(out.x_adv) - x).reshape(6, -1).max(1)
  optimum = np.array([min_linf_to_target(W, bias, x[i], y[i], 1 - y[i]) for i in range(6)])
  assert np.all(norms >= optimum * (1 - 1e-5)), 'cannot beat the optimum'
  np.testing.assert_allclose(norms, optimum, rtol=rel_tol)
  np.testing.assert_array_equal(np.asarray(logits_fn(out.x_adv).argmax(-1)), 1 - y)   # the target
  np.testing.assert_array_equal(np.asarray(out.steps), 100)


def test_cascade_breaks_exactly_the_examples_within_eps():
  """4 classes (3 targets): an example is broken iff its smallest adversarial perturbation (the LP optimum over all
  targets) is within eps; broken points are misclassified within eps, the rest come back clean."""
  logits_fn, W, bias = linear_model(2, dim=4, classes=4)
  batch = 12
  x = np.random.RandomState(3).uniform(0, 1, (batch, 2, 2, 1)).astype(np.float32)
  y = np.asarray(logits_fn(x).argmax(-1))
  y[0] = (y[0] + 1) % 4                                                          # misclassified from the start
  smallest = np.array([min((v for t in range(4) if t != y[i]
                            for v in [min_linf_to_target(W, bias, x[i], y[i], t)] if v is not None), default=np.inf)
                       for i in range(batch)])
  smallest[0] = np.inf
  # eps in the widest relative gap between the examples' optima, so FAB's ~1% excess cannot blur the split
  values = np.sort(smallest[np.isfinite(smallest)])
  gap = np.argmax(values[1:] / values[:-1])
  assert values[gap + 1] / values[gap] > 1.1
  eps = float(np.sqrt(values[gap] * values[gap + 1]))
  out = jax.jit(lambda x, y: fab_targeted(logits_fn, x, y, jax.random.key(0), eps=eps))(x, y)
  x_adv, steps = np.asarray(out.x_adv), np.asarray(out.steps)
  norms = np.abs(x_adv - x).reshape(batch, -1).max(1)
  broken = np.asarray(logits_fn(x_adv).argmax(-1)) != y
  broken[0] = False
  assert x_adv.min() >= 0 and x_adv.max() <= 1 and np.all(norms <= eps + 1e-6)
  np.testing.assert_array_equal(broken, smallest <= eps)
  assert 0 < broken.sum() < batch - 1
  np.testing.assert_array_equal(x_adv[~broken], x[~broken])                    # not broken: clean input
  assert steps[0] == 0 and np.all(steps[~broken][1:] == 300)
  assert np.all(np.isin(steps[broken], [100, 200, 300]))


def test_batch_split_independence_and_per_example_eps():
  p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), mlp_params(4, scale=2.0))
  logits_fn = lambda v: mlp_logits(p, v)
  x = jax.random.uniform(jax.random.key(5), (8, 2, 2, 3))
  y = logits_fn(x).argmax(-1)
  eps = jnp.linspace(0.02, 0.3, 8)
  attack = jax.jit(lambda x, y, eps: fab_targeted(logits_fn, x, y, jax.random.key(0), eps=eps, steps=20))
  whole = attack(x, y, eps)
  halves = [attack(x[s], y[s], eps[s]) for s in (slice(0, 4), slice(4, 8))]
  np.testing.assert_allclose(np.asarray(whole.x_adv), np.concatenate([h.x_adv for h in halves]), atol=1e-6)
  np.testing.assert_array_equal(np.asarray(whole.steps), np.concatenate([h.steps for h in halves]))
  norms = jnp.abs(whole.x_adv - x).reshape(8, -1).max(1)
  assert bool(jnp.all(norms <= eps + 1e-6))
  broken = logits_fn(whole.x_adv).argmax(-1) != y
  assert 0 < int(broken.sum()) < 8, 'the case should break some examples and not others'


def test_matches_numpy_transliteration_of_the_official_loop():
  """The whole cascade (9 targets x 100 iterations) against the official code's loop transliterated to NumPy."""
  with jax.enable_x64(True):
    p = mlp_params(6, scale=2.0)
    rng = np.random.RandomState(7)
    x = rng.uniform(0, 1, (16, D))
    jax_p = jax.tree.map(jnp.asarray, p)
    logits_fn = lambda v: mlp_logits(jax_p, v)
    y = np.array(logits_fn(jnp.asarray(x)).argmax(-1))
    y[:2] = (y[:2] + 1) % C
    out = jax.jit(lambda x, y: fab_targeted(logits_fn, x, y, None, eps=0.08))(jnp.asarray(x), jnp.asarray(y))
    want_x, want_steps = numpy_fab_t(p, x, y, eps=0.08, n_iter=100, n_targets=min(9, C - 1))
  np.testing.assert_allclose(np.asarray(out.x_adv), want_x, atol=1e-9)
  np.testing.assert_array_equal(np.asarray(out.steps), want_steps)
  assert len(set(want_steps.tolist())) >= 3, 'the case should break examples at several targets'
