"""PyTorch checkpoints in and out, for every network of the zoo, in the module layout of the code that defines it.

  model, variables = interop.load_torch('model.pt', 'wrn-34-10')            # TRADES / FAT / MART / RobustBench WRN
  logits = model.apply(variables, x_nhwc, train=False)
  torch.save(interop.to_torch(model, variables), 'advjax.pt')             # loads into the official module

Layouts: the WideResNet of TRADES, MART, FAT and RobustBench (`conv1`, `block{1,2,3}.layer.{i}`, `bn1`, `fc`; a
checkpoint's unused `sub_block1` is dropped on the way in and not written on the way out, so the official module
loads an export with `strict=False`, RobustBench's with its default `sub_block1=False`); kuangliu's ResNet-18 and
PreActResNet-18 (`conv1`, `layer{1..4}.{i}`, `bn`, `linear`: FAT, AWP, FGSM-SDI, FGSM-PGI, LAS-AT, fast_adversarial
and RobustBench); FAT's SmallCNN (`block{s}_conv{i}`, `batchnorm{s}_{i}`, `fc1`, `fc2`; fc1's rows permuted from
PyTorch's NCHW flatten to advjax's NHWC one); FGSM-SDI's generator, `One_Layer_Attacker` (`res_group.{0,1,2,3}`;
its unused `scale_last` is dropped and not written, so the official module loads an export with `strict=False`);
Madry's TF WRN, Free-AT's (`madry_wrn-<depth>-<width>`: modules named as its variable scopes, `init_conv`,
`unit_{s}_{i}.{init_bn,conv1,bn2,conv2}`, `final_bn`, `logit`, as a PyTorch port would; the official checkpoints are
TF's); LAS-AT's policy (`StrategyNet.py`'s `ResNet_Strategy`): its trunk's layout, the head split into
`Attack_epsilon`, `Attack_iters`, `Attack_step_size`, `Attack_beta_size` (`las_policy_to_torch`, `load_las_policy`;
the one-choice `Attack_method` head is dropped on load and written as zeros). Needs torch only to read or write `.pt`
files.
"""
import collections
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from advjax import models
from advjax.models import generator

TORCH_SUFFIXES = ('.pt', '.pth')
LAYOUTS = ('small_cnn, small_cnn-<width>, trades_mnist_cnn, resnet18, '
           'preact_resnet18[-kuangliu|-locuslab|-robustbench], wrn-<depth>-<width>, madry_wrn-<depth>-<width>, '
           'sdi_generator')
SDI_GENERATOR = 'sdi_generator'   # FGSM-SDI's `One_Layer_Attacker`; load_torch needs its `eps`


def has_layout(model_name):
  """Whether the zoo's network `model_name` has a PyTorch layout here (all but advjax's own tiny_cnn)."""
  return models.is_known(model_name) and model_name != 'tiny_cnn'


class CheckpointError(ValueError):
  """A PyTorch checkpoint that does not fit the network it is loaded into."""


# A checkpoint's keys that hold nothing the network computes with.
_DEAD = re.compile(r'(.*\.)?num_batches_tracked|sub_block1\..*|scale_last')
# Which PyTorch tensor each advjax leaf comes from.
_TORCH_LEAF = dict(kernel='weight', scale='weight', mean='running_mean', var='running_var', negative_slope='weight')
# The SDI generator's modules: `res_group` holds BasicConv2d (conv, bn), GenBlock (b1, act1, c1, b2, act2, c2), a
# BatchNorm and the output conv.
_GENERATOR_MODULES = dict(
    stem_conv='res_group.0.conv', stem_bn='res_group.0.bn', block_bn1='res_group.1.b1',
    block_prelu1='res_group.1.act1', block_conv1='res_group.1.c1', block_bn2='res_group.1.b2',
    block_prelu2='res_group.1.act2', block_conv2='res_group.1.c2', final_bn='res_group.2', out_conv='res_group.3')


