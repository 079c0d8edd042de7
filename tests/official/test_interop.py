"""advjax.interop against the official PyTorch networks (tests/official/nets.py) and RobustBench's architectures:
the same logits in eval and training mode, and exports that the official modules load."""
import importlib.util
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from advjax import data, interop, models
from advjax.methods import single_step
from helpers import REPO
from official import nets


def _load_file(name, path):
  spec = importlib.util.spec_from_file_location(name, path)
  loaded = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(loaded)
  return loaded


def _robustbench(module):
  """A RobustBench architecture module, loaded from its file: the package's __init__ imports torchvision, which does
  not import beside the local torch build (pip install --no-deps robustbench==1.1.1 gives the code, no weights)."""
  root = importlib.util.find_spec('robustbench').submodule_search_locations[0]
  return _load_file(f'robustbench_{module}', os.path.join(root, 'model_zoo', 'architectures', f'{module}.py'))


# (advjax name, the official module). WRNs at depth 10, width 2: the layout is the same at every size.
NETWORKS = {
    'fat_small_cnn': ('small_cnn', nets.SmallCNN),
    'kuangliu_resnet18': ('resnet18', nets.ResNet18),
    'awp_preact_resnet18': ('preact_resnet18', nets.PreActResNet18),
    'kuangliu_preact_resnet18': ('preact_resnet18-kuangliu', lambda: nets.PreActResNet18(final_bn=False)),
    'locuslab_preact_resnet18': ('preact_resnet18-locuslab', lambda: nets.PreActResNet18(preact_shortcut=False)),
    'trades_wrn': ('wrn-10-2', lambda: nets.WideResNet(depth=10, widen_factor=2)),
    'robustbench_wrn': ('wrn-10-2', lambda: _robustbench('wide_resnet').WideResNet(depth=10, widen_factor=2)),
    'robustbench_wrn_sub_block1': ('wrn-10-2', lambda: _robustbench('wide_resnet').WideResNet(
        depth=10, widen_factor=2, sub_block1=True)),
    'robustbench_resnet18': ('resnet18', lambda: _robustbench('resnet').ResNet18()),
    'robustbench_preact_resnet18': ('preact_resnet18-robustbench', lambda: _robustbench('resnet').PreActResNet18()),
    'free_at_madry_wrn': ('madry_wrn-14-2', lambda: nets.MadryWideResNet(units=2, width=2)),   # from TF
}


def _trained_looking(net, seed):
  """The module with BatchNorm affine parameters and running statistics away from their init, so that a swapped
  scale and bias or mean and variance changes the logits."""
  gen = torch.Generator().manual_seed(seed)
  for m in net.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
      for tensor, (low, high) in ((m.weight.data, (0.5, 1.5)), (m.bias.data, (-0.2, 0.2)),
                                  (m.running_mean, (-0.2, 0.2)), (m.running_var, (0.5, 1.5))):
        tensor.copy_(torch.rand(tensor.shape, generator=gen) * (high - low) + low)
  return net


@pytest.fixture(scope='module')
def images():
  x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
  return x, jnp.asarray(x.permute(0, 2, 3, 1).numpy())


def _logits(net, x, train):
  net.train(train)
  with torch.no_grad():
    return net(x).numpy()


