"""CIFAR ResNet-18 in the style of kuangliu/pytorch-cifar (the usual adversarial-training baseline)."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from advjax.models import layers
from advjax.models.wide_resnet import PreActBlock


class BasicBlock(nn.Module):
  """Post-activation residual block: conv3-BN-ReLU-conv3-BN, add shortcut, ReLU."""
  features: int
  strides: int
  bn_axis_name: str | None
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda name: layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype, name=name)
    out = layers.conv(self.features, strides=self.strides, dtype=self.dtype, name='conv1')(x)
    out = nn.relu(bn('bn1')(out))
    out = layers.conv(self.features, dtype=self.dtype, name='conv2')(out)
    out = bn('bn2')(out)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = layers.conv(self.features, 1, self.strides, dtype=self.dtype, name='shortcut_conv')(x)
      x = bn('shortcut_bn')(x)
    return nn.relu(out + x)


class ResNet18(layers.Classifier):
  """3x3 stem (no max-pool), stages of 64-128-256-512 with two blocks each, global pool, fc.

  kuangliu pools with a fixed 4x4 window, which is global pooling on 32x32
  inputs; pooling globally lets other sizes work too.
  """

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.prepare_input(x, self.mean, self.std, self.dtype)
    x = layers.conv(64, dtype=self.dtype, name='stem_conv')(x)
    x = layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype, name='stem_bn')(x)
    x = nn.relu(x)
    for stage, (features, strides) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)]):
      for i in range(2):
        x = BasicBlock(features, strides if i == 0 else 1, self.bn_axis_name, self.dtype,
                       name=f'stage{stage}_block{i}')(x, train)
    x = layers.global_avg_pool(x)
    x = layers.dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return x.astype(jnp.float32)


class PreActResNet18(layers.Classifier):
  """PreAct-ResNet-18 of the fast-AT papers (FGSM-RS, FGSM-SDI, FGSM-PGI, LAS-AT, AWP): a bare 3x3 stem, four
  stages of two pre-activation blocks (64-128-256-512), a final BN-ReLU, global pool, fc."""

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.prepare_input(x, self.mean, self.std, self.dtype)
    x = layers.conv(64, dtype=self.dtype, name='stem_conv')(x)
    for stage, (features, strides) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)]):
      for i in range(2):
        x = PreActBlock(features, strides if i == 0 else 1, self.bn_axis_name, self.dtype,
                        name=f'stage{stage}_block{i}')(x, train)
    x = nn.relu(layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype, name='final_bn')(x))
    x = layers.global_avg_pool(x)
    x = layers.dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return x.astype(jnp.float32)
