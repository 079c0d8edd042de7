"""The convolution seam (`models.cpu_conv`): JAX's values and derivatives, in XLA:CPU's fast layouts inside loops."""
import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from advjax import models
from advjax.models import cpu_conv, layers

NHWC = ('NHWC', 'HWIO', 'NHWC')
# (kernel, stride, padding, input size, channels in -> out): every convolution of the zoo, odd sizes included.
CASES = [
    (3, 1, 1, 8, (3, 16)),    # stems, SmallCNN, the generator
    (3, 2, 1, 8, (8, 16)),    # ResNet / WRN downsampling
    (3, 2, 1, 7, (8, 16)),    # an odd input at stride 2
    (1, 2, 0, 8, (8, 16)),    # 1x1 shortcuts
    (1, 1, 0, 5, (8, 16)),    # WRN's first stage shortcut (width change at stride 1)
]
# Relative to the largest entry: bfloat16 rounds inputs and outputs to 8 bits of mantissa.
TOLERANCE = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}


def operands(case, dtype, seed=0):
  kernel, stride, pad, size, (c_in, c_out) = case
  kx, kw = jax.random.split(jax.random.key(seed))
  x = jax.random.normal(kx, (4, size, size, c_in)).astype(dtype)
  w = (jax.random.normal(kw, (kernel, kernel, c_in, c_out)) / kernel).astype(dtype)
  return x, w, dict(window_strides=(stride, stride), padding=((pad, pad), (pad, pad)), dimension_numbers=NHWC)


def derivatives(conv, x, w, kwargs):
  """Input and kernel gradients of a nonlinear function of the output, a JVP, and a gradient of a gradient."""
  f = lambda x, w: conv(x, w, **kwargs)
  loss = lambda x, w: jnp.sum(jnp.tanh(f(x, w).astype(jnp.float32)))
  grad_x, grad_w = jax.grad(loss, (0, 1))(x, w)
  jvp = jax.jvp(f, (x, w), (jnp.ones_like(x), w[::-1]))[1]
  grad_of_grad = jax.grad(lambda w: jnp.sum(jax.grad(loss)(x, w).astype(jnp.float32) ** 2))(w)   # GradAlign's
  return dict(grad_x=grad_x, grad_w=grad_w, jvp=jvp, grad_of_grad=grad_of_grad)


def assert_close(ours, theirs, dtype):
  for name in theirs:
    a, b = (np.asarray(t[name], np.float32) for t in (ours, theirs))
    scale = np.abs(b).max()
    assert scale > 0, name
    np.testing.assert_allclose(a, b, atol=TOLERANCE[dtype] * scale, rtol=0, err_msg=name)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize('case', CASES)
def test_values_and_derivatives_are_jax_own(case, dtype):
  x, w, kwargs = operands(case, dtype)
  np.testing.assert_array_equal(cpu_conv.conv_general_dilated(x, w, **kwargs), lax.conv_general_dilated(x, w, **kwargs))
  assert_close(derivatives(cpu_conv.conv_general_dilated, x, w, kwargs),
               derivatives(lax.conv_general_dilated, x, w, kwargs), dtype)


@pytest.mark.parametrize('case', CASES[1:3])
def test_gradients_inside_a_loop_and_under_vmap(case):
  x, w, kwargs = operands(case, jnp.float32)

  def looped(conv):
    grads = lambda x: jax.grad(lambda x, w: jnp.sum(jnp.tanh(conv(x, w, **kwargs))), (0, 1))(x, w)
    per_example = jax.vmap(lambda v: jax.grad(lambda v: jnp.sum(conv(v[None], w, **kwargs) ** 2))(v))(x)
    gx, gw = jax.lax.fori_loop(0, 2, lambda i, g: grads(x + 0.1 * g[0]), grads(x))
    return dict(grad_x=gx, grad_w=gw, per_example=per_example)

  assert_close(looped(cpu_conv.conv_general_dilated), looped(lax.conv_general_dilated), jnp.float32)


def conv_layouts(hlo_text):
  return set(re.findall(r'dim_labels=([\w>-]+)', hlo_text))