@pytest.mark.parametrize('network', list(NETWORKS))
def test_loaded_network_gives_the_official_logits(network, images):
  name, make = NETWORKS[network]
  torch.manual_seed(1)
  net = _trained_looking(make(), seed=2)
  x, x_nhwc = images
  model, variables = interop.load_torch(net.state_dict(), name)
  want_eval, want_train = _logits(net, x, False), _logits(net, x, True)
  got_eval = model.apply(variables, x_nhwc, train=False)
  got_train, updates = model.apply(variables, x_nhwc, train=True, mutable=['batch_stats'])
  assert np.abs(want_eval - want_train).max() > 1e-2   # the two modes differ, so each comparison means something
  np.testing.assert_allclose(got_eval, want_eval, atol=1e-5, rtol=0)
  np.testing.assert_allclose(got_train, want_train, atol=1e-5, rtol=0)
  # The training forward updates the running statistics as PyTorch's (its running variance unbiased).
  want = traverse_util.flatten_dict(interop.load_torch(net.state_dict(), name)[1]['batch_stats'])
  got = traverse_util.flatten_dict(updates['batch_stats'])
  assert got.keys() == want.keys()
  for path in want:
    np.testing.assert_allclose(got[path], want[path], rtol=1e-5, atol=1e-7, err_msg='/'.join(path))

  # Out again: a fresh official module loads the export (sub_block1 is never written) and gives the same logits.
  fresh = make()
  report = fresh.load_state_dict(interop.to_torch(model, variables), strict=False)
  assert not report.unexpected_keys
  assert all(k.startswith('sub_block1.') for k in report.missing_keys)
  np.testing.assert_allclose(_logits(fresh, x, False), want_eval, atol=1e-6, rtol=0)


def test_trades_mnist_cnn_gives_the_official_logits():
  """TRADES' MNIST SmallCNN (no BatchNorm; dropout after fc1): eval logits, training-mode logits without dropout
  (the official module with drop=0), dropout with a key, and the export."""
  torch.manual_seed(1)
  net = nets.TradesMnistSmallCNN()
  torch.nn.init.normal_(net.classifier.fc3.weight, std=0.1)   # the official init zeroes it: all logits 0
  torch.nn.init.normal_(net.classifier.fc3.bias, std=0.1)
  x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
  x_nhwc = jnp.asarray(x.permute(0, 2, 3, 1).numpy())
  model, variables = interop.load_torch(net.state_dict(), 'trades_mnist_cnn')
  want = _logits(net, x, False)
  np.testing.assert_allclose(model.apply(variables, x_nhwc, train=False), want, atol=1e-5, rtol=0)
  no_dropout = nets.TradesMnistSmallCNN(drop=0.0)
  no_dropout.load_state_dict(net.state_dict())
  np.testing.assert_allclose(model.apply(variables, x_nhwc, train=True), _logits(no_dropout, x, True), atol=1e-5,
                             rtol=0)
  dropped = model.apply(variables, x_nhwc, train=True, rngs={'dropout': jax.random.key(0)})
  assert np.abs(dropped - want).max() > 1e-3
  fresh = nets.TradesMnistSmallCNN()
  fresh.load_state_dict(interop.to_torch(model, variables))
  np.testing.assert_allclose(_logits(fresh, x, False), want, atol=1e-6, rtol=0)


