"""LAS-AT's attack-strategy policy (Jia et al., CVPR 2022): categorical heads over attack parameters, one sample per
example and head, trained by REINFORCE on one scalar reward per batch (no baseline, as in the official code)."""
import jax
import jax.numpy as jnp


def sample(head_logits, key):
  """One action per example and head: {head: (B,) int32} from {head: (B, choices) logits}."""
  keys = jax.random.split(key, len(head_logits))
  return {name: jax.random.categorical(k, logits).astype(jnp.int32)
          for k, (name, logits) in zip(keys, sorted(head_logits.items()))}


def reinforce_loss(head_logits, actions, reward):
  """sum_heads mean_i(-log pi_head(a_i | x_i) * reward): descending it raises the probability of rewarded actions."""
  reward = jax.lax.stop_gradient(reward)
  def head_loss(logits, action):
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, action[:, None], axis=-1)[:, 0] * reward)
  return sum(head_loss(head_logits[name], actions[name]) for name in head_logits)


def values(actions, choices):
  """Per-example attack parameters: {head: choices[head][action]}, e.g. eps in /255 units from the eps head."""
  return {name: jnp.asarray(choices[name])[action] for name, action in actions.items()}
