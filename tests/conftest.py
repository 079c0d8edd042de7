"""Test set-up: two simulated CPU devices, so data-parallel code runs for real on one machine."""
import os
import shutil
import tempfile

# Must happen before jax is imported anywhere.
os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
# Tests leave XLA's own CPU settings (advjax.xla_flags) as they are, in their runs of advjax.main too: two pytest-xdist
# workers share the cores, and multi-threaded convolutions in both made the suite slower (13:38 against 11:54,
# 2026-12-01).
os.environ.setdefault('ADVJAX_XLA_DEFAULTS', '0')
# One compilation cache per test process (each pytest-xdist worker its own: one cache written by two processes at
# once crashed one in a trial), inherited by its `advjax.main` subprocesses: the tests start the same program many
# times (a run, its killed twin, its resumption), and each would otherwise compile it afresh. A cache the user set is
# left alone.
_CACHE = None
if 'JAX_COMPILATION_CACHE_DIR' not in os.environ or os.environ.get('ADVJAX_TEST_OWN_CACHE'):
  _CACHE = os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='advjax_test_jax_cache_')
  os.environ['ADVJAX_TEST_OWN_CACHE'] = '1'
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '-1')

import pytest  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
  del session, exitstatus
  if _CACHE:
    shutil.rmtree(_CACHE, ignore_errors=True)


def pytest_collection_modifyitems(items):
  """Whole runs and train steps first: pytest-xdist hands tests out in order, and a long one left to the end would
  keep one worker busy alone."""
  items.sort(key=lambda item: item.path.name not in ('test_main.py', 'test_train_step.py'))


@pytest.fixture(scope='session')
def digits_model():
  """(logits_fn, x, y): a tanh MLP trained on scikit-learn's digits in a few seconds, and 400 test digits."""
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from sklearn.datasets import load_digits
  data = load_digits()
  x, y = jnp.asarray(data.data / 16.0, jnp.float32), jnp.asarray(data.target)
  rng = np.random.RandomState(0)
  params = dict(w1=rng.randn(64, 64) / 8, b1=np.zeros(64), w2=rng.randn(64, 10) / 8, b2=np.zeros(10))
  params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
  logits = lambda p, v: jnp.tanh(v.reshape(v.shape[0], -1) @ p['w1'] + p['b1']) @ p['w2'] + p['b2']
  tx = optax.adam(1e-2)

  @jax.jit
  def step(params, opt_state):
    grads = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(logits(p, x), y).mean())(params)
    updates, opt_state = tx.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state

  opt_state = tx.init(params)
  for _ in range(300):
    params, opt_state = step(params, opt_state)
  return (lambda v: logits(params, v)), x[:400], y[:400]
