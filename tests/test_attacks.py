"""Attacks: constraints, Algorithm 1 against a NumPy reference, PGD-K as a special case, and real effect."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from advjax import attacks
from advjax.attacks import losses, parts

from helpers import C, D, mlp_logits, mlp_params, numpy_ce_gradient

B = 16


def numpy_pgd_k_tau(p, x, y, eps, alpha, K, tau):
  """FAT's earlystop.py loop, shrinking the batch as the official code does, with labels kept aligned."""
  x_adv, counters = x.copy(), np.full(len(x), tau)
  active, steps = list(range(len(x))), np.zeros(len(x), int)
  for _ in range(K):
    logits, grad = numpy_ce_gradient(p, x_adv[active], y[active])
    still = []
    for row, i in enumerate(active):
      if logits[row].argmax() != y[i]:
        if counters[i] == 0:
          continue          # stopped: kept as it is
        counters[i] -= 1
      still.append((row, i))
    for row, i in still:
      stepped = x_adv[i] + alpha * np.sign(grad[row])
      x_adv[i] = np.clip(np.clip(stepped, x[i] - eps, x[i] + eps), 0, 1)
      steps[i] += 1
    active = [i for _, i in still]
    if not active:
      break
  return x_adv, steps


@pytest.mark.parametrize('tau', [0, 1, 3])
def test_pgd_k_tau_matches_numpy_algorithm_1(tau):
  with jax.enable_x64(True):
    p = mlp_params(0)
    rng = np.random.RandomState(tau)
    x = rng.uniform(0, 1, (64, D))
    y = rng.randint(0, C, 64)
    jax_p = jax.tree.map(jnp.asarray, p)
    out = attacks.pgd_k_tau(lambda v: mlp_logits(jax_p, v), jnp.asarray(x), jnp.asarray(y),
                            jax.random.key(0), eps=0.3, step_size=0.03, steps=10, tau=tau, init='none')
    want_x, want_steps = numpy_pgd_k_tau(p, x, y, eps=0.3, alpha=0.03, K=10, tau=tau)
  np.testing.assert_array_equal(np.asarray(out.steps), want_steps)
  np.testing.assert_allclose(np.asarray(out.x_adv), want_x, atol=1e-12)
  assert len(set(want_steps.tolist())) >= 3, 'the case should exercise several stopping steps'


def test_tau_equal_to_k_is_exactly_pgd_k():
  p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), mlp_params(1))
  x = jax.random.uniform(jax.random.key(1), (B, D))
  y = jax.random.randint(jax.random.key(2), (B,), 0, C)
  kw = dict(eps=0.1, step_size=0.02, steps=7, init='uniform', noise_std=0.001)
  logits_fn = lambda v: mlp_logits(p, v)
  for loss in (losses.cross_entropy, losses.kl_to_clean):
    early = attacks.pgd_k_tau(logits_fn, x, y, jax.random.key(3), tau=7, loss=loss, **kw)
    full = attacks.pgd(logits_fn, x, y, jax.random.key(3), loss=loss, **kw)
    np.testing.assert_array_equal(early.x_adv, full.x_adv)
    np.testing.assert_array_equal(early.steps, full.steps)
    assert (early.steps == 7).all()


@jax.jit
def _all_attacks(x, y, key, eps, step_size, tau):
  p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), mlp_params(2, scale=3.0))
  logits_fn = lambda v: mlp_logits(p, v)
  kw = dict(eps=eps, step_size=step_size, steps=5)
  return dict(
      fgsm=attacks.fgsm(logits_fn, x, y, key, eps=eps, init='uniform').x_adv,
      pgd=attacks.pgd(logits_fn, x, y, key, noise_std=0.05, restarts=2, **kw).x_adv,
      pgd_kl=attacks.pgd(logits_fn, x, y, key, loss=losses.kl_to_clean, init='gaussian', **kw).x_adv,
      pgd_cw=attacks.pgd(logits_fn, x, y, key, loss=losses.margin(50.0), **kw).x_adv,
      pgd_k_tau=attacks.pgd_k_tau(logits_fn, x, y, key, tau=tau, noise_std=0.05, **kw).x_adv)