def _torch_module_name(model, path):
  """The PyTorch module name of the advjax module at `path` (a tuple of flax names)."""
  if isinstance(model, generator.SDIGenerator):
    return _GENERATOR_MODULES[path[0]]
  if isinstance(model, models.MadryWideResNet):   # named as the official TF variable scopes
    return '.'.join(path)
  if isinstance(model, models.TradesMnistCNN):   # the official Sequentials' names; `head` is fc3
    if path[0].startswith('conv'):
      return f'feature_extractor.{path[0]}'
    return 'classifier.' + ('fc3' if path[0] == 'head' else path[0])
  if isinstance(model, models.SmallCNN):
    if path[0] in ('fc1', 'head'):
      return 'fc1' if path[0] == 'fc1' else 'fc2'
    stage, i, kind = re.fullmatch(r'stage(\d)_(\d)_(conv|bn)', path[0]).groups()
    s, i = int(stage) + 1, int(i) + 1
    return f'block{s}_conv{i}' if kind == 'conv' else f'batchnorm{s}_{i}'
  wrn = isinstance(model, models.WideResNet)
  top = {'stem_conv': 'conv1', 'stem_bn': 'bn1', 'final_bn': 'bn1' if wrn else 'bn', 'head': 'fc' if wrn else 'linear'}
  if path[0] in top:
    return top[path[0]]
  stage, block = map(int, re.fullmatch(r'stage(\d)_block(\d+)', path[0]).groups())
  prefix = f'block{stage + 1}.layer.{block}' if wrn else f'layer{stage + 1}.{block}'
  shortcut = {'shortcut_conv': 'convShortcut' if wrn else 'shortcut.0', 'shortcut_bn': 'shortcut.1'}
  return f'{prefix}.{shortcut.get(path[1], path[1])}'


def _modules(variables):
  """{module path: {'params': {...}, 'batch_stats': {...}}} for every module that holds parameters."""
  out = collections.defaultdict(dict)
  for (collection, *path, leaf), value in traverse_util.flatten_dict(variables).items():
    out[tuple(path)].setdefault(collection, {})[leaf] = value
  return out


def _nchw_channels(model, path):
  """The channel count of the NCHW flatten that feeds this dense layer in PyTorch, if one does (the SmallCNNs' fc1)."""
  if path[0] != 'fc1':
    return None
  if isinstance(model, models.TradesMnistCNN):
    return 64
  return model.width * 196 // 64 if isinstance(model, models.SmallCNN) else None


def _to_flax(kind, tensors, nchw_channels):
  """One module's advjax leaves from its PyTorch tensors (numpy)."""
  if kind == 'bn':
    affine = dict(params=dict(scale=tensors['weight'], bias=tensors['bias'])) if 'weight' in tensors else {}
    return dict(**affine, batch_stats=dict(mean=tensors['running_mean'], var=tensors['running_var']))
  if kind == 'prelu':   # PyTorch's single slope, shape (1,); flax's, shape ()
    return dict(params=dict(negative_slope=tensors['weight'].reshape(())))
  weight = tensors['weight']
  if kind == 'conv':
    kernel = weight.transpose(2, 3, 1, 0)   # OIHW -> HWIO
  elif nchw_channels:   # rows from PyTorch's (c, h, w) flatten order to advjax's (h, w, c)
    kernel = weight.reshape(weight.shape[0], nchw_channels, -1).transpose(2, 1, 0).reshape(-1, weight.shape[0])
  else:
    kernel = weight.T
  return dict(params=dict(kernel=kernel, **({'bias': tensors['bias']} if 'bias' in tensors else {})))


def _to_torch(kind, leaves, nchw_channels):
  """One module's PyTorch tensors (numpy) from its advjax leaves: `_to_flax` inverted."""
  params = {k: np.asarray(v, np.float32) for k, v in leaves.get('params', {}).items()}
  if kind == 'bn':
    stats = {k: np.asarray(v, np.float32) for k, v in leaves['batch_stats'].items()}
    affine = dict(weight=params['scale'], bias=params['bias']) if params else {}
    return dict(**affine, running_mean=stats['mean'], running_var=stats['var'])
  if kind == 'prelu':
    return dict(weight=params['negative_slope'].reshape(1))
  kernel = params['kernel']
  if kind == 'conv':
    weight = kernel.transpose(3, 2, 0, 1)   # HWIO -> OIHW
  elif nchw_channels:
    out = kernel.shape[1]
    weight = kernel.reshape(-1, nchw_channels, out).transpose(2, 1, 0).reshape(out, -1)
  else:
    weight = kernel.T
  return dict(weight=weight, **({'bias': params['bias']} if 'bias' in params else {}))


