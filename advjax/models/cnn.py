"""Plain convolutional networks: a tiny one for tests and the quick start, and FAT's SmallCNN."""
import flax.linen as nn
import jax.numpy as jnp

from advjax.models import layers


class TinyCNN(layers.Classifier):
  """conv3-32, BN, ReLU, conv3-64/2, BN, ReLU, flatten, dense.

  Small enough to compile in seconds on a CPU. It flattens rather than pooling
  globally: with only two convolutions the position of a stroke carries most
  of the information on 8x8 digits. The dense layer takes its size from the
  input at init, so any spatial size works.
  """

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.prepare_input(x, self.mean, self.std, self.dtype)
    for i, (features, strides) in enumerate([(32, 1), (64, 2)]):
      x = layers.conv(features, strides=strides, init='wrn', dtype=self.dtype, name=f'conv{i}')(x)
      x = layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype, name=f'bn{i}')(x)
      x = nn.relu(x)
    x = x.reshape(x.shape[0], -1)
    x = layers.dense(self.num_classes, init='wrn', in_features=x.shape[-1], dtype=self.dtype, name='head')(x)
    return layers.as_logits(x, self.dtype)


class SmallCNN(layers.Classifier):
  """The SmallCNN of the FAT paper (Zhang et al., 2020) for CIFAR-sized inputs.

  Three stages of [conv3, BN, ReLU] x 2 then 2x2 max-pool (64, 128, 196
  channels), then fc 256, ReLU, fc num_classes. Convolutions have biases, as
  PyTorch's do by default. The flatten is in NHWC order rather than PyTorch's
  NCHW, which permutes the first fc's rows but computes the same family.

  `width` scales it for quick experiments ('small_cnn-<width>'): channels (w, 2w, 196w/64) and fc 4w; the paper's
  network is width 64.
  """
  width: int = 64

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.prepare_input(x, self.mean, self.std, self.dtype)
    w = self.width
    for stage, features in enumerate([w, 2 * w, 196 * w // 64]):
      for i in range(2):
        name = f'stage{stage}_{i}'
        x = layers.conv(features, init='torch', in_features=x.shape[-1], use_bias=True, dtype=self.dtype,
                        name=f'{name}_conv')(x)
        x = layers.batch_norm(train, self.bn_axis_name, dtype=self.dtype, name=f'{name}_bn')(x)
        x = nn.relu(x)
      x = layers.max_pool_2x2(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(layers.dense(4 * w, init='torch', in_features=x.shape[-1], dtype=self.dtype, name='fc1')(x))
    x = layers.dense(self.num_classes, init='torch', in_features=x.shape[-1], dtype=self.dtype, name='head')(x)
    return layers.as_logits(x, self.dtype)
