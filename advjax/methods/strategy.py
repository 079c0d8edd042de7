"""LAS-AT's attack-strategy policy (Jia et al., CVPR 2022): categorical heads over attack parameters, one sample per
example and head, trained by REINFORCE on one scalar reward per batch (no baseline, as in the official code)."""
import jax
import jax.numpy as jnp

from advjax.attacks import parts


def sample(head_logits, key):
  """One action per example and head: {head: (B,) int32} from {head: (B, choices) logits}.

  `key` is one key, or one per example (e.g. folded with the dataset index) for draws that do not depend on how
  the batch is split across devices.
  """
  names = sorted(head_logits)
  keys = parts.example_keys(key, head_logits[names[0]].shape[0])
  draw = lambda k, logits: jax.random.categorical(k, logits).astype(jnp.int32)
  return {name: jax.vmap(draw)(parts.fold_in(keys, h), head_logits[name]) for h, name in enumerate(names)}


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
