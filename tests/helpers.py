"""Shared test utilities: configs by name, TensorBoard events, and a tanh MLP with a hand-written input gradient."""
import importlib.util
import os

import jax.numpy as jnp
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name, variant=None, **overrides):
  """configs/<name>.py's get_config(variant), with top-level fields overridden."""
  spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config() if variant is None else module.get_config(variant)
  config.update(overrides)
  return config


def tensorboard_scalars(folder):
  """{tag: [(step, value), ...]} from the TFRecord event files in `folder`, read with tensorboardX's protos."""
  from tensorboardX.proto import event_pb2  # pylint: disable=g-import-not-at-top
  scalars = {}
  for path in sorted(folder.iterdir()):
    data = path.read_bytes()
    while data:
      length = int.from_bytes(data[:8], 'little')   # record: length, its CRC, the event, its CRC
      event = event_pb2.Event.FromString(data[12:12 + length])
      data = data[16 + length:]
      for value in event.summary.value:
        scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
  return scalars


D, H, C = 12, 16, 4   # MLP input dims, hidden units, classes


def mlp_params(seed, scale=1.0):
  rng = np.random.RandomState(seed)
  return dict(w1=rng.randn(D, H) * scale, b1=rng.randn(H) * 0.1, w2=rng.randn(H, C) * scale, b2=rng.randn(C) * 0.1)


def mlp_logits(params, x):
  h = jnp.tanh(x.reshape(x.shape[0], -1) @ params['w1'] + params['b1'])
  return h @ params['w2'] + params['b2']


def numpy_ce_gradient(p, x, y):
  """Logits and d CE(f(x), y) / dx for the tanh MLP, by hand."""
  h = np.tanh(x @ p['w1'] + p['b1'])
  z = h @ p['w2'] + p['b2']
  probs = np.exp(z - z.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  dz = probs - np.eye(C)[y]
  return z, ((dz @ p['w2'].T) * (1 - h ** 2)) @ p['w1'].T
