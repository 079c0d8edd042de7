"""FGSM-SDI's perturbation generator (Jia et al., TIP 2022): "2 conv + 1 res-block", output eps * tanh.

The official `One_Layer_Attacker` (jiaxiaojunQAQ/FGSM-SDI, attacker.py), layer for layer and with its initialisation:
PyTorch's default for the stem and output convolutions, Xavier-uniform (gain sqrt(2)) for the residual block's
weights and PyTorch's default for their biases. Its unused `scale_last` parameter is left out. Module names are
advjax's; `advjax.interop` maps them to the official ones (`res_group.{0,1,2,3}`).
"""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from advjax.models import cpu_conv, layers

_xavier_relu = nn.initializers.variance_scaling(2.0, 'fan_avg', 'uniform')   # Xavier-uniform, gain sqrt(2)


class SDIGenerator(nn.Module):
  """[image, sign of its input gradient] (6 channels for RGB) -> an initial perturbation in [-eps, eps].

  Stem conv 3x3 -> 64 (no bias), BN (eps 1e-3), ReLU; one residual block [BN (no affine), PReLU, conv, BN (no
  affine), PReLU, conv] + identity; BN (no affine); conv 3x3 -> image channels with bias; eps * tanh.
  """
  eps: float
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32   # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, image, grad_sign, train: bool):
    def bn(name, affine=False, epsilon=1e-5):
      return layers.BatchNorm(use_running_average=not train, axis_name=self.bn_axis_name, epsilon=epsilon,
                              dtype=self.dtype, use_scale=affine, use_bias=affine, name=name)

    def block_conv(name):   # GenBlock's c1, c2: Xavier weights, PyTorch's default bias
      return nn.Conv(64, (3, 3), padding=((1, 1), (1, 1)), kernel_init=_xavier_relu,
                     bias_init=layers.torch_bias_init(64 * 9), dtype=self.dtype, name=name,
                     conv_general_dilated=cpu_conv.conv_general_dilated)

    h = jnp.concatenate([image, grad_sign], axis=-1)
    h = layers.conv(64, init='torch', dtype=self.dtype, name='stem_conv')(h)
    h = nn.relu(bn('stem_bn', affine=True, epsilon=1e-3)(h))
    r = h
    for i in (1, 2):
      r = nn.PReLU(negative_slope_init=0.25, name=f'block_prelu{i}')(bn(f'block_bn{i}')(r))
      r = block_conv(f'block_conv{i}')(r)
    h = bn('final_bn')(h + r)
    out = layers.conv(image.shape[-1], init='torch', in_features=64, use_bias=True, dtype=self.dtype,
                      name='out_conv')(h)
    return self.eps * jnp.tanh(out)
