"""The model zoo: image classifiers for adversarial training, looked up by name.

Every model takes NHWC images in [0, 1] with any channel count, normalises them
itself (so attack budgets stay in pixel units), uses BatchNorm (collection
'batch_stats'), and returns float32 logits of shape (batch, num_classes):

  model = get_model('wrn-34-10', 10, mean=CIFAR_MEAN, std=CIFAR_STD)
  variables = model.init(key, x, train=False)
  logits, updates = model.apply(variables, x, train=True, mutable=['batch_stats'])
"""
import functools
import re

import flax.linen as nn
import jax.numpy as jnp

from advjax.models.cnn import SmallCNN, TinyCNN, TradesMnistCNN
from advjax.models.resnet import PreActResNet18, ResNet18
from advjax.models.wide_resnet import MadryWideResNet, WideResNet, blocks_per_stage

__all__ = ['get_model', 'from_config', 'is_known', 'KNOWN_MODELS', 'TinyCNN', 'SmallCNN', 'TradesMnistCNN', 'ResNet18',
           'PreActResNet18', 'WideResNet', 'MadryWideResNet']

# The PreActResNet-18s of the official codes differ (see PreActResNet18); each has its name.
_FIXED = {'tiny_cnn': TinyCNN, 'small_cnn': SmallCNN, 'trades_mnist_cnn': TradesMnistCNN, 'resnet18': ResNet18,
          'preact_resnet18': PreActResNet18,   # AWP's
          'preact_resnet18-kuangliu': functools.partial(PreActResNet18, final_bn=False),   # FAT, SDI, PGI, LAS-AT
          'preact_resnet18-locuslab': functools.partial(PreActResNet18, preact_shortcut=False),   # FGSM-RS
          'preact_resnet18-robustbench': functools.partial(PreActResNet18, final_bn=False, preact_shortcut=False)}
_WRN_NAME = re.compile(r'(madry_)?wrn-(\d+)-(\d+)')
_SMALL_CNN_NAME = re.compile(r'small_cnn-([1-9]\d*)')

KNOWN_MODELS = (', '.join(_FIXED) + ', small_cnn-<width> (the paper\'s is 64), '
                'wrn-<depth>-<width> (depth 6n+4 or 6n+2, e.g. wrn-34-10, wrn-28-10, wrn-58-10, wrn-70-16), '
                'madry_wrn-<depth>-<width> (Madry\'s TF WRN, Free-AT\'s; depth 6n+2, e.g. madry_wrn-32-10)')


def _parse_wrn(name: str) -> tuple[type[nn.Module], int, int] | None:
  """(class, blocks per stage, width) for a valid '[madry_]wrn-<depth>-<width>' name, else None."""
  match = _WRN_NAME.fullmatch(name)
  if not match:
    return None
  madry, depth, width = match[1], int(match[2]), int(match[3])
  if madry:   # two convolutions per unit, plus the first conv and the fc
    blocks = (depth - 2) // 6 if depth > 2 and (depth - 2) % 6 == 0 else None
  else:
    blocks = blocks_per_stage(depth)
  return (MadryWideResNet if madry else WideResNet, blocks, width) if blocks and width > 0 else None


def is_known(name: str) -> bool:
  """Whether `get_model` accepts `name`; cheap enough for config validation."""
  return name in _FIXED or _SMALL_CNN_NAME.fullmatch(name) is not None or _parse_wrn(name) is not None


def get_model(name: str, num_classes: int, *, bn_axis_name: str | None = None,
              mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
              dtype=jnp.float32, **fields) -> nn.Module:
  """The classifier called `name` (see KNOWN_MODELS).

  Args:
    name: a model name, e.g. 'resnet18' or 'wrn-34-10'.
    num_classes: width of the logits.
    bn_axis_name: mapped axis over which BatchNorm averages training statistics
      (e.g. 'data' inside a shard_map); None for per-device statistics.
    mean, std: per-channel input normalisation applied inside the model.
    dtype: computation dtype (e.g. jnp.bfloat16); parameters stay float32.
    **fields: other fields of the model's class, e.g. `final_bn=False` for a PreActResNet18.
  """
  # Tuples, not lists or arrays: module attributes must be hashable.
  kwargs = dict(num_classes=num_classes, bn_axis_name=bn_axis_name, dtype=dtype,
                mean=None if mean is None else tuple(float(m) for m in mean),
                std=None if std is None else tuple(float(s) for s in std), **fields)
  if name in _FIXED:
    return _FIXED[name](**kwargs)
  if small := _SMALL_CNN_NAME.fullmatch(name):
    return SmallCNN(width=int(small[1]), **kwargs)
  if wrn := _parse_wrn(name):
    cls, blocks, width = wrn
    return cls(blocks=blocks, width=width, **kwargs)
  raise ValueError(f'Unknown model {name!r}; known models: {KNOWN_MODELS}.')


def from_config(cfg, num_classes: int, *, bn_axis_name: str | None = None) -> nn.Module:
  """The model a config's `model` section describes (name, mean, std, dtype; empty mean/std: none)."""
  return get_model(cfg.name, num_classes, bn_axis_name=bn_axis_name, mean=tuple(cfg.mean) or None,
                   std=tuple(cfg.std) or None, dtype=jnp.dtype(cfg.dtype))
