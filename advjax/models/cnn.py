"""Plain convolutional networks: a tiny one for tests and the quick start, FAT's SmallCNN and TRADES' MNIST one."""
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


class TradesMnistCNN(layers.Classifier):
  """The SmallCNN of TRADES' MNIST experiments (yaodongyu/TRADES, models/small_cnn.py) for 28x28x1 inputs.

  [conv3-32, ReLU] x 2, 2x2 max-pool, [conv3-64, ReLU] x 2, 2x2 max-pool (unpadded convolutions), then fc 200, ReLU,
  dropout 0.5, fc 200, ReLU, fc num_classes. Its init, as the official code's: convolutions Kaiming-normal with zero
  biases, the last layer zero, the other fc layers PyTorch's default. Dropout needs a 'dropout' key in training mode
  (`rngs={'dropout': key}`); without one it is off, and advjax's training forwards pass none: advjax trains this
  network without dropout, the official MNIST script with it.
  """
  dropout: float = 0.5

  @nn.compact
  def __call__(self, x, train: bool):
    x = layers.prepare_input(x, self.mean, self.std, self.dtype)
    for i, features in enumerate([32, 32, 64, 64]):
      x = layers.conv(features, init='kaiming', use_bias=True, padding=0, dtype=self.dtype, name=f'conv{i + 1}')(x)
      x = nn.relu(x)
      if i % 2:
        x = layers.max_pool_2x2(x)
    x = x.reshape(x.shape[0], -1)
    x = nn.relu(layers.dense(200, init='torch', in_features=x.shape[-1], dtype=self.dtype, name='fc1')(x))
    x = nn.Dropout(self.dropout, deterministic=not (train and self.has_rng('dropout')))(x)
    x = nn.relu(layers.dense(200, init='torch', in_features=x.shape[-1], dtype=self.dtype, name='fc2')(x))
    x = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, dtype=self.dtype, name='head')(x)
    return layers.as_logits(x, self.dtype)
