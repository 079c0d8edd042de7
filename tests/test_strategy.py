"""LAS-AT's strategy policy: per-example sampling, the REINFORCE loss against its analytic gradient, a toy bandit."""
import jax
import jax.numpy as jnp
import numpy as np

from advjax.methods import strategy


def test_reinforce_gradient_is_reward_times_softmax_minus_onehot():
  logits = jax.random.normal(jax.random.key(0), (6, 4))
  actions = {'eps': jnp.array([0, 1, 2, 3, 1, 1])}
  grad = jax.grad(lambda z: strategy.reinforce_loss({'eps': z}, actions, 2.5))(logits)
  want = 2.5 * (jax.nn.softmax(logits) - jax.nn.one_hot(actions['eps'], 4)) / 6
  np.testing.assert_allclose(grad, want, rtol=1e-5, atol=1e-7)


def test_one_sample_per_example_and_head():
  logits = {'eps': jnp.log(jnp.array([[1.0, 0, 0], [0, 0, 1.0]]) + 1e-30), 'steps': jnp.zeros((2, 5))}
  actions = strategy.sample(logits, jax.random.key(1))
  np.testing.assert_array_equal(actions['eps'], [0, 2])   # each example follows its own distribution
  assert actions['steps'].shape == (2,)
  chosen = strategy.values(actions, {'eps': [3, 8, 15], 'steps': [3, 5, 7, 9, 11]})
  np.testing.assert_array_equal(chosen['eps'], [3, 15])


def test_batch_reward_moves_probability_to_the_best_arm():
  """A bandit with a known best arm, one scalar reward per batch (no baseline), as LAS-AT's update has."""
  arm_value, batch = jnp.array([0.1, 0.2, 0.9, 0.3, 0.0]), 8

  def update(theta, key):
    tiled = lambda t: {'eps': jnp.broadcast_to(t, (batch, 5))}
    actions = strategy.sample(tiled(theta), key)
    reward = arm_value[actions['eps']].mean()
    return theta - jax.grad(lambda t: strategy.reinforce_loss(tiled(t), actions, reward))(theta), None

  for seed in range(3):
    theta, _ = jax.lax.scan(update, jnp.zeros(5), jax.random.split(jax.random.key(seed), 500))
    probs = jax.nn.softmax(theta)
    assert probs.argmax() == 2 and probs[2] > 0.8, probs
