"""CIFAR ResNet-18 and PreActResNet-18 in the style of kuangliu/pytorch-cifar (the usual adversarial-training
baselines), with PyTorch's default initialisation as their official code has no init code."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from advjax.models import layers
from advjax.models.wide_resnet import PreActBlock

_STAGES = [(64, 1), (128, 2), (256, 2), (512, 2)]


class BasicBlock(nn.Module):
  """Post-activation residual block: conv3-BN-ReLU-conv3-BN, add shortcut, ReLU."""
  features: int
  strides: int
  bn_axis_name: str | None
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda name: layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype, name=name)
    conv = lambda k, strides, name: layers.conv(self.features, k, strides, init='torch', dtype=self.dtype,
                                                name=name)
    out = nn.relu(bn('bn1')(conv(3, self.strides, 'conv1')(x)))
    out = bn('bn2')(conv(3, 1, 'conv2')(out))
    if self.strides != 1 or x.shape[-1] != self.features:
      x = bn('shortcut_bn')(conv(1, self.strides, 'shortcut_conv')(x))
    return nn.relu(out + x)


class ResNet18(layers.Classifier):
  """3x3 stem (no max-pool), stages of 64-128-256-512 with two blocks each, global pool, fc.

  kuangliu pools with a fixed 4x4 window, which is global pooling on 32x32
  inputs; pooling globally lets other sizes work too.
  """

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.prepare_input(x, self.mean, self.std, self.dtype)
    x = layers.conv(64, init='torch', dtype=self.dtype, name='stem_conv')(x)
    x = nn.relu(layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype, name='stem_bn')(x))
    for stage, (features, strides) in enumerate(_STAGES):
      for i in range(2):
        x = BasicBlock(features, strides if i == 0 else 1, self.bn_axis_name, self.dtype,
                       name=f'stage{stage}_block{i}')(x, train)
    x = layers.global_avg_pool(x)
    x = layers.dense(self.num_classes, init='torch', in_features=x.shape[-1], dtype=self.dtype, name='head')(x)
    return layers.as_logits(x, self.dtype)


class PreActResNet18(layers.Classifier):
  """PreActResNet-18: a bare 3x3 stem, four stages of two pre-activation blocks (64-128-256-512), a final BN-ReLU
  (`final_bn`), global pool, fc.

  The official codes differ: AWP's `preactresnet.py` is the default; locuslab/fast_adversarial's (FGSM-RS) reads
  the 1x1 shortcuts from the block input (`preact_shortcut=False`); FGSM-SDI's, FGSM-PGI's and LAS-AT's (kuangliu's
  `preact_resnet.py`) have no final BN-ReLU (`final_bn=False`); RobustBench's `PreActResNet18()` has neither.
  """
  final_bn: bool = True
  preact_shortcut: bool = True

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.prepare_input(x, self.mean, self.std, self.dtype)
    x = layers.conv(64, init='torch', dtype=self.dtype, name='stem_conv')(x)
    for stage, (features, strides) in enumerate(_STAGES):
      for i in range(2):
        x = PreActBlock(features, strides if i == 0 else 1, self.bn_axis_name, self.dtype, 'torch',
                        self.preact_shortcut, name=f'stage{stage}_block{i}')(x, train)
    if self.final_bn:
      x = nn.relu(layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype, name='final_bn')(x))
    x = layers.global_avg_pool(x)
    x = layers.dense(self.num_classes, init='torch', in_features=x.shape[-1], dtype=self.dtype, name='head')(x)
    return layers.as_logits(x, self.dtype)