def _read(checkpoint):
  """A checkpoint (a path to a .pt file, or a dict) as {name: numpy array}, without wrappers and prefixes."""
  if isinstance(checkpoint, (str, os.PathLike)):
    import torch  # pylint: disable=g-import-not-at-top
    checkpoint = torch.load(checkpoint, map_location='cpu', weights_only=True)
  if 'state_dict' in checkpoint and isinstance(checkpoint['state_dict'], dict):
    checkpoint = checkpoint['state_dict']
  state = {}
  for name, value in checkpoint.items():
    for prefix in ('module.', 'model.'):
      name = name.removeprefix(prefix)
    # A copy: the module that owns the tensor may update it in place (BatchNorm statistics in a training forward).
    state[name] = np.array(value.detach().cpu().numpy() if hasattr(value, 'detach') else value)
  return state


def _kind(leaves):
  if 'batch_stats' in leaves:
    return 'bn'
  if 'negative_slope' in leaves['params']:
    return 'prelu'
  return 'conv' if leaves['params']['kernel'].ndim == 4 else 'dense'


def load_torch(checkpoint, model_name, num_classes=10, *, input_shape=None, **model_fields):
  """The advjax model called `model_name` and its variables from a PyTorch `state_dict`.

  Args:
    checkpoint: a `.pt` file's path or a dict of tensors; a wrapping 'state_dict' key and 'module.' / 'model.'
      prefixes are removed.
    model_name: an advjax model name (`models.KNOWN_MODELS`), or `SDI_GENERATOR` with its `eps` in model_fields.
    num_classes: the checkpoint's number of classes.
    input_shape: (H, W, C) of an input, to shape the variables (the SmallCNNs' fc1 depends on it); by default
      MNIST's (28, 28, 1) for trades_mnist_cnn, CIFAR's (32, 32, 3) for the rest.
    **model_fields: passed to `models.get_model`: `mean` and `std` where the official model normalised outside the
      network (advjax normalises inside), `final_bn`, `preact_shortcut`, `dtype`, ...
  Returns:
    (model, variables), with `model.apply(variables, x, train=False)` the logits of NHWC images x in [0, 1].
  Raises:
    CheckpointError: naming the keys that are missing, unexpected or of the wrong shape.
  """
  state = _read(checkpoint)
  if input_shape is None:
    input_shape = (28, 28, 1) if model_name == 'trades_mnist_cnn' else (32, 32, 3)
  if model_name == SDI_GENERATOR:   # inputs: the image and the sign of its gradient
    model, inputs = generator.SDIGenerator(**model_fields), (jnp.zeros((1, *input_shape)),) * 2
  else:
    model, inputs = models.get_model(model_name, num_classes, **model_fields), (jnp.zeros((1, *input_shape)),)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs, train=False))
  flat, used, problems = {}, set(), []
  for path, like in _modules(shapes).items():
    name, kind = _torch_module_name(model, path), _kind(like)
    keys = dict(bn=('weight', 'bias', 'running_mean', 'running_var'), conv=('weight',), dense=('weight', 'bias'),
                prelu=('weight',))[kind]
    keys = keys[2:] if kind == 'bn' and 'params' not in like else keys   # a BatchNorm without affine parameters
    keys += ('bias',) if kind == 'conv' and 'bias' in like['params'] else ()
    missing = [f'{name}.{k}' for k in keys if f'{name}.{k}' not in state]
    if missing:
      problems.append(f'missing {", ".join(missing)}')
      continue
    used.update(f'{name}.{k}' for k in keys)
    try:
      leaves = _to_flax(kind, {k: state[f'{name}.{k}'] for k in keys}, _nchw_channels(model, path))
    except ValueError:   # a weight that cannot be rearranged into this layer's layout
      problems.append(f'{name}.weight: shape {state[f"{name}.weight"].shape} does not fit {"/".join(path)}')
      continue
    for collection, tree in leaves.items():
      for leaf, value in tree.items():
        want = like[collection][leaf].shape
        if value.shape != want:
          key = f'{name}.{_TORCH_LEAF.get(leaf, leaf)}'
          problems.append(f'{key}: shape {tuple(state[key].shape)} does not fit {"/".join(path + (leaf,))} {want}')
        flat[(collection, *path, leaf)] = jnp.asarray(value, jnp.float32)
  unexpected = sorted(k for k in state if k not in used and not _DEAD.fullmatch(k))
  if unexpected:
    problems.append(f'unexpected {", ".join(unexpected[:8])}{" ..." if len(unexpected) > 8 else ""}')
  if problems:
    more = f'; and {len(problems) - 3} more' if len(problems) > 3 else ''
    raise CheckpointError(f'checkpoint does not fit {model_name}: ' + '; '.join(problems[:3]) + more)
  return model, traverse_util.unflatten_dict(flat)