def test_madry_wrn_standardises_a_constant_image_and_decays_the_official_variables():
  """Free-AT's network: TF's standardisation floor (a constant image gives 0 / 1/sqrt(3072), not 0 / 0), and
  `free_step`'s weight decay over exactly the official `_decay`'s 'DW' variables (the convolutions and the fc weight)."""
  torch.manual_seed(7)
  net = _trained_looking(nets.MadryWideResNet(units=1, width=1), seed=8)
  noise = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(9))
  x = torch.cat([torch.full((1, 3, 32, 32), 0.5), noise])
  model, variables = interop.load_torch(net.state_dict(), 'madry_wrn-8-1')
  got = model.apply(variables, jnp.asarray(x.permute(0, 2, 3, 1).numpy()), train=False)
  np.testing.assert_allclose(got, _logits(net, x, False), atol=1e-5, rtol=0)
  dw = [p for name, p in net.named_parameters() if name.endswith('conv1.weight') or name.endswith('conv2.weight')
        or name in ('init_conv.weight', 'logit.weight')]
  want = sum(float(p.detach().double().square().sum()) for p in dw) / 2
  assert float(single_step.kernel_l2(variables['params'])) == pytest.approx(want, rel=1e-6)
  # Free-AT's WRN-32-10 has the transcription's parameter count.
  shapes = jax.eval_shape(lambda: models.get_model('madry_wrn-32-10', 10).init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  assert sum(leaf.size for leaf in jax.tree.leaves(shapes['params'])) == sum(
      p.numel() for p in nets.MadryWideResNet().parameters())


def test_file_with_wrapper_and_prefix_loads(tmp_path, images):
  torch.manual_seed(3)
  net = _trained_looking(nets.PreActResNet18(), seed=4)
  path = tmp_path / 'model.pt'
  torch.save({'epoch': 7, 'state_dict': {f'module.{k}': v for k, v in net.state_dict().items()}}, path)
  model, variables = interop.load_torch(str(path), 'preact_resnet18')
  x, x_nhwc = images
  np.testing.assert_allclose(model.apply(variables, x_nhwc, train=False), _logits(net, x, False), atol=1e-5, rtol=0)


def test_checkpoint_of_another_network_is_refused_by_name():
  state = nets.PreActResNet18().state_dict()
  with pytest.raises(ValueError, match=r'missing bn\.weight'):   # the final BN a kuangliu PreActResNet lacks
    interop.load_torch({k: v for k, v in state.items() if not k.startswith('bn.')}, 'preact_resnet18')
  with pytest.raises(ValueError, match=r'unexpected bn\.bias'):
    interop.load_torch(state, 'preact_resnet18-kuangliu')
  with pytest.raises(ValueError, match=r'linear\.weight: shape \(10, 512\)'):
    interop.load_torch(state, 'preact_resnet18', num_classes=100)


def _advjax(*args):
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.run([sys.executable, '-m', 'advjax.main', *args], cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=300)


@pytest.mark.skipif(not os.environ.get('ADVJAX_DATA_DIR'), reason='set ADVJAX_DATA_DIR to the shared data folder')
def test_eval_command_on_a_pytorch_checkpoint(tmp_path):
  torch.manual_seed(5)
  net = _trained_looking(nets.SmallCNN(), seed=6)
  path = tmp_path / 'model.pt'
  torch.save(net.state_dict(), path)
  run = _advjax('--config=configs/eval.py', f'--config.checkpoint={path}', '--config.model.name=small_cnn',
                '--config.protocol=custom', '--config.attacks=fgsm', '--config.eps=0.031', '--config.num_examples=32',
                '--config.batch_size=16')
  assert run.returncode == 0, run.stderr
  with open(tmp_path / 'model_eval_custom.json') as f:
    result = json.load(f)
  # The clean accuracy is the PyTorch module's own on the same test examples.
  data_config = _load_file('eval_config', os.path.join(REPO, 'configs', 'eval.py')).get_config().data
  data_config.num_test = 32
  dataset = data.load(data_config)
  x = torch.from_numpy(dataset.test_images.astype(np.float32) / 255).permute(0, 3, 1, 2).contiguous()
  want = (_logits(net, x, False).argmax(1) == dataset.test_labels).mean()
  assert result['examples'] == 32 and result['rows'][0]['attack'] == 'natural'
  assert result['rows'][0]['accuracy'] == pytest.approx(100 * want)

  unnamed = _advjax('--config=configs/eval.py', f'--config.checkpoint={path}')
  assert unnamed.returncode == 2 and unnamed.stderr.startswith(
      f"advjax: error: --config.model.name must name the network of {path}, got ''; one of small_cnn, "), unnamed.stderr
  wrong = _advjax('--config=configs/eval.py', f'--config.checkpoint={path}', '--config.model.name=small_cnn-32')
  assert wrong.returncode == 2 and len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
  assert wrong.stderr.startswith('advjax: error: checkpoint does not fit small_cnn-32: batchnorm1_1.weight: shape '
                                 '(64,) does not fit stage0_0_bn/scale (32,);'), wrong.stderr