def attack_step_in_a_loop(model, x):
  """An attack's loop (input gradients) beside an AWP/LAS-style update under a loop (kernel gradients)."""
  variables = model.init(jax.random.key(0), x, train=False)
  logits = lambda v, x: model.apply(v, x, train=False)
  input_grad = lambda v, x: jax.grad(lambda x: logits(v, x).sum())(x)
  kernel_grad = lambda v, x: jax.grad(lambda v: logits(v, x).sum())(v)

  def step(v, x):
    x = jax.lax.fori_loop(0, 2, lambda i, x: x + 1e-3 * jnp.sign(input_grad(v, x)), x)
    return jax.lax.fori_loop(0, 2, lambda i, v: jax.tree.map(lambda p, g: p - 1e-3 * g, v, kernel_grad(v, x)), v)

  return jax.jit(step).lower(variables, x).compile().as_text()


@pytest.mark.parametrize('name', ['small_cnn-4', 'resnet18', 'wrn-10-1'])
def test_every_convolution_in_a_loop_is_canonical_on_cpu(name):
  """XLA:CPU's fast path is the NHWC x HWIO convolution; JAX's own gradients give other layouts (the slow ones).

  Compiled only. At CIFAR size: where a feature map is smaller than the kernel XLA swaps the operands itself.
  """
  x = jnp.zeros((2, 32, 32, 3))
  assert conv_layouts(attack_step_in_a_loop(models.get_model(name, 10), x)) == {'b01f_01io->b01f'}


def test_plain_convolution_gradients_are_not_canonical_on_cpu(monkeypatch):
  """The check above can fail: with `lax.conv_general_dilated` the loop bodies hold the transposed layouts."""
  monkeypatch.setattr(cpu_conv, 'conv_general_dilated', lax.conv_general_dilated)
  labels = conv_layouts(attack_step_in_a_loop(models.get_model('small_cnn-4', 10), jnp.zeros((2, 32, 32, 3))))
  assert 'b01f_01io->b01f' in labels and len(labels) > 1


def test_other_platforms_get_jax_own_convolutions():
  """Lowered for a GPU, the seam is `lax.conv_general_dilated`: the same convolutions in the same layouts."""
  x, w, kwargs = operands(CASES[1], jnp.float32)

  def lowered(conv):
    grads = jax.grad(lambda x, w: jnp.sum(conv(x, w, **kwargs) ** 2), (0, 1))
    text = jax.export.export(jax.jit(grads), platforms=['cuda'])(x, w).mlir_module()
    convolutions = re.findall(r'stablehlo.convolution\(.*\) (dim_numbers.*) loc', text)   # without operand names
    return sorted(convolutions)

  assert lowered(cpu_conv.conv_general_dilated) == lowered(lax.conv_general_dilated)


def test_other_convolutions_are_left_to_lax():
  x, w, _ = operands(CASES[0], jnp.float32)
  nchw = dict(window_strides=(1, 1), padding='SAME', dimension_numbers=('NCHW', 'OIHW', 'NCHW'))
  x_nchw, w_oihw = jnp.transpose(x, (0, 3, 1, 2)), jnp.transpose(w, (3, 2, 0, 1))
  dilated = dict(window_strides=(1, 1), padding='SAME', rhs_dilation=(2, 2), dimension_numbers=NHWC)
  for args, kwargs in [((x_nchw, w_oihw), nchw), ((x, w), dilated)]:
    assert (jax.make_jaxpr(functools.partial(cpu_conv.conv_general_dilated, **kwargs))(*args).eqns[0].primitive
            is lax.conv_general_dilated_p)


def test_max_pool_matches_flax():
  x = jax.random.normal(jax.random.key(1), (2, 7, 9, 3))   # odd sizes: floor, like PyTorch
  ours = lambda x: layers.max_pool_2x2(x)
  flax_pool = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  np.testing.assert_array_equal(ours(x), flax_pool(x))
  weights = jax.random.normal(jax.random.key(2), ours(x).shape)
  grad = lambda pool: jax.grad(lambda x: jnp.sum(pool(jax.nn.relu(x)) * weights))(x)
  np.testing.assert_array_equal(grad(ours), grad(flax_pool))
