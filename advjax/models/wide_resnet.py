"""The Wide-ResNets of the official codes: TRADES', MART's and FAT's pre-activation WRN (dropout 0), and Madry's
cifar10_challenge WRN in TF, Free-AT's."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from advjax.models import cpu_conv, layers


def blocks_per_stage(depth: int) -> int | None:
  """Blocks in each of the three stages for a WRN of `depth`, or None if no WRN has that depth.

  Two conventions are in use: TRADES counts depth = 6n + 4 (WRN-34-10, WRN-28-10)
  and Madry's CIFAR code 6n + 2 (WRN-32-10). The two never collide (they differ
  mod 6), so both are accepted; WRN-32-10 and WRN-34-10 are the same network.
  """
  for extra in (4, 2):
    if depth > extra and (depth - extra) % 6 == 0:
      return (depth - extra) // 6
  return None


class PreActBlock(nn.Module):
  """BN-ReLU-conv3(stride)-BN-ReLU-conv3 plus a shortcut (He et al., 2016), as TRADES' WRN `BasicBlock` and the
  PreActResNets' `PreActBlock`.

  When the shape changes, a 1x1 shortcut conv reads the pre-activated input relu(bn1(x)) (TRADES' WRN, kuangliu's
  and the FAT, AWP, FGSM-SDI, FGSM-PGI and LAS-AT PreActResNet-18) or, with `preact_shortcut=False`, the block's
  input x itself (locuslab/fast_adversarial's and RobustBench's PreActResNet-18); otherwise the shortcut is x.
  """
  features: int
  strides: int
  bn_axis_name: str | None
  dtype: Any
  init: str
  preact_shortcut: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda name: layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype, name=name)
    conv = lambda k, strides, name: layers.conv(self.features, k, strides, init=self.init, dtype=self.dtype,
                                                name=name)
    preact = nn.relu(bn('bn1')(x))
    out = conv(3, self.strides, 'conv1')(preact)
    out = conv(3, 1, 'conv2')(nn.relu(bn('bn2')(out)))
    if self.strides != 1 or x.shape[-1] != self.features:
      x = conv(1, self.strides, 'shortcut_conv')(preact if self.preact_shortcut else x)
    return out + x


class WideResNet(layers.Classifier):
  """WRN with `blocks` pre-activation blocks in each of three stages of width 16w, 32w, 64w; the WRN code's init.

  TRADES' `wideresnet.py` (and FAT's, MART's) also builds a `sub_block1` that its forward pass never calls; it is not
  built here, so parameter counts are those of the network that is actually used. `advjax.interop` drops it from a
  checkpoint that has it.
  """
  blocks: int = 5    # WRN-34-10 (and WRN-32-10)
  width: int = 10

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.prepare_input(x, self.mean, self.std, self.dtype)
    x = layers.conv(16, init='wrn', dtype=self.dtype, name='stem_conv')(x)
    for stage, strides in enumerate([1, 2, 2]):
      features = 16 * self.width * 2**stage
      for i in range(self.blocks):
        x = PreActBlock(features, strides if i == 0 else 1, self.bn_axis_name, self.dtype, 'wrn',
                        name=f'stage{stage}_block{i}')(x, train)
    x = layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype, name='final_bn')(x)
    x = layers.global_avg_pool(nn.relu(x))
    x = layers.dense(self.num_classes, init='wrn', in_features=x.shape[-1], dtype=self.dtype, name='head')(x)
    return layers.as_logits(x, self.dtype)


def per_image_standardization(x):
  """TF's `tf.image.per_image_standardization` (TF 1.x): each image minus its mean, over max(its standard deviation,
  1 / sqrt(values per image)), the variance computed as TF does, E[x^2] - E[x]^2 clipped at 0."""
  axes = tuple(range(1, x.ndim))
  mean = jnp.mean(x, axes, keepdims=True)
  variance = nn.relu(jnp.mean(jnp.square(x), axes, keepdims=True) - jnp.square(mean))
  min_std = 1 / np.sqrt(np.prod(x.shape[1:]))
  return (x - mean) / jnp.maximum(jnp.sqrt(variance), min_std)


class MadryUnit(nn.Module):
  """`Model._residual` of Madry's cifar10_challenge WRN: BN-leaky ReLU-conv3(stride)-BN-leaky ReLU-conv3, TF 'SAME'
  padding; the shortcut is the input (pre-activated in the first unit, `activate_before_residual`), average-pooled
  by the stride and zero-padded in channels when the width changes."""
  in_features: int
  features: int
  strides: int
  activate_before_residual: bool
  bn_axis_name: str | None
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):
    # TF's `contrib.layers.batch_norm` (decay 0.9, epsilon 1e-3); its fused kernel averages the unbiased variance.
    bn = lambda name: layers.BatchNorm(not train, self.bn_axis_name, epsilon=1e-3, dtype=self.dtype, name=name)
    conv = lambda strides, name: nn.Conv(self.features, (3, 3), strides, padding='SAME', use_bias=False,
                                         kernel_init=layers.wrn_conv_init, dtype=self.dtype, name=name,
                                         conv_general_dilated=cpu_conv.conv_general_dilated)
    activation = lambda v: nn.leaky_relu(v, 0.1)
    if self.activate_before_residual:
      x = shortcut = activation(bn('init_bn')(x))
    else:
      shortcut, x = x, activation(bn('init_bn')(x))
    x = conv(self.strides, 'conv1')(x)
    x = conv(1, 'conv2')(activation(bn('bn2')(x)))
    if self.in_features != self.features:
      shortcut = nn.avg_pool(shortcut, (self.strides,) * 2, (self.strides,) * 2, 'VALID')
      pad = (self.features - self.in_features) // 2
      shortcut = jnp.pad(shortcut, ((0, 0), (0, 0), (0, 0), (pad, pad)))
    return x + shortcut


class MadryWideResNet(layers.Classifier):
  """Madry's cifar10_challenge WRN as Free-AT's official `free_model.py` (ashafahi/free_adv_train c42cac2) builds
  it: per-image standardisation of the [0, 255] image inside the model, `blocks` residual units per stage of width
  16w, 32w, 64w, leaky ReLU 0.1, TF's initialisers (convolutions N(0, 2 / (k * k * out)), the fc weights
  U(+-sqrt(3 / fan_in)), its biases zero).

  Modules are named as the official variable scopes (`init_conv`, `unit_{stage}_{i}` with `init_bn`, `conv1`, `bn2`,
  `conv2`, `final_bn`, `logit`). `mean` and `std`, if given, apply before the standardisation (the official has none).
  """
  blocks: int = 5   # WRN-32-10
  width: int = 10

  @nn.compact
  def __call__(self, x, train: bool):
    x = per_image_standardization(layers.prepare_input(x, self.mean, self.std, jnp.float32) * 255).astype(self.dtype)
    x = nn.Conv(16, (3, 3), padding='SAME', use_bias=False, kernel_init=layers.wrn_conv_init, dtype=self.dtype,
                name='init_conv', conv_general_dilated=cpu_conv.conv_general_dilated)(x)
    in_features = 16
    for stage, strides in enumerate([1, 2, 2]):
      features = 16 * self.width * 2**stage
      for i in range(self.blocks):
        x = MadryUnit(in_features, features, strides if i == 0 else 1, stage == 0 and i == 0, self.bn_axis_name,
                      self.dtype, name=f'unit_{stage + 1}_{i}')(x, train)
        in_features = features
    x = layers.BatchNorm(not train, self.bn_axis_name, epsilon=1e-3, dtype=self.dtype, name='final_bn')(x)
    x = layers.global_avg_pool(nn.leaky_relu(x, 0.1))
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform'),
                 dtype=self.dtype, name='logit')(x)
    return layers.as_logits(x, self.dtype)