def test_attacks_stay_in_eps_ball_and_pixel_box():
  rng = np.random.RandomState(0)
  for case in range(25):
    x = jnp.asarray(rng.choice([0.0, 1.0, 0.5], (B, D)) * rng.uniform(0.9, 1, (B, D)), jnp.float32)
    y = jnp.asarray(rng.randint(0, C, B))
    eps = jnp.asarray(rng.uniform(0, 0.3, B), jnp.float32)           # one radius per example
    step = jnp.asarray(rng.uniform(0, 0.2, B), jnp.float32)
    outs = _all_attacks(x, y, jax.random.key(case), eps, step, rng.randint(0, 4))
    for name, x_adv in outs.items():
      gap = np.abs(np.asarray(x_adv) - np.asarray(x)).max(axis=1)
      assert (gap <= np.asarray(eps) + 1e-6).all(), (name, case)
      assert float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1, (name, case)


def test_per_example_budget_and_tau():
  p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), mlp_params(3))
  x = jax.random.uniform(jax.random.key(0), (B, D))
  y = jnp.asarray(mlp_logits(p, x).argmax(-1))     # all correct at the start
  budget = jnp.arange(B) % 4
  out = attacks.pgd_k_tau(lambda v: mlp_logits(p, v), x, y, jax.random.key(0), eps=0.01, step_size=0.001,
                          steps=6, tau=100, budget=budget, init='none')
  np.testing.assert_array_equal(out.steps, budget)
  stopped_at_start = attacks.pgd_k_tau(lambda v: mlp_logits(p, v), x, (y + 1) % C, jax.random.key(0), eps=0.1,
                                       step_size=0.01, steps=6, tau=0)
  assert (stopped_at_start.steps == 0).all()   # misclassified with tau 0: zero steps


def test_restarts_keep_the_worst_case():
  p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), mlp_params(4))
  x = jax.random.uniform(jax.random.key(5), (64, D))
  y = jnp.asarray(mlp_logits(p, x).argmax(-1))
  logits_fn = lambda v: mlp_logits(p, v)
  kw = dict(eps=0.08, step_size=0.02, steps=3)
  key = jax.random.key(6)
  best = attacks.pgd(logits_fn, x, y, key, restarts=4, **kw)
  keys = parts.example_keys(key, 64)
  runs = [attacks.pgd(logits_fn, x, y, parts.fold_in(keys, r), **kw).x_adv for r in range(4)]
  wrong_any = np.any([np.asarray(logits_fn(r).argmax(-1) != y) for r in runs], axis=0)
  assert 0 < wrong_any.sum() < 64
  np.testing.assert_array_equal(np.asarray(logits_fn(best.x_adv).argmax(-1) != y), wrong_any)
  assert (best.steps == 12).all()


