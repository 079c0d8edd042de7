"""Pre-activation Wide-ResNet as used by TRADES, MART and FAT (dropout 0)."""
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from advjax.models import layers


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
