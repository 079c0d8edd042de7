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

# The two initialisations of the reference code; each network takes the one its official code uses.
# 'torch': PyTorch's default for nn.Conv2d and nn.Linear (kaiming_uniform with a = sqrt(5)): weights and biases
#   U(+-1/sqrt(fan_in)). FAT's SmallCNN, kuangliu's ResNet-18 and the PreActResNet-18s have no init code of their own.
# 'wrn': the WideResNet code's loop over modules: conv weights N(0, sqrt(2 / (k * k * out_channels))), linear biases
#   zero, linear weights PyTorch's default.
torch_kernel_init = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')
wrn_conv_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
kaiming_normal_init = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')   # TRADES' MNIST SmallCNN


def torch_bias_init(fan_in: int):
  """PyTorch's default bias init: U(+-1/sqrt(fan_in)) with the fan-in of the layer's weight."""
  bound = 1 / fan_in**0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


def conv(features: int, kernel_size: int = 3, strides: int = 1, *, init: str, in_features: int | None = None,
         use_bias: bool = False, padding: int | None = None, dtype: Any = jnp.float32,
         name: str | None = None) -> nn.Conv:
  """A square convolution padded like PyTorch's `padding=k // 2` (or `padding`), initialised as `init` says:
  'torch', 'wrn' or 'kaiming' (`nn.init.kaiming_normal_`: N(0, 2 / fan_in), biases zero).

  Explicit symmetric padding rather than 'SAME': for stride 2 on an even input,
  'SAME' pads only the bottom/right, which would shift the sampling grid
  relative to the reference models. Its gradients run at full speed inside the
  attack loops on XLA:CPU (`cpu_conv`). `in_features` is needed for the bias of a 'torch'-initialised convolution.
  """
  pad = kernel_size // 2 if padding is None else padding
  kernel_init = dict(torch=torch_kernel_init, wrn=wrn_conv_init, kaiming=kaiming_normal_init)[init]
  bias_init = (torch_bias_init(in_features * kernel_size**2) if use_bias and init == 'torch'
               else nn.initializers.zeros)
  return nn.Conv(features, (kernel_size, kernel_size), strides=strides,
                 padding=((pad, pad), (pad, pad)), use_bias=use_bias,
                 kernel_init=kernel_init, bias_init=bias_init, dtype=dtype, name=name,
                 conv_general_dilated=cpu_conv.conv_general_dilated)


def dense(features: int, *, init: str, in_features: int, dtype: Any = jnp.float32, name: str | None = None) -> nn.Dense:
  """A linear layer with PyTorch's default weight init; its bias that too under 'torch', zero under 'wrn'."""
  bias_init = torch_bias_init(in_features) if init == 'torch' else nn.initializers.zeros
  return nn.Dense(features, kernel_init=torch_kernel_init, bias_init=bias_init, dtype=dtype, name=name)


class BatchNorm(nn.Module):
  """PyTorch's `BatchNorm2d` (train mode: batch statistics, running averages updated; eval mode: the averages).

  Unlike `nn.BatchNorm`, the running variance averages the unbiased batch variance (times n / (n - 1), n the values
  per channel over the whole batch), as PyTorch does; the normalisation uses the biased one, as both do. Variables
  are named as `nn.BatchNorm`'s (params scale, bias; batch_stats mean, var). With `axis_name` set, training-mode
  statistics are averaged over that mapped axis, so a batch split across devices is normalised as one batch.
  Statistics are computed in float32 (or wider) even when `dtype` is bfloat16.
  """
  use_running_average: bool
  axis_name: str | None = None
  momentum: float = 0.9   # flax's convention: PyTorch's momentum 0.1
  epsilon: float = 1e-5
  dtype: Any = jnp.float32
  use_scale: bool = True
  use_bias: bool = True

  @nn.compact
  def __call__(self, x):
    features, stats_dtype = x.shape[-1], jnp.promote_types(x.dtype, jnp.float32)
    running_mean = self.variable('batch_stats', 'mean', lambda: jnp.zeros(features, jnp.float32))
    running_var = self.variable('batch_stats', 'var', lambda: jnp.ones(features, jnp.float32))
    if self.use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      values = x.astype(stats_dtype).reshape(-1, features)
      count, mean = values.shape[0], values.mean(0)
      if self.axis_name:
        mean, count = jax.lax.pmean(mean, self.axis_name), jax.lax.psum(count, self.axis_name)
      var = jnp.square(values - mean).mean(0)   # two passes, as PyTorch: no cancellation in E[x^2] - E[x]^2
      if self.axis_name:
        var = jax.lax.pmean(var, self.axis_name)
      if not self.is_initializing():
        average = lambda old, new: self.momentum * old + (1 - self.momentum) * new.astype(old.dtype)
        running_mean.value = average(running_mean.value, mean)
        running_var.value = average(running_var.value, var * count / max(count - 1, 1))
    y = (x.astype(stats_dtype) - mean) * jax.lax.rsqrt(var + self.epsilon)
    if self.use_scale:
      y = y * self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    if self.use_bias:
      y = y + self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    return y.astype(self.dtype)


def batch_norm(train: bool, axis_name: str | None, *, dtype: Any = jnp.float32, name: str | None = None) -> BatchNorm:
  """BatchNorm with PyTorch's constants and running variance (see `BatchNorm`)."""
  return BatchNorm(use_running_average=not train, axis_name=axis_name, dtype=dtype, name=name)


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


def as_logits(x, dtype):
  """Logits in float32, or wider where the model computes wider (float64 in the differential tests)."""
  return x.astype(jnp.promote_types(dtype, jnp.float32))


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
