"""Building blocks shared by every model in the zoo.

Initialisers, padding and BatchNorm constants follow the PyTorch reference code
(TRADES, FAT, kuangliu's pytorch-cifar), so results are comparable with papers.
"""
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from advjax.models import cpu_conv

# Kaiming-normal, fan-out: N(0, sqrt(2 / (k * k * out_channels))), as in the reference code.
conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
# PyTorch's default nn.Linear weight init (kaiming_uniform, a=sqrt(5)) is U(+-1/sqrt(fan_in)).
dense_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def conv(features: int, kernel_size: int = 3, strides: int = 1, *, use_bias: bool = False,
         dtype: Any = jnp.float32, name: str | None = None) -> nn.Conv:
  """A square convolution padded like PyTorch's `padding=k // 2`.

  Explicit symmetric padding rather than 'SAME': for stride 2 on an even input,
  'SAME' pads only the bottom/right, which would shift the sampling grid
  relative to the reference models. Its gradients run at full speed inside the
  attack loops on XLA:CPU (`cpu_conv`).
  """
  pad = kernel_size // 2
  return nn.Conv(features, (kernel_size, kernel_size), strides=strides,
                 padding=((pad, pad), (pad, pad)), use_bias=use_bias,
                 kernel_init=conv_init, dtype=dtype, name=name,
                 conv_general_dilated=cpu_conv.conv_general_dilated)


def dense(features: int, *, dtype: Any = jnp.float32, name: str | None = None) -> nn.Dense:
  return nn.Dense(features, kernel_init=dense_init, dtype=dtype, name=name)


def batch_norm(train: bool, axis_name: str | None, *, dtype: Any = jnp.float32,
               name: str | None = None) -> nn.BatchNorm:
  """BatchNorm with PyTorch's constants (its momentum 0.1 is flax's 0.9).

  With `axis_name` set, training-mode statistics are averaged over that mapped
  axis, so a batch split across devices is normalised as one batch.
  Statistics are reduced in float32 even when `dtype` is bfloat16.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                      axis_name=axis_name, dtype=dtype, name=name)


def prepare_input(x, mean: Sequence[float] | None, std: Sequence[float] | None, dtype):
  """Maps [0, 1] images to what the network sees: per-channel normalised, in `dtype`.

  Normalising inside the model keeps attack budgets (epsilon) in pixel units.
  The arithmetic is float32 so a bfloat16 model sees the same rounding of the
  normalised input regardless of the caller's dtype.
  """
  x = jnp.asarray(x, jnp.float32)
  if mean is not None:
    x = x - jnp.asarray(mean, jnp.float32)
  if std is not None:
    x = x / jnp.asarray(std, jnp.float32)
  return x.astype(dtype)


def max_pool_2x2(x):
  """2x2 max-pooling with stride 2, floor mode (PyTorch's `MaxPool2d(2)`), as the maximum of four strided slices.

  The same values as `nn.max_pool(x, (2, 2), strides=(2, 2))`, and the same gradient wherever a window's maximum is
  unique or the tied values feed a ReLU's zero side (a tie shares the gradient instead of giving it to one entry).
  Its backward is elementwise: on XLA:CPU 4x faster than `nn.max_pool`'s select-and-scatter, 2x faster than a
  reshape-and-max's (benchmarks/loop_body.py, 2026-12-02).
  """
  h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
  corner = lambda i, j: x[:, i:h:2, j:w:2]
  with jax.named_scope('max_pool'):
    return jnp.maximum(jnp.maximum(corner(0, 0), corner(0, 1)), jnp.maximum(corner(1, 0), corner(1, 1)))


def global_avg_pool(x):
  # Mean in float32: summing many bfloat16 activations loses precision.
  return jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(x.dtype)


class Classifier(nn.Module):
  """What every advjax classifier takes: classes, the BatchNorm axis, input normalisation and compute dtype."""
  num_classes: int
  bn_axis_name: str | None = None
  mean: tuple[float, ...] | None = None
  std: tuple[float, ...] | None = None
  dtype: Any = jnp.float32
