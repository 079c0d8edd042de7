"""The whole standard cascade against the official `run_standard_evaluation` (pyautoattack 0.2.0 = fra31/auto-attack
a392200), per example after every stage, with the random draws shared.

advjax draws per example, the official code per batch; with batch_size 1 the official draws are per example too, and
the official attacks are fed advjax's: APGD's start (its `x_init`, from advjax's per-example uniform noise) and every
Square draw (`random_int` and `random_choice` replay advjax's per-example keys). FAB-T starts at the clean point and
draws nothing. The network is an MLP (float64 inside, float32 points, as the official APGD and FAB cast) that
quantises its input (round(8 x) / 8, zero gradients) for images of mean > 0.5, so that each stage breaks points the
earlier ones left: APGD-CE and APGD-T on the smooth half (1 iteration each, both sides), FAB-T (30) where they fell
short, Square (300 queries, 3 targets elsewhere) on the masked half.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from pyautoattack import AutoAttack, autopgd_base
from pyautoattack import state as state_module

from advjax.attacks import parts
from advjax.attacks.auto_attack import standard_stages

SHAPE, CLASSES, BATCH, EPS = (4, 4, 3), 10, 32, 0.05
APGD_STEPS, FAB_STEPS, TARGETS, QUERIES = 1, 30, 3, 300
OFFICIAL = ('apgd-ce', 'apgd-t', 'fab-t', 'square')


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def networks():
  """(advjax logits_fn on NHWC, the same network in PyTorch on NCHW): float32 in and out, as the official APGD and
  FAB cast their iterates, float64 inside, so that logits and gradients agree to float64 rounding before they are
  rounded to float32."""
  rng = np.random.RandomState(0)
  w1, w2 = rng.randn(int(np.prod(SHAPE)), 32), rng.randn(32, CLASSES)

  def logits_fn(x):
    flat = x.astype(jnp.float64).reshape(x.shape[0], -1)
    mlp = lambda z: jnp.tanh(z @ w1) @ w2
    return jnp.where(flat.mean(-1, keepdims=True) > 0.5, mlp(jnp.round(flat * 8) / 8), mlp(flat)).astype(jnp.float32)

  t1, t2 = torch.from_numpy(w1), torch.from_numpy(w2)

  def torch_fn(x):
    flat = x.double().permute(0, 2, 3, 1).reshape(x.shape[0], -1)
    mlp = lambda z: torch.tanh(z @ t1) @ t2
    return torch.where(flat.mean(-1, keepdim=True) > 0.5, mlp(torch.round(flat * 8) / 8), mlp(flat)).float()
  return logits_fn, torch_fn


def advjax_flags(logits_fn, x, y, keys):
  """Per stage, the per-example robust flags of the cascade: each attack on every point with the stage's keys (an
  example's result depends only on its own key), ANDed in order, from the clean predictions."""
  stages = dict(standard_stages(EPS, steps=APGD_STEPS, n_targets=TARGETS, square_queries=QUERIES))
  stages['FAB-T'] = dict(standard_stages(EPS, steps=FAB_STEPS, n_targets=TARGETS))['FAB-T']
  robust, flags = np.asarray(logits_fn(jnp.asarray(x)).argmax(-1) == y), []
  for stage, (name, attack) in enumerate(stages.items()):
    x_adv = jax.jit(lambda v, k: attack(logits_fn, v, jnp.asarray(y), k).x_adv)(x, parts.fold_in(keys, stage))
    robust = robust & np.asarray(logits_fn(x_adv).argmax(-1) == y)
    flags.append(robust)
  return flags


def nchw(a):
  return torch.from_numpy(np.asarray(a)).permute(0, 3, 1, 2).contiguous()


