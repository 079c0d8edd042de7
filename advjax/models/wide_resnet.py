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
  fast-AT papers' `PreActBlock`.

  When the shape changes, the 1x1 shortcut conv reads the pre-activated input
  relu(bn1(x)); otherwise the shortcut is x itself. This asymmetry is the
  reference code's and is kept so that results are comparable.
  """
  features: int
  strides: int
  bn_axis_name: str | None
  dtype: Any

  @nn.compact
  def __call__(self, x, train: bool):
    bn = lambda name: layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype, name=name)
    preact = nn.relu(bn('bn1')(x))
    out = layers.conv(self.features, strides=self.strides, dtype=self.dtype, name='conv1')(preact)
    out = nn.relu(bn('bn2')(out))
    out = layers.conv(self.features, dtype=self.dtype, name='conv2')(out)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = layers.conv(self.features, 1, self.strides, dtype=self.dtype, name='shortcut_conv')(preact)
    return out + x


class WideResNet(layers.Classifier):
  """WRN with `blocks` pre-activation blocks in each of three stages of width 16w, 32w, 64w.

  TRADES' `wideresnet.py` also builds a `sub_block1` that its forward pass never
  calls; it is not built here, so parameter counts are those of the network
  that is actually used (and WRN-34-10 has no dead parameters).
  """
  blocks: int = 5    # WRN-34-10 (and WRN-32-10)
  width: int = 10

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.prepare_input(x, self.mean, self.std, self.dtype)
    x = layers.conv(16, dtype=self.dtype, name='stem_conv')(x)
    for stage, strides in enumerate([1, 2, 2]):
      features = 16 * self.width * 2**stage
      for i in range(self.blocks):
        x = PreActBlock(features, strides if i == 0 else 1, self.bn_axis_name, self.dtype,
                        name=f'stage{stage}_block{i}')(x, train)
    x = layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype, name='final_bn')(x)
    x = layers.global_avg_pool(nn.relu(x))
    x = layers.dense(self.num_classes, dtype=self.dtype, name='head')(x)
    return x.astype(jnp.float32)