def to_torch(model, variables):
  """advjax variables as an ordered PyTorch `state_dict` of the official module's layout (needs torch)."""
  import torch  # pylint: disable=g-import-not-at-top
  state = collections.OrderedDict()
  for path, leaves in _modules(variables).items():
    name, kind = _torch_module_name(model, path), _kind(leaves)
    for key, value in _to_torch(kind, leaves, _nchw_channels(model, path)).items():
      state[f'{name}.{key}'] = torch.from_numpy(np.array(value))
    if kind == 'bn':
      state[f'{name}.num_batches_tracked'] = torch.tensor(0)
  return state


# LAS-AT's policy (StrategyNet.py's ResNet_Strategy): its trunk's layout, whose one head (`linear`, SmallCNN's `fc2`)
# holds the official per-parameter heads side by side in `las_at.split_heads`' order (heads by name). The official
# one-choice `Attack_method` head computes nothing (its softmax is 1): dropped on the way in, written as zeros.
LAS_POLICY_HEADS = dict(eps='Attack_epsilon', steps='Attack_iters', step_size='Attack_step_size',
                        beta='Attack_beta_size')


def las_policy_to_torch(model, variables, choices):
  """A LAS-AT policy's variables as the official module's `state_dict`; `choices`: `las_at.heads(config)`."""
  import torch  # pylint: disable=g-import-not-at-top
  state, head = to_torch(model, variables), _torch_module_name(model, ('head',))
  weight, bias = state.pop(f'{head}.weight').numpy(), state.pop(f'{head}.bias').numpy()
  names = sorted(choices)
  ends = np.cumsum([len(choices[n]) for n in names])[:-1]
  for name, w, b in zip(names, np.split(weight, ends), np.split(bias, ends)):
    state[f'{LAS_POLICY_HEADS[name]}.weight'], state[f'{LAS_POLICY_HEADS[name]}.bias'] = map(torch.from_numpy, (w, b))
  state['Attack_method.weight'], state['Attack_method.bias'] = torch.zeros(1, weight.shape[1]), torch.zeros(1)
  return state


def load_las_policy(checkpoint, model_name, choices, **model_fields):
  """(policy model, variables) from an official LAS-AT policy checkpoint; arguments as `load_torch`'s."""
  state = {k: v for k, v in _read(checkpoint).items() if not k.startswith('Attack_method.')}
  head = _torch_module_name(models.get_model(model_name, 1, **model_fields), ('head',))
  heads = [LAS_POLICY_HEADS[name] for name in sorted(choices)]
  for leaf in ('weight', 'bias'):
    state[f'{head}.{leaf}'] = np.concatenate([state.pop(f'{h}.{leaf}') for h in heads])
  return load_torch(state, model_name, sum(len(c) for c in choices.values()), **model_fields)
