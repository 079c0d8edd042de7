"""Each network starts from the distribution of its official code: advjax's initialisation against the PyTorch
module's own, layer by layer (the layers matched by advjax.interop's layout)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from advjax import interop, models
from official import nets

DRAWS = 8
NETWORKS = {
    'small_cnn': nets.SmallCNN,                                        # PyTorch's default
    'resnet18': nets.ResNet18,                                         # PyTorch's default
    'preact_resnet18': nets.PreActResNet18,                            # PyTorch's default
    'wrn-10-2': lambda: nets.WideResNet(depth=10, widen_factor=2),     # the WRN code's own loop
    'trades_mnist_cnn': nets.TradesMnistSmallCNN,                      # Kaiming-normal convolutions, last layer zero
    'madry_wrn-14-2': lambda: nets.MadryWideResNet(units=2, width=2),   # TF's initialisers (Free-AT)
}
INPUT_SHAPES = {'trades_mnist_cnn': (28, 28, 1)}   # the others (32, 32, 3)


def _leaves(variables):
  return {'/'.join(path): np.asarray(leaf) for path, leaf in traverse_util.flatten_dict(variables['params']).items()}


@pytest.mark.parametrize('name', list(NETWORKS))
def test_each_layer_starts_from_the_official_distribution(name):
  official = []
  for seed in range(DRAWS):
    torch.manual_seed(seed)
    official.append(_leaves(interop.load_torch(NETWORKS[name]().state_dict(), name)[1]))
  model = models.get_model(name, 10)
  shape = INPUT_SHAPES.get(name, (32, 32, 3))
  init = jax.jit(lambda key: model.init(key, jnp.zeros((1, *shape)), train=False))
  ours = [_leaves(init(jax.random.key(seed))) for seed in range(DRAWS)]
  assert ours[0].keys() == official[0].keys()
  for leaf in ours[0]:
    theirs = np.concatenate([draw[leaf].ravel() for draw in official])
    mine = np.concatenate([draw[leaf].ravel() for draw in ours])
    # Four standard errors of the difference of two estimates from n values each (a standard deviation's relative
    # error is 0.45/sqrt(n) for a uniform, 0.71/sqrt(n) for a normal), at least 3%: the WRN code's draw where
    # PyTorch's default belongs is off by 40-90% in the convolutions.
    se = np.sqrt(2 / theirs.size)
    tolerance = max(0.03, 4 * 0.71 * se)
    assert mine.std() == pytest.approx(theirs.std(), rel=tolerance, abs=1e-7), leaf
    # The shape too: a uniform puts nothing beyond 1.8 standard deviations, a normal 7%.
    tail = lambda v: np.mean(np.abs(v - v.mean()) > 1.8 * theirs.std()) if theirs.std() else 0.0
    assert tail(mine) == pytest.approx(tail(theirs), abs=0.01 + 4 * 0.26 * se), leaf
    assert mine.mean() == pytest.approx(theirs.mean(), abs=4 * max(theirs.std(), 1e-7) * se), leaf
