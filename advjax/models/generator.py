"""FGSM-SDI's perturbation generator (Jia et al., TIP 2022): "2 conv + 1 res-block", output eps * tanh."""
import flax.linen as nn
import jax.numpy as jnp

from advjax.models import cpu_conv, layers

_xavier_relu = nn.initializers.variance_scaling(2.0, 'fan_avg', 'uniform')   # Xavier-uniform, gain sqrt(2)


def _bn(train, axis_name, affine=True, epsilon=1e-5):
  return layers.BatchNorm(use_running_average=not train, epsilon=epsilon, axis_name=axis_name, use_bias=affine,
                          use_scale=affine)


def _conv(features, use_bias=False, kernel_init=layers.wrn_conv_init):
  return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), use_bias=use_bias, kernel_init=kernel_init,
                 conv_general_dilated=cpu_conv.conv_general_dilated)


class SDIGenerator(nn.Module):
  """[image, sign of its input gradient] (6 channels for RGB) -> an initial perturbation in [-eps, eps].

  Stem conv 3x3 -> 64 (no bias), BN (eps 1e-3), ReLU; one residual block [BN (no affine), PReLU, conv, BN (no
  affine), PReLU, conv] + identity; BN (no affine); conv 3x3 -> image channels with bias; eps * tanh.
  """
  eps: float
  bn_axis_name: str | None = None

  @nn.compact
  def __call__(self, image, grad_sign, train: bool):
    h = _conv(64)(jnp.concatenate([image, grad_sign], axis=-1))
    h = nn.relu(_bn(train, self.bn_axis_name, epsilon=1e-3)(h))
    r = h
    for _ in range(2):
      r = nn.PReLU(negative_slope_init=0.25)(_bn(train, self.bn_axis_name, affine=False)(r))
      r = _conv(64, kernel_init=_xavier_relu)(r)
    h = _bn(train, self.bn_axis_name, affine=False)(h + r)
    return self.eps * jnp.tanh(_conv(image.shape[-1], use_bias=True)(h))
