"""Property tests over every attack (hypothesis): for random models, inputs, radii and shapes, the adversarial
points stay in the eps-ball and in [0, 1], the step telemetry stays within the budget, and the jitted, vmapped and
device-mapped forms of one attack agree.

Shapes and step counts come from a few values (each is a compile); radii, weights and data are traced and free.
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

SHAPES = [(2, 2, 3), (4, 3, 1)]   # NHWC images of the helpers' 12-input MLP; Square needs the image layout
STEPS = 3
SQUARE_QUERIES = 12

# name: (attack(logits_fn, x, y, keys, eps), the most steps it may report per example)
ATTACKS = {
    'fgsm': (lambda f, x, y, k, eps: attacks.fgsm(f, x, y, k, eps=eps, init='uniform'), 1),
    'pgd': (lambda f, x, y, k, eps: attacks.pgd(f, x, y, k, eps=eps, step_size=eps / 4, steps=STEPS, restarts=2),
            2 * STEPS),
    'pgd_k_tau': (lambda f, x, y, k, eps: attacks.pgd_k_tau(f, x, y, k, eps=eps, step_size=eps / 4, steps=STEPS,
                                                            tau=1, compact_min_size=2), STEPS),
    'pgd_fosc': (lambda f, x, y, k, eps: attacks.pgd_fosc(f, x, y, k, eps=eps, step_size=eps / 4, steps=STEPS,
                                                          threshold=0.05), STEPS),
    'per_example_pgd': (lambda f, x, y, k, eps: attacks.per_example_pgd(   # strategies drawn from the labels
        f, x, y, k, eps=eps * (0.5 + 0.5 * (y % 2)), step_size=eps / 4, budget=y % (STEPS + 1), steps=STEPS), STEPS),
    'apgd_ce': (lambda f, x, y, k, eps: attacks.apgd(f, x, y, k, eps=eps, steps=STEPS), STEPS + 1),   # + the start
    'apgd_t': (lambda f, x, y, k, eps: attacks.apgd_targeted(f, x, y, k, eps=eps, steps=STEPS, n_targets=2),
               2 * (STEPS + 1)),
    'fab_t': (lambda f, x, y, k, eps: attacks.fab_targeted(f, x, y, k, eps=eps, steps=STEPS, n_targets=2),
              2 * STEPS),
    'square': (lambda f, x, y, k, eps: attacks.square(f, x, y, k, eps=eps, n_queries=SQUARE_QUERIES),
               SQUARE_QUERIES + 1),   # + the start, as the official count
}


@functools.lru_cache(maxsize=None)
def forms(name):
  """The attack as f(params, x, y, keys, eps) -> (x_adv, steps): jitted; vmapped over two half batches; mapped over
  the two devices, each with its half."""
  attack, _ = ATTACKS[name]

  def run(params, x, y, keys, eps):
    out = attack(functools.partial(mlp_logits, params), x, y, keys, eps)
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
    shape=st.sampled_from(SHAPES),
    eps=st.floats(1 / 255, 0.3),
    seed=st.integers(0, 2 ** 16),
    scale=st.floats(0.1, 3.0),
)


@pytest.mark.parametrize('name', list(ATTACKS))
@settings(max_examples=6, deadline=None, derandomize=True)
@given(**cases)
def test_attack_properties(name, shape, eps, seed, scale):
  rng = np.random.RandomState(seed)
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), mlp_params(seed, scale))
  x = jnp.asarray(rng.uniform(size=(BATCH, *shape)), jnp.float32)
  y = jnp.asarray(rng.randint(0, 4, size=BATCH))
  keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(jax.random.key(seed), jnp.arange(BATCH))
  jitted, vmapped, mapped = forms(name)

  x_adv, steps = jitted(params, x, y, keys, eps)
  assert x_adv.shape == x.shape and steps.shape == (BATCH,)
  assert float(jnp.abs(x_adv - x).max()) <= eps * (1 + 1e-5) + 1e-7, 'left the eps-ball'
  assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0, 'left [0, 1]'
  most = ATTACKS[name][1]
  assert int(steps.min()) >= 0 and int(steps.max()) <= most, steps
  for other in (vmapped, mapped):
    other_x, other_steps = other(params, x, y, keys, eps)
    np.testing.assert_allclose(other_x, x_adv, atol=1e-6)
    np.testing.assert_array_equal(other_steps, steps)
