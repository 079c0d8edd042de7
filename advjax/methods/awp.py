"""Adversarial weight perturbation (AWP, Wu et al., NeurIPS 2020), for any method's outer loss.

AWP takes the training gradient at weights moved, layer by layer, to increase the loss: one ascent step of a proxy
copy on the method's own loss (`AdvWeightPerturb.calc_awp`: proxy in training mode, SGD lr 0.01), rescaled per
layer to gamma times that layer's weight norm. The optimiser then steps at the perturbed weights and the perturbation
is removed (`restore` after `optimizer.step()`), which `train_state.apply_gradients(at_params=...)` reproduces.
Only weights with more than one dimension are perturbed: the official `diff_in_weights` skips biases and BatchNorm.
"""
import jax
import jax.numpy as jnp

from advjax import train_state as ts

_TINY = 1e-20   # the official code's guard against a zero-norm layer


def weight_perturbation(grads, params, gamma):
  """gamma * ||w_l|| * g_l / ||g_l|| for each multi-dimensional layer l, zero for the others."""
  def layer(g, w):
    if w.ndim <= 1:
      return jnp.zeros_like(w)
    return gamma * jnp.linalg.norm(w) * g / (jnp.linalg.norm(g) + _TINY)
  return jax.tree.map(layer, grads, params)


def perturb(loss_fn, params, gamma):
  """The weights at which AWP takes the training gradient: `params` moved up `loss_fn(params) -> (loss, aux)`.

  `gamma` may be traced (zero during a warm-up): the proxy step is skipped at run time when it is zero, and at
  trace time when it is the Python number 0.
  """
  if isinstance(gamma, (int, float)) and gamma == 0:
    return params

  def perturbed(params):
    _, grads = ts.local_value_and_grad(loss_fn, params)
    grads = jax.lax.pmean(grads, ts.AXIS)   # the proxy sees the global batch, as the official data-parallel model
    return jax.tree.map(jnp.add, params, weight_perturbation(grads, params, gamma))

  return jax.lax.cond(gamma > 0, perturbed, lambda p: p, params)
