"""A drop-in `lax.conv_general_dilated` whose gradients XLA:CPU runs at full speed inside loops.

Why: JAX differentiates a convolution into convolutions that read their operands in transposed layouts (the kernel
as [h, w, out, in] for the input gradient, the batch as features for the kernel gradient). At the top level of a
program XLA:CPU first transposes them to its canonical NHWC / HWIO form; inside a `while_loop`, `fori_loop` or `cond`
body it does not, and runs them through a generic loop emitter: up to 3x slower for the input gradient every attack
step computes, 7-38x for a kernel gradient (benchmarks/loop_body.py, 2026-12-02; upstream:
https://github.com/jax-ml/jax/issues/12868).

What: on CPU, a `custom_jvp` convolution whose primal is the plain convolution and whose tangents are the same
convolutions with operands laid out so that JAX's transpose rules turn them into canonical NHWC / HWIO forward
convolutions: the input tangent reads the kernel stored as [h, w, out, in], the kernel tangent reads the images
stored as [c, h, w, n] and writes [h, w, n, c]. A strided convolution's tangents are written as a sum of stride-1
ones, one per phase of the stride, since its input gradient would otherwise be an input-dilated convolution, which
XLA:CPU runs in the generic emitter everywhere (its input gradient 1.4x slower for a 3x3 stride-2 convolution).
Values are those of `lax.conv_general_dilated` up to float rounding; forward mode, reverse mode, any order and
`vmap` all work (forward-mode tangents inside loops stay slow). Elsewhere (GPU, TPU) and for any convolution other
than a plain 2-D NHWC / HWIO one, it is `lax.conv_general_dilated` itself.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))
# The input tangent: images NHWC, kernel stored [h, w, out, in], output NHWC.
_INPUT_TANGENT = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(2, 3, 0, 1), out_spec=(0, 3, 1, 2))
# The kernel tangent: images stored [c, h, w, n], kernel tangent [in, h, w, out], output [h, w, n, out].
_KERNEL_TANGENT = lax.ConvDimensionNumbers(lhs_spec=(3, 0, 1, 2), rhs_spec=(3, 0, 1, 2), out_spec=(2, 3, 0, 1))


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1, precision=None,
                         preferred_element_type=None):
  """`lax.conv_general_dilated`, with gradients in XLA:CPU's fast layouts on CPU (see the module docstring)."""
  plain = functools.partial(
      lax.conv_general_dilated, window_strides=window_strides, padding=padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
      batch_group_count=batch_group_count, precision=precision, preferred_element_type=preferred_element_type)
  nhwc = lhs.ndim == 4 and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) == _NHWC
  undilated = all(d == 1 for d in (lhs_dilation or ()) + (rhs_dilation or ()))
  if not (nhwc and undilated and feature_group_count == batch_group_count == 1 and preferred_element_type is None):
    return plain(lhs, rhs)
  padding = padding if isinstance(padding, str) else tuple(map(tuple, padding))
  cpu = lambda x, w: _conv(x, w, tuple(window_strides), padding, precision)
  return lax.platform_dependent(lhs, rhs, cpu=cpu, default=plain)


def _plain(x, w, dimension_numbers, strides, padding, precision):
  return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dimension_numbers, precision=precision)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _conv(x, w, strides, padding, precision):
  return _plain(x, w, _NHWC, strides, padding, precision)


def _conv_jvp(strides, padding, precision, primals, tangents):
  x, w = primals
  x_dot, w_dot = tangents
  y = _conv(x, w, strides, padding, precision)
  terms = []
  if not isinstance(x_dot, SymbolicZero):
    terms += [_plain(x_dot, jnp.swapaxes(w, 2, 3), _INPUT_TANGENT, (1, 1), pads, precision)
              for x_dot, w, pads in _stride_phases(x_dot, w, strides, padding)]
  if not isinstance(w_dot, SymbolicZero):
    # The barrier keeps XLA from recomputing x's producers (BatchNorm, ReLU, a residual sum) in transposed order.
    for x, w_dot, pads in _stride_phases(jax.lax.optimization_barrier(x), w_dot, strides, padding):
      out = _plain(jnp.transpose(x, (3, 1, 2, 0)), jnp.transpose(w_dot, (2, 0, 1, 3)), _KERNEL_TANGENT, (1, 1), pads,
                   precision)
      terms.append(jnp.transpose(out, (2, 0, 1, 3)))
  return y, sum(terms[1:], terms[0]) if terms else SymbolicZero(jax.typeof(y).to_tangent_aval())


def _stride_phases(x, w, strides, padding):
  """The convolution as a sum of stride-1 ones: [(images, kernel, padding)], one per phase of the stride.

  A stride-s convolution reads the padded images at s * o + k; writing each tap k = s * j + r, phase r convolves the
  images' every s-th pixel from r with the kernel's every s-th tap from r, at stride 1. Their gradients are then
  plain convolutions too, where a strided convolution's input gradient would need a dilated one (slow on XLA:CPU).
  """
  if strides == (1, 1):
    return [(x, w, padding)]
  spatial = x.shape[1:3]
  pads = lax.padtype_to_pads(spatial, w.shape[:2], strides, padding) if isinstance(padding, str) else padding
  x = jnp.pad(x, ((0, 0), *pads, (0, 0)))
  out = [(n + lo + hi - k) // s + 1 for n, (lo, hi), k, s in zip(spatial, pads, w.shape[:2], strides)]
  phases = []
  for r0 in range(strides[0]):
    for r1 in range(strides[1]):
      w_r = w[r0::strides[0], r1::strides[1]]
      if w_r.size:
        x_r = x[:, r0::strides[0], r1::strides[1]][:, :out[0] + w_r.shape[0] - 1, :out[1] + w_r.shape[1] - 1]
        phases.append((x_r, w_r, ((0, 0), (0, 0))))
  return phases


_conv.defjvp(_conv_jvp, symbolic_zeros=True)
