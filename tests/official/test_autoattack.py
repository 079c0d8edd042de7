"""advjax's AutoAttack parts against the official code itself (pyautoattack 0.2.0, the package of fra31/auto-attack
at a392200: autoattack/autopgd_base.py, fab_pt.py, fab_projections.py, square.py), under L-inf and L2, from the
same start. (Square's draws are per batch in the official code and per example here, so only its L2 pattern is
compared point for point.)

Both sides run one float64 network (an MLP; NHWC in advjax, NCHW in PyTorch, flattened in the same order) in
float64, so that a sign or a step-size decision cannot flip on float32 rounding. APGD is compared at
`attack_single_run`, which takes advjax's start as `x_init` (its `perturb` casts to float32); FAB-T at `perturb`,
whose one restart starts at the clean point, in float32 (its `attack_single_run` casts the images to float32).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pyautoattack import autopgd_base, fab_projections, fab_pt
from pyautoattack import square as square_official

from advjax.attacks import auto_pgd, fab_attack, square_attack

SHAPE, CLASSES, BATCH = (4, 4, 3), 10, 32
EPS = {'linf': 0.02, 'l2': 0.125}
OFFICIAL_NORM = {'linf': 'Linf', 'l2': 'L2'}


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def mlp(dtype=np.float64, seed=0, hidden=32):
  """(advjax logits_fn on NHWC, the same network in PyTorch on NCHW), in `dtype`."""
  rng = np.random.RandomState(seed)
  w1 = (rng.randn(int(np.prod(SHAPE)), hidden) / 3).astype(dtype)
  w2 = rng.randn(hidden, CLASSES).astype(dtype)
  logits_fn = lambda x: jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2
  t1, t2 = torch.from_numpy(w1), torch.from_numpy(w2)
  torch_fn = lambda x: torch.tanh(x.permute(0, 2, 3, 1).reshape(x.shape[0], -1) @ t1) @ t2
  return logits_fn, torch_fn


def batch(seed=1):
  x = np.random.RandomState(seed).rand(BATCH, *SHAPE)
  return x, np.array(mlp()[0](jnp.asarray(x)).argmax(-1))   # labels: the clean predictions, all attackable


def nchw(a):
  return torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).contiguous()


def nhwc(t):
  return t.detach().permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize('dim', [3, 48, 200])
def test_projection_l2_matches_the_official(dim):
  rng = np.random.RandomState(dim)
  t, w, b = rng.rand(64, dim), rng.randn(64, dim), rng.randn(64) * dim / 4
  w[:4, :dim // 3] = 0   # coordinates the hyperplane ignores
  want = fab_projections.projection_l2(torch.from_numpy(t), torch.from_numpy(w), torch.from_numpy(b)).numpy()
  got = np.asarray(jax.jit(fab_attack.projection_l2)(t, w, b))
  np.testing.assert_allclose(got, want, atol=1e-10)
  inside = (t + got >= -1e-12) & (t + got <= 1 + 1e-12)
  assert inside.all()


@pytest.mark.parametrize('norm', ['linf', 'l2'])
@pytest.mark.parametrize('loss', ['ce', 'dlr_targeted'])
def test_apgd_matches_the_official_attack_single_run(norm, loss):
  logits_fn, torch_fn = mlp()
  x, y = batch()
  eps, steps = EPS[norm], 20
  noise = np.random.RandomState(3).uniform(-1, 1, x.shape) if norm == 'linf' else np.random.RandomState(3).randn(
      *x.shape)
  start = np.clip(x + eps * np.asarray(auto_pgd._normalize(jnp.asarray(noise), norm)), 0, 1)   # on the surface
  target = np.argsort(np.asarray(logits_fn(jnp.asarray(x))), -1)[:, -2]   # APGD-T's first target
  out = auto_pgd.apgd(logits_fn, jnp.asarray(x), jnp.asarray(y), jax.random.key(0), eps=eps, steps=steps, loss=loss,
                      target=jnp.asarray(target), norm=norm, start=start)
  got, broken = np.asarray(out.x_adv), np.asarray(logits_fn(out.x_adv).argmax(-1) != y)

  official_class = autopgd_base.APGDAttack_targeted if loss == 'dlr_targeted' else autopgd_base.APGDAttack
  official = official_class(torch_fn, n_iter=steps, norm=OFFICIAL_NORM[norm], eps=eps, seed=0, device='cpu',
                            **({'loss': 'ce'} if loss == 'ce' else {}))
  official.init_hyperparam(nchw(x))
  official.y_target = torch.from_numpy(target)
  _, acc, _, x_best_adv = official.attack_single_run(nchw(x), torch.from_numpy(y), x_init=nchw(start))
  np.testing.assert_array_equal(broken, ~acc.numpy())
  assert 0 < broken.sum() < BATCH   # the comparison means something: some points break, some do not
  np.testing.assert_allclose(got[broken], nhwc(x_best_adv)[broken], atol=1e-10)


@pytest.mark.parametrize('norm', ['linf', 'l2'])
@pytest.mark.parametrize('targeted', [True, False])
def test_fab_matches_the_official_perturb(norm, targeted):
  """FAB-T (3 targets) and untargeted FAB (one restart, from the clean point). The official FAB casts the images to
  float32 (`attack_single_run`), so this runs in float32 throughout."""
  logits_fn, torch_fn = mlp(np.float32)
  x, y = batch()
  x = x.astype(np.float32)
  eps, steps, targets = EPS[norm], 20, 3
  if targeted:
    out = fab_attack.fab_targeted(logits_fn, jnp.asarray(x), jnp.asarray(y), jax.random.key(0), eps=eps,
                                  steps=steps, n_targets=targets, norm=norm)
  else:
    out = fab_attack.fab(logits_fn, jnp.asarray(x), jnp.asarray(y), jax.random.key(0), eps=eps, steps=steps,
                         restarts=1, norm=norm)
  official = fab_pt.FABAttack_PT(torch_fn, norm=OFFICIAL_NORM[norm], n_restarts=1, n_iter=steps, eps=eps,
                                 alpha_max=0.1, eta=1.05, beta=0.9, seed=0, targeted=targeted,
                                 n_target_classes=targets, device='cpu')
  want = nhwc(official.perturb(nchw(x), torch.from_numpy(y)))
  broken = np.asarray(logits_fn(out.x_adv).argmax(-1) != y)
  np.testing.assert_array_equal(broken, np.asarray(logits_fn(jnp.asarray(want)).argmax(-1) != y))
  assert 0 < broken.sum() < BATCH
  np.testing.assert_allclose(np.asarray(out.x_adv), want, atol=1e-5)


@pytest.mark.parametrize('side', [1, 3, 5, 6, 7, 29])
def test_square_l2_pattern_is_the_official_eta(side):
  official = square_official.SquareAttack(None, norm='L2', eps=0.5, device='cpu')
  want = official.eta(side).numpy()   # transposed or not by a coin flip: either is the official pattern
  got = square_attack.eta(side)
  assert np.allclose(got, want, atol=1e-6) or np.allclose(got.T, want, atol=1e-6)
  np.testing.assert_allclose(np.sqrt((got ** 2).sum()), 1.0, rtol=1e-12)