class SharedDraws:
  """Feeds advjax's per-example draws to the official attacks, each run on one example (batch_size 1): which example
  is found by comparing the batch with the test points."""

  def __init__(self, x, logits_fn, keys):
    self.x, self.logits_fn, self.keys = nchw(x), logits_fn, keys

  def example(self, batch):
    point = batch.reshape(self.x.shape[1:]).to(self.x.dtype)   # APGD's single example may come without its batch axis
    matches = [i for i in range(len(self.x)) if torch.equal(point, self.x[i])]
    assert len(matches) == 1
    return matches[0]

  def apgd_start(self, attack, stage):
    """Wraps the official `attack_single_run` to start where advjax's APGD starts (APGD-T: its r-th target's)."""
    run = attack.attack_single_run

    def with_advjax_start(x, y, x_init=None):
      i = self.example(x)
      key = parts.fold_in(self.keys, stage)[i]
      if attack.y_target is not None:   # APGD-T: the target's rank among the clean logits gives the restart r
        ranked = np.argsort(np.asarray(self.logits_fn(jnp.asarray(self.x[i:i + 1].permute(0, 2, 3, 1).numpy()))))
        key = jax.random.fold_in(key, int(np.flatnonzero(ranked[0][::-1] == int(attack.y_target[0]))[0]) - 1)
      noise = nchw(2 * jax.random.uniform(key, SHAPE, jnp.float32)[None] - 1)
      return run(x, y, x_init=x + EPS * noise / (noise.abs().amax() + 1e-12))   # APGD's `normalize`; clamped there
    attack.attack_single_run = with_advjax_start

  def square_draws(self, attack, stage):
    """The official Square's `random_choice` / `random_int`, replaying advjax's start stripes and, per iteration,
    row, column and signs (advjax's `_single_run` and `_propose` keys)."""
    run, draws = attack.attack_single_run, {}

    def with_advjax_draws(x, y):
      i = self.example(x)
      start_key, loop_key = jax.random.split(parts.fold_in(parts.fold_in(self.keys, stage), 0)[i])
      stripes = jax.random.rademacher(start_key, (1,) + SHAPE[1:], jnp.float32)   # (1, w, c)
      draws.update(choices=iter([torch.from_numpy(np.asarray(stripes).T.reshape(1, SHAPE[2], 1, SHAPE[1]))]),
                   steps=iter(jax.random.split(jax.random.fold_in(loop_key, step), 3) for step in range(QUERIES)))
      return run(x, y)

    def random_int(low=0, high=1, shape=(1,)):
      if 'keys' not in draws or not draws['keys']:
        draws['keys'] = list(next(draws['steps']))   # row, column, signs of the next iteration
      uniform = float(jax.random.uniform(draws['keys'].pop(0)))   # advjax's draw, the official arithmetic
      return torch.tensor([int(low + (high - low) * uniform)])

    def random_choice(shape):
      if 'keys' in draws and draws['keys']:   # the iteration's signs, one per channel
        return torch.from_numpy(np.asarray(jax.random.rademacher(draws['keys'].pop(0), (SHAPE[2],), jnp.float32))
                                ).reshape(shape)
      return next(draws['choices'])
    attack.attack_single_run, attack.random_int, attack.random_choice = with_advjax_draws, random_int, random_choice


def official_flags(torch_fn, x, y, shared):
  """The official run, one example per batch: {stage: per-example robust flags after it} (read from its
  `EvaluationState` as each stage ends)."""
  adversary = AutoAttack(torch_fn, norm='Linf', eps=EPS, version='standard', seed=0, device='cpu')
  adversary.apgd = autopgd_base.APGDAttack(torch_fn, n_restarts=1, n_iter=APGD_STEPS, eps=EPS, norm='Linf',
                                           seed=0, device='cpu', logger=adversary.logger)
  adversary.apgd_targeted = autopgd_base.APGDAttack_targeted(torch_fn, n_restarts=1, n_iter=APGD_STEPS, eps=EPS,
                                                             norm='Linf', seed=0, device='cpu',
                                                             n_target_classes=TARGETS, logger=adversary.logger)
  adversary.fab.n_iter, adversary.fab.n_target_classes, adversary.square.n_queries = FAB_STEPS, TARGETS, QUERIES
  shared.apgd_start(adversary.apgd, 0)
  shared.apgd_start(adversary.apgd_targeted, 1)
  shared.square_draws(adversary.square, 3)
  after, add_run_attack = {}, state_module.EvaluationState.add_run_attack

  def record(state, attack):
    after[attack] = state.robust_flags.numpy().copy()
    return add_run_attack(state, attack)
  state_module.EvaluationState.add_run_attack = record
  try:
    adversary.run_standard_evaluation(nchw(x), torch.from_numpy(y), batch_size=1)
  finally:
    state_module.EvaluationState.add_run_attack = add_run_attack
  return [after[name] for name in OFFICIAL]


def test_the_standard_cascade_agrees_with_the_official_per_example_after_every_stage():
  logits_fn, torch_fn = networks()
  x = np.random.RandomState(1).rand(BATCH, *SHAPE).astype(np.float32)   # the official APGD and FAB cast to float32
  y = np.asarray(logits_fn(jnp.asarray(x)).argmax(-1))   # the clean predictions: every point attackable
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(0), jnp.arange(BATCH))
  ours = advjax_flags(logits_fn, x, y, keys)
  theirs = official_flags(torch_fn, x, y, SharedDraws(x, logits_fn, keys))
  for name, a, b in zip(OFFICIAL, ours, theirs):
    np.testing.assert_array_equal(a, b, err_msg=f'robust flags after {name}')
  broken = -np.diff([BATCH] + [int(f.sum()) for f in ours])
  assert (broken > 0).all(), broken   # every stage breaks points the earlier ones left, FAB-T and Square too
