"""Property tests over every attack (hypothesis), under L-inf and, where it has them, L2 and L1: for random models,
inputs, radii, shapes and step counts, the adversarial points stay in the eps-ball and in [0, 1], the step telemetry
stays within the budget, and the jitted, vmapped and device-mapped forms of one attack agree.

Shapes and step counts come from a few pairs (each is a compile); radii, weights and data are traced and free.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from jax.sharding import NamedSharding, PartitionSpec as P

from advjax import attacks
from helpers import mlp_logits, mlp_params

# (NHWC image shape of the helpers' 12-input MLP, steps): each pair is a compile. Square needs the image layout.
SHAPES_AND_STEPS = [((2, 2, 3), 1), ((4, 3, 1), 3)]

# name: (attack(logits_fn, x, y, keys, eps, steps, norm), the most steps it may report per example, given steps)
ATTACKS = {
    'fgsm': (lambda f, x, y, k, eps, n, norm: attacks.fgsm(f, x, y, k, eps=eps, init='uniform', norm=norm),
             lambda n: 1),
    'pgd': (lambda f, x, y, k, eps, n, norm: attacks.pgd(f, x, y, k, eps=eps, step_size=eps / 4, steps=n,
                                                         restarts=2, norm=norm), lambda n: 2 * n),
    'pgd_k_tau': (lambda f, x, y, k, eps, n, norm: attacks.pgd_k_tau(f, x, y, k, eps=eps, step_size=eps / 4, steps=n,
                                                                     tau=1, compact_min_size=2, norm=norm),
                  lambda n: n),
    'pgd_fosc': (lambda f, x, y, k, eps, n, norm: attacks.pgd_fosc(f, x, y, k, eps=eps, step_size=eps / 4, steps=n,
                                                                   threshold=0.05), lambda n: n),
    'per_example_pgd': (lambda f, x, y, k, eps, n, norm: attacks.per_example_pgd(   # strategies from the labels
        f, x, y, k, eps=eps * (0.5 + 0.5 * (y % 2)), step_size=eps / 4, budget=y % (n + 1), steps=n), lambda n: n),
    'apgd_ce': (lambda f, x, y, k, eps, n, norm: attacks.apgd(f, x, y, k, eps=eps, steps=n, norm=norm, restarts=2),
                lambda n: 2 * (n + 1)),  # + the start, per restart
    'apgd_t': (lambda f, x, y, k, eps, n, norm: attacks.apgd_targeted(f, x, y, k, eps=eps, steps=n, n_targets=2,
                                                                      norm=norm), lambda n: 2 * (n + 1)),
    'fab_t': (lambda f, x, y, k, eps, n, norm: attacks.fab_targeted(f, x, y, k, eps=eps, steps=n, n_targets=2,
                                                                    norm=norm), lambda n: 2 * n),
    'fab': (lambda f, x, y, k, eps, n, norm: attacks.fab(f, x, y, k, eps=eps, steps=n, restarts=2, norm=norm),
            lambda n: 2 * n),
    'square': (lambda f, x, y, k, eps, n, norm: attacks.square(f, x, y, k, eps=eps, n_queries=4 * n, norm=norm),
               lambda n: 4 * n + 1),   # queries: + the start, as the official count
}
L2_ATTACKS = ('fgsm', 'pgd', 'pgd_k_tau', 'apgd_ce', 'apgd_t', 'fab_t', 'fab', 'square')
ATTACKS['apgd_large_eps'] = (lambda f, x, y, k, eps, n, norm: attacks.apgd(f, x, y, k, eps=eps, steps=n + 2, norm=norm,
                                                                           large_eps=True), lambda n: n + 5)
L1_ATTACKS = ('apgd_ce', 'apgd_large_eps', 'apgd_t', 'fab_t', 'fab', 'square')
SIZES = {'linf': lambda d: jnp.abs(d).max(-1), 'l2': lambda d: jnp.sqrt((d ** 2).sum(-1)),
         'l1': lambda d: jnp.abs(d).sum(-1)}


@functools.lru_cache(maxsize=None)
def forms(name, steps, norm):
  """The attack with `steps` under `norm` as f(params, x, y, keys, eps) -> (x_adv, steps): jitted; vmapped over
  two half batches; mapped over the two devices, each with its half."""
  attack, _ = ATTACKS[name]

  def run(params, x, y, keys, eps):
    out = attack(functools.partial(mlp_logits, params), x, y, keys, eps, steps, norm)
    return out.x_adv, out.steps

  def halves(params, x, y, keys, eps):
    split = lambda a: a.reshape(2, a.shape[0] // 2, *a.shape[1:])
    x_adv, steps = jax.vmap(run, in_axes=(None, 0, 0, 0, None))(params, split(x), split(y), split(keys), eps)
    return x_adv.reshape(x.shape), steps.reshape(-1)

  mesh = jax.make_mesh((2,), ('data',), devices=jax.devices()[:2])
  mapped = jax.jit(jax.shard_map(run, mesh=mesh, in_specs=(P(), P('data'), P('data'), P('data'), P()),
                                 out_specs=(P('data'), P('data'))))
  split = NamedSharding(mesh, P('data'))

  def on_devices(params, x, y, keys, eps):
    return mapped(params, *jax.device_put((x, y, keys), split), eps)

  return jax.jit(run), jax.jit(halves), on_devices


BATCH = 4   # two examples per device
cases = dict(
    shape_and_steps=st.sampled_from(SHAPES_AND_STEPS),
    eps=st.floats(1 / 255, 0.3),
    seed=st.integers(0, 2 ** 16),
    scale=st.floats(0.1, 3.0),
)


@pytest.mark.parametrize('name, norm', [(name, 'linf') for name in ATTACKS if name != 'apgd_large_eps'] +
                         [(name, 'l2') for name in L2_ATTACKS] + [(name, 'l1') for name in L1_ATTACKS])
@settings(max_examples=6, deadline=None, derandomize=True)
@given(**cases)
def test_attack_properties(name, norm, shape_and_steps, eps, seed, scale):
  shape, num_steps = shape_and_steps
  rng = np.random.RandomState(seed)
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), mlp_params(seed, scale))
  x = jnp.asarray(rng.uniform(size=(BATCH, *shape)), jnp.float32)
  y = jnp.asarray(rng.randint(0, 4, size=BATCH))
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(seed), jnp.arange(BATCH))
  eps = {'linf': 1, 'l2': 4, 'l1': 8}[norm] * eps   # L2 radii up to 1.2, L1 up to 2.4, on 4 to 12 pixels
  jitted, vmapped, mapped = forms(name, num_steps, norm)

  x_adv, steps = jitted(params, x, y, keys, eps)
  assert x_adv.shape == x.shape and steps.shape == (BATCH,)
  delta = (x_adv - x).reshape(BATCH, -1)
  # L1: the official projection's float32 sums (as tests/official/test_autoattack.py checks it)
  assert float(SIZES[norm](delta).max()) <= eps * (1 + (1e-4 if norm == 'l1' else 1e-5)) + 1e-7, 'left the eps-ball'
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0, 'left [0, 1]'
  most = ATTACKS[name][1](num_steps)
  assert int(steps.min()) >= 0 and int(steps.max()) <= most, steps
  for other in (vmapped, mapped):
    other_x, other_steps = other(params, x, y, keys, eps)
    np.testing.assert_allclose(other_x, x_adv, atol=1e-6)
    np.testing.assert_array_equal(other_steps, steps)
