"""advjax's AutoAttack parts against the official code itself (pyautoattack 0.2.0, the package of fra31/auto-attack
at a392200: autoattack/autopgd_base.py, fab_pt.py, fab_projections.py, square.py), under L-inf, L2 and L1, from the
same start. (Square's draws are per batch in the official code and per example here, so only its L2 and L1
patterns are compared here; test_autoattack_cascade.py shares its draws with the official code's.)

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
EPS = {'linf': 0.02, 'l2': 0.125, 'l1': 0.5}
OFFICIAL_NORM = {'linf': 'Linf', 'l2': 'L2', 'l1': 'L1'}


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


@pytest.mark.parametrize('norm', ['l2', 'l1'])
@pytest.mark.parametrize('dim', [3, 48, 200])
def test_fab_projection_matches_the_official(norm, dim):
  rng = np.random.RandomState(dim)
  t, w, b = rng.rand(64, dim), rng.randn(64, dim), rng.randn(64) * dim / 4
  w[:4, :dim // 3] = 0   # coordinates the hyperplane ignores
  official = getattr(fab_projections, f'projection_{norm}')
  want = official(torch.from_numpy(t), torch.from_numpy(w), torch.from_numpy(b)).numpy()
  got = np.asarray(jax.jit(fab_attack.PROJECTIONS[norm])(t, w, b))
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


@pytest.mark.parametrize('loss', ['ce', 'dlr'])
def test_apgd_eot_on_a_randomised_model_matches_the_official(loss):
  """The 'rand' version's APGD (EoT; over 4 forwards here, 20 in the protocol) on a randomised model, the MLP on
  x + N(0, 0.05^2) noise. The PyTorch model replays advjax's draws in the order of the official forwards (eot_iter
  per gradient, from the start on), so both see the same randomness; float64."""
  logits_fn, torch_fn = mlp()
  x, y = batch()
  eps, steps, eot, sigma = EPS['linf'], 10, 4, 0.05
  noise = lambda v, key: jax.random.normal(key, v.shape, v.dtype)
  noisy = lambda v, key: logits_fn(v + sigma * noise(v, key))
  keys = auto_pgd.parts.example_keys(jax.random.key(0), BATCH)
  _, draw_keys = auto_pgd.parts.split(keys)   # APGD's stream for a randomised model
  draws = iter(range((steps + 1) * eot))
  replayed = lambda d: nchw(auto_pgd.parts.one_draw(noise, auto_pgd.parts.fold_in(draw_keys, d))(jnp.asarray(x)))
  replay = lambda t: torch_fn(t + sigma * replayed(next(draws)))
  start = np.clip(x + eps * np.sign(np.random.RandomState(3).uniform(-1, 1, x.shape)), 0, 1)
  out = auto_pgd.apgd(noisy, jnp.asarray(x), jnp.asarray(y), jax.random.key(0), eps=eps, steps=steps, loss=loss,
                      start=start, eot_iter=eot, randomized=True)
  official = autopgd_base.APGDAttack(replay, n_iter=steps, norm='Linf', eps=eps, seed=0, device='cpu', loss=loss,
                                     eot_iter=eot)
  official.init_hyperparam(nchw(x))
  _, acc, _, x_best_adv = official.attack_single_run(nchw(x), torch.from_numpy(y), x_init=nchw(start))
  assert next(draws, None) is None   # the official made exactly the forwards advjax drew for
  got = np.asarray(out.x_adv)
  broken = np.abs(got - x).reshape(BATCH, -1).max(1) > 0   # the clean x is returned where nothing broke
  np.testing.assert_array_equal(broken, ~acc.numpy())
  assert 0 < broken.sum() < BATCH
  # DLR's ratio amplifies the rounding of the noisy input (XLA may fuse x + sigma * noise) to 8e-10 on 2 of 1104 values.
  np.testing.assert_allclose(got[broken], nhwc(x_best_adv)[broken], atol=1e-10 if loss == 'ce' else 1e-9)
  assert (np.asarray(out.steps) == (steps + 1) * eot).all()


@pytest.mark.parametrize('norm', ['linf', 'l2', 'l1'])
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
  # Most points agree to 7e-7; on one of the two CPUs this ran on, one FAB-T L2 point's 20 steps amplify float32
  # rounding (PyTorch's and XLA's sums differ in order) to 1.1e-5.
  np.testing.assert_allclose(np.asarray(out.x_adv), want, atol=5e-5)


@pytest.mark.parametrize('norm', ['l2', 'l1'])
@pytest.mark.parametrize('side', [1, 3, 5, 6, 7, 29])
def test_square_pattern_is_the_official_eta(side, norm):
  official = square_official.SquareAttack(None, norm=OFFICIAL_NORM[norm], eps=0.5, device='cpu')
  want = official.eta(side).numpy()   # transposed or not by a coin flip: either is the official pattern
  got = square_attack.eta(side, norm)
  assert np.allclose(got, want, atol=1e-6) or np.allclose(got.T, want, atol=1e-6)
  size = np.sqrt((got ** 2).sum()) if norm == 'l2' else np.abs(got).sum()
  np.testing.assert_allclose(size, 1.0, rtol=1e-12)


def test_l1_projection_matches_the_official():
  rng = np.random.RandomState(0)
  x = rng.rand(64, *SHAPE).astype(np.float32)
  x[:8, :2] = 0.0   # pixels on the box's faces
  x[8:16, 2:] = 1.0
  delta = (rng.randn(*x.shape) * np.repeat([0.01, 0.1, 1.0, 3.0], 16)[:, None, None, None]).astype(np.float32)
  want = autopgd_base.L1_projection(nchw(x), nchw(delta), EPS['l1']).permute(0, 2, 3, 1).numpy()
  got = np.asarray(jax.jit(auto_pgd.parts.l1_projection)(x, delta, np.float32(EPS['l1'])))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)   # float32 cumulative sums over 96 breakpoints
  z = x + delta + got
  assert (z >= -1e-6).all() and (z <= 1 + 1e-6).all()
  assert (np.abs(z - x).reshape(64, -1).sum(1) <= EPS['l1'] * (1 + 1e-4)).all()


def _apgd_l1_official(torch_fn, steps, loss, target, large_eps):
  official_class = autopgd_base.APGDAttack_targeted if loss == 'dlr_targeted' else autopgd_base.APGDAttack
  official = official_class(torch_fn, n_iter=steps, norm='L1', eps=EPS['l1'], seed=0, device='cpu',
                            use_largereps=large_eps, **({'loss': 'ce'} if loss == 'ce' else {}))
  official.y_target = torch.from_numpy(target)
  return official


@pytest.mark.parametrize('loss', ['ce', 'dlr_targeted'])
@pytest.mark.parametrize('large_eps', [False, True])
def test_apgd_l1_matches_the_official(loss, large_eps):
  """APGD-L1's sparse step, from a given start (`attack_single_run`'s x_init), or with the official large-radius
  schedule (`decr_eps_pgd`, its normal draw injected, 2 iterations per radius), over 6 iterations, each ending in
  the sparsity check (every max(0.04 N, 1) = 1 iterations).

  float32, as the official L1 projection computes. Its sums are not accumulated in PyTorch's order (nor can they be:
  PyTorch's CPU sum is neither sequential nor float64), and whether an entry lands exactly on x, so the L0 counts
  that set the step and the top fraction, can turn on their last bit: here the first such flip (one point of 32, a
  difference of 3e-8) comes at iteration 7 and then that point's path differs; benchmarks/compare_autoattack.py
  counts the differing points over the full attacks. For the same reason the large-radius case starts from noise
  of std 0.01, inside the 3 eps ball: the official N(0, 1) draw lands on the ball's surface, where whether a second
  projection zeroes the entries that are off x by an ulp (and so the first top fraction) turns on the last bit of
  one float32 sum. So one point of 32 may differ; every other must agree to 5e-5 and break as the official's.
  (With the large-radius schedule and the targeted loss, one does, by 1e-3.)"""
  logits_fn, torch_fn = mlp(np.float32)
  x, y = batch()
  x = x.astype(np.float32)
  steps = 6
  noise = np.random.RandomState(3).randn(*x.shape).astype(np.float32)
  target = np.argsort(np.asarray(logits_fn(jnp.asarray(x))), -1)[:, -2]
  official = _apgd_l1_official(torch_fn, steps, loss, target, large_eps)
  official.init_hyperparam(nchw(x))
  if large_eps:
    noise = noise / 100   # a start inside the 3 eps ball (see above)
    start = x + noise
    randn_like = torch.randn_like
    torch.randn_like = lambda t: nchw(noise)
    try:
      _, acc, _, x_best_adv = official.decr_eps_pgd(nchw(x), torch.from_numpy(y), [3 * EPS['l1'], 2 * EPS['l1'],
                                                    EPS['l1']], [2, 2, 2])
    finally:
      torch.randn_like = randn_like
  else:
    start = np.clip(x + noise + np.asarray(auto_pgd.parts.l1_projection(x, noise, np.float32(EPS['l1']))), 0, 1)
    _, acc, _, x_best_adv = official.attack_single_run(nchw(x), torch.from_numpy(y), x_init=nchw(start))
  out = auto_pgd.apgd(logits_fn, jnp.asarray(x), jnp.asarray(y), jax.random.key(0), eps=EPS['l1'], steps=steps,
                      loss=loss, target=jnp.asarray(target), norm='l1', start=start, large_eps=large_eps)
  got, broken = np.asarray(out.x_adv), np.asarray(logits_fn(out.x_adv).argmax(-1) != y)
  want = np.where((~acc.numpy())[:, None, None, None], nhwc(x_best_adv), x)
  differ = np.abs(got - want).reshape(BATCH, -1).max(1) > 5e-5   # the projection's float32 rtol 1e-5, at 3 eps
  assert differ.sum() <= 1, f'{differ.sum()} of {BATCH} points differ from the official'   # the flip above
  np.testing.assert_array_equal(broken[~differ], ~acc.numpy()[~differ])
  assert 0 < broken.sum() < BATCH
  assert (np.abs(got - x).reshape(BATCH, -1).sum(1) <= EPS['l1'] * (1 + 1e-4)).all()