def test_losses_on_analytic_cases():
  logits = jnp.array([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
  y = jnp.array([0, 1])
  np.testing.assert_allclose(losses.logit_margin(logits, y), [2.0, -3.0])
  np.testing.assert_allclose(losses.margin(kappa=50.0)(None, None, y)(logits), [-52.0, -47.0])
  np.testing.assert_allclose(losses.margin()(None, None, y)(logits), [-2.0, 3.0])
  kl = losses.kl_to_clean(lambda v: v, logits, y)
  np.testing.assert_allclose(kl(logits), [0.0, 0.0], atol=1e-7)
  assert (kl(logits[::-1]) > 0).all()
  with pytest.raises(ValueError, match='unknown attack loss'):
    losses.get('hinge')


def test_fgsm_and_pgd_raise_the_loss_of_a_trained_model(digits_model):
  logits_fn, x, y = digits_model
  ce = lambda v: float(optax.softmax_cross_entropy_with_integer_labels(logits_fn(v), y).mean())
  acc = lambda v: float((logits_fn(v).argmax(-1) == y).mean())
  key = jax.random.key(0)
  x_fgsm = attacks.fgsm(logits_fn, x, y, key, eps=0.1).x_adv
  x_pgd = attacks.pgd(logits_fn, x, y, key, eps=0.1, step_size=0.025, steps=10).x_adv
  assert acc(x) > 0.9
  assert ce(x) < ce(x_fgsm) < ce(x_pgd)
  assert acc(x_pgd) < acc(x_fgsm) < acc(x) - 0.2


def test_compaction_cascade_sizes():
  assert attacks.compaction_sizes(128, 16) == [128, 64, 32, 16]
  assert attacks.compaction_sizes(100, 16) == [100, 50, 25]
  assert attacks.compaction_sizes(20, 16) == [20] and attacks.compaction_sizes(128, 0) == [128]


@pytest.mark.parametrize('attack', ['pgd_k_tau', 'pgd_k_tau_kl', 'pgd_fosc'])
def test_compaction_returns_the_points_and_steps_of_the_masked_loop(attack):
  """Stopping at many different steps, with per-example budgets, eps and noise, through four cascade sizes."""
  p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), mlp_params(2, scale=3.0))
  logits_fn = lambda v: mlp_logits(p, v)
  n = 64
  x = jax.random.uniform(jax.random.key(1), (n, D))
  y = jax.random.randint(jax.random.key(2), (n,), 0, C)
  kw = dict(eps=jnp.linspace(0.1, 0.3, n), step_size=0.03, steps=10)
  run = {
      'pgd_k_tau': lambda m: attacks.pgd_k_tau(logits_fn, x, y, jax.random.key(3), tau=1, noise_std=0.01,
                                               budget=jnp.arange(n) % 11, compact_min_size=m, **kw),
      'pgd_k_tau_kl': lambda m: attacks.pgd_k_tau(logits_fn, x, y, jax.random.key(3), tau=0, init='gaussian',
                                                  loss=losses.kl_to_clean, compact_min_size=m, **kw),
      'pgd_fosc': lambda m: attacks.pgd_fosc(logits_fn, x, y, jax.random.key(3), threshold=4.0, compact_min_size=m,
                                             **kw),
  }[attack]
  masked, compacted = jax.jit(lambda: run(0))(), jax.jit(lambda: run(8))()
  np.testing.assert_array_equal(compacted.steps, masked.steps)
  np.testing.assert_array_equal(compacted.x_adv, masked.x_adv)
  if masked.fosc is not None:
    np.testing.assert_array_equal(compacted.fosc, masked.fosc)
  counts = np.bincount(np.asarray(masked.steps))
  assert (counts > 0).sum() >= 3 and counts[-1] < n / 2, 'examples should stop at several steps, most early'


def test_per_example_strategies_equal_each_example_attacked_alone():
  """LAS-AT's attack: per-example eps, step and budget give what each example gets run alone with its own."""
  p = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), mlp_params(5, scale=3.0))
  logits_fn = lambda v: mlp_logits(p, v)
  n = 12
  x = jax.random.uniform(jax.random.key(7), (n, D))
  y = jax.random.randint(jax.random.key(8), (n,), 0, C)
  rng = np.random.RandomState(0)
  eps, step = rng.uniform(3, 15, n).astype(np.float32) / 255, rng.uniform(1, 5, n).astype(np.float32) / 255
  budget = rng.randint(0, 9, n)
  keys = parts.example_keys(jax.random.key(9), n)
  attack = jax.jit(lambda x, y, keys, eps, step, budget: attacks.per_example_pgd(
      logits_fn, x, y, keys, eps=eps, step_size=step, budget=budget, steps=8, start_eps=8 / 255,
      compact_min_size=2))
  together = attack(x, y, keys, eps, step, budget)
  np.testing.assert_array_equal(together.steps, budget)
  for i in range(n):
    alone = attack(x[i:i + 1], y[i:i + 1], keys[i:i + 1], eps[i:i + 1], step[i:i + 1], budget[i:i + 1])
    np.testing.assert_allclose(together.x_adv[i], alone.x_adv[0], atol=1e-6)
  gap = np.abs(np.asarray(together.x_adv - x)).max(axis=1)
  assert (gap[budget > 0] <= eps[budget > 0] + 1e-6).all()           # projected onto each example's own ball
  assert (budget == 0).any() and (0 < gap[budget == 0]).all() and (gap[budget == 0] <= 8 / 255 + 1e-6).all()  # starts
