"""FGSM-SDI (with its generator updates) and FGSM-PGI (BP, EP, MEP) against the official code (tests/official/
sdi_pgi.py), step for step: the same weights, batches and draws give the same final examples (SDI), stored
perturbations and momenta (PGI), losses, weights and BatchNorm statistics after three optimiser steps; and the
generator's layout and initialisation are the official module's.

As in test_search_fat.py, both sides compute in float64, the classifier's inputs rounded to float32 as in the official
code: each method takes the sign of an input gradient, which turns a rounding difference at a near-zero gradient into a
2-alpha difference (a float64 input against advjax's float32-rounded one flipped 13 of SDI's 24,576 FGSM signs), and
Adam's first step turns a gradient error e at a gradient below its epsilon (1e-8) into a weight error of 1e5 e (the
float32 smoothed labels against float64 ones: 2e-7 in one generator weight).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util
from jax.sharding import PartitionSpec as P

from advjax import interop, methods, train
from advjax.methods import single_step
from advjax import step as step_lib
from advjax import train_state as ts
from advjax.data import pipeline
from advjax.models import generator
from helpers import load_config
from official import nets, sdi_pgi

BATCH, EXAMPLES = 8, 16
KEY = jax.random.key(2)   # the train step's
EPOCHS = (1, 2, 41)       # of the three steps: PGI's memory carries over epochs, and epoch 41 resets it
ORDER = np.random.RandomState(1).permutation(EXAMPLES)
POSITIONS = (ORDER[:BATCH], ORDER[4:4 + BATCH], ORDER[:BATCH])   # each step's batch: examples seen again, and new
EPS = 8 / 255


def nchw(a):
  return torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).contiguous()


def official_budget(value=EPS):
  """An epsilon or alpha as the official scripts hold it, (8 / 255) / std with std ones of shape (3, 1, 1): float32."""
  return value / torch.ones(3, 1, 1)


def wide(tree):
  return jax.tree.map(lambda a: jnp.asarray(a, jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def _flat(variables):
  return traverse_util.flatten_dict(jax.device_get(variables))


def assert_weights_equal(ours, theirs):
  ours, theirs = _flat(ours), _flat(theirs)
  assert ours.keys() == theirs.keys()
  for path, want in theirs.items():
    np.testing.assert_allclose(ours[path], want, rtol=1e-4, atol=1e-6 * np.abs(want).max(), err_msg='/'.join(path))


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def _setup(config):
  """The method's state on 1 device with SmallCNN in float64, the official SmallCNN with the same weights and its
  SGD, and the three steps' batches."""
  config.model.update(name='small_cnn', dtype='float64')
  mesh = ts.make_mesh(jax.devices()[:1])
  model = train.build_model(config, 10)
  tx = step_lib.make_optimizer(config, steps_per_epoch=10)
  state = train.create_state(config, model, tx, (32, 32, 3), EXAMPLES, jax.random.key(0), mesh)
  params = wide(state.params)
  state = jax.device_put(state.replace(params=params, batch_stats=wide(state.batch_stats), opt_state=tx.init(params),
                                       method=wide(state.method)),
                         jax.tree.map(lambda a: a.sharding, state))
  rng = np.random.RandomState(0)
  images = rng.randint(0, 256, (EXAMPLES, 32, 32, 3)).astype(np.uint8)
  labels = rng.randint(0, 10, EXAMPLES).astype(np.int32)
  loader = pipeline.Loader(mesh, images, labels, BATCH)
  batches = [loader.batch(positions, jax.random.key(1)) for positions in POSITIONS]
  net = nets.SmallCNN().double()
  net.load_state_dict(interop.to_torch(model, jax.device_get(state.variables)))
  lr = float(np.float32(config.lr_schedule[0][1]))   # advjax's LR schedule holds float32 values
  optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=config.optimizer.momentum,
                              weight_decay=config.optimizer.weight_decay)
  return model, mesh, tx, state, batches, net, optimizer


def _torch_batch(batch):
  host = jax.device_get(batch)
  return nchw(host['image']), torch.from_numpy(np.array(host['label'])).long(), np.array(host['index'])


# --- FGSM-SDI ----------------------------------------------------------------------------------------------------------

def test_generator_loads_from_the_official_module_and_gives_its_output():
  torch.manual_seed(0)
  attacker = sdi_pgi.One_Layer_Attacker(eps=official_budget())
  gen = torch.Generator().manual_seed(1)
  for m in attacker.modules():   # running statistics (and the stem's affine parameters) away from their init
    if isinstance(m, torch.nn.BatchNorm2d):
      m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=gen) * 0.4 - 0.2)
      m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
      if m.affine:
        m.weight.data.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
        m.bias.data.copy_(torch.rand(m.bias.shape, generator=gen) * 0.4 - 0.2)
  x = torch.rand(4, 3, 32, 32, generator=gen)
  sign = torch.sign(torch.randn(4, 3, 32, 32, generator=gen))
  model, variables = interop.load_torch(attacker.state_dict(), interop.SDI_GENERATOR, eps=EPS)
  nhwc = lambda t: jnp.asarray(t.permute(0, 2, 3, 1).numpy(), jnp.float32)
  for train_mode in (False, True):
    attacker.train(train_mode)
    with torch.no_grad():
      want = attacker(torch.cat([x, sign], 1)).permute(0, 2, 3, 1).numpy()
    got = model.apply(variables, nhwc(x), nhwc(sign), train=train_mode, mutable=['batch_stats'])[0]
    np.testing.assert_allclose(got, want, atol=1e-7, rtol=0)
  assert 0.1 * EPS < np.abs(want).mean() < 0.9 * EPS   # neither zero nor saturated: the comparison means something
  fresh = sdi_pgi.One_Layer_Attacker(eps=official_budget())
  report = fresh.load_state_dict(interop.to_torch(model, variables), strict=False)
  assert not report.unexpected_keys and report.missing_keys == ['scale_last']   # unused by the official forward
  np.testing.assert_array_equal(fresh.state_dict()['res_group.3.weight'], attacker.state_dict()['res_group.3.weight'])


def test_generator_starts_from_the_official_distribution():
  """Each layer's init against One_Layer_Attacker's own, as test_init.py does for the classifiers (the output
  convolution's weights: std 0.024 in PyTorch's default)."""
  draws = 4
  official = []
  for seed in range(draws):
    torch.manual_seed(seed)
    variables = interop.load_torch(sdi_pgi.One_Layer_Attacker(eps=official_budget()).state_dict(),
                                   interop.SDI_GENERATOR, eps=EPS)[1]
    official.append(_flat(variables['params']))
  net = generator.SDIGenerator(eps=EPS)
  image = jnp.zeros((1, 32, 32, 3))
  init = jax.jit(lambda key: net.init(key, image, image, train=False)['params'])
  ours = [_flat(init(jax.random.key(seed))) for seed in range(draws)]
  assert ours[0].keys() == official[0].keys()
  for leaf in ours[0]:
    theirs = np.concatenate([np.ravel(draw[leaf]) for draw in official])
    mine = np.concatenate([np.ravel(draw[leaf]) for draw in ours])
    tolerance = max(0.03, 4 * 0.71 * np.sqrt(2 / theirs.size))   # as test_init.py
    assert mine.std() == pytest.approx(theirs.std(), rel=tolerance, abs=1e-7), leaf
    assert mine.mean() == pytest.approx(theirs.mean(), abs=4 * max(theirs.std(), 1e-7) * np.sqrt(2 / theirs.size)), leaf
    assert np.abs(mine).max() <= np.abs(theirs).max() * (1 + tolerance) + 1e-7, leaf   # uniform draws' bound


def test_sdi_three_steps_equal_the_official_code():
  """Generator updates every 2 batches of an epoch here, over an epoch of one batch and one of two: at steps 0 and 1
  (batch 0 of each epoch, as the official loop counts; a count over the run would update at steps 0 and 2)."""
  config = load_config('fgsm_sdi', batch_size=BATCH, lr_schedule=((1, 0.1),))
  config.sdi.generator_every = 2
  model, mesh, tx, state, batches, net, optimizer = _setup(config)
  attacker = sdi_pgi.One_Layer_Attacker(eps=official_budget(config.attack.eps)).double()
  attacker.load_state_dict(interop.to_torch(generator.SDIGenerator(eps=EPS), jax.device_get(dict(
      params=state.method['params'], batch_stats=state.method['batch_stats']))), strict=False)
  s = config.sdi
  optimizer_att = torch.optim.Adam(attacker.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay)
  train_step = step_lib.make_train_step(model, tx, config, mesh, KEY)
  perturb = single_step.sdi_perturbation(model, config)   # the step's own attack, for its final examples
  final_examples = jax.jit(jax.shard_map(lambda st, x, y, hp: x + perturb(st, x, y, hp)[0], mesh=mesh,
                                         in_specs=(ts.specs(state), P(ts.AXIS), P(ts.AXIS), P()),
                                         out_specs=P(ts.AXIS)))
  sums = step_lib.zero_metrics(config)
  epsilon, alpha = official_budget(config.attack.eps), official_budget(config.attack.step_size)
  for step, (batch, epoch, batch_idx) in enumerate(zip(batches, (1, 2, 2), (0, 0, 1))):
    hparams = methods.hparams(config, epoch, first_step=step - batch_idx)
    ours = final_examples(state, batch['image'], batch['label'], hparams)
    x, y, _ = _torch_batch(batch)
    their_adv, their_loss = sdi_pgi.sdi_train_step(
        net, attacker, optimizer, optimizer_att, x, y, batch_idx=batch_idx, factor=config.label_confidence,
        epsilon=epsilon, alpha=alpha, att_num=s.generator_every)
    before = float(sums['loss'])
    state, sums = train_step(state, batch, hparams, sums)
    np.testing.assert_allclose(nchw(ours).numpy(), their_adv.numpy(), atol=1e-5, rtol=0, err_msg=f'step {step}')
    assert (float(sums['loss']) - before) / BATCH == pytest.approx(their_loss, rel=1e-5), step

  assert_weights_equal(state.variables, interop.load_torch(net.state_dict(), 'small_cnn')[1])
  theirs = interop.load_torch(attacker.state_dict(), interop.SDI_GENERATOR, eps=EPS)[1]
  assert_weights_equal(dict(params=state.method['params'], batch_stats=state.method['batch_stats']), theirs)


# --- FGSM-PGI ----------------------------------------------------------------------------------------------------------

def uniform_draws(config, keys, shape):
  """The U(-eps, eps) draws behind advjax's starts (single_step.pgi_start), one per key, to inject."""
  eps = config.attack.eps
  return nchw(jax.vmap(lambda k: jax.random.uniform(k, shape, jnp.float32, -eps, eps))(keys))


def init_keys(rows):
  """The keys of the memory's first start: the method state's key in train_state.create_train_state (the init key
  given to train.create_state in `_setup`, folded with 1), split per row."""
  return jax.random.split(jax.random.fold_in(jax.random.key(0), 1), rows)


@pytest.mark.parametrize('prior', ['mep', 'ep', 'bp'])
def test_pgi_three_steps_equal_the_official_code(prior):
  config = load_config('fgsm_pgi', prior, batch_size=BATCH, lr_schedule=((1, 0.1),))
  model, mesh, tx, state, batches, net, optimizer = _setup(config)
  p = config.pgi
  epsilon, alpha = official_budget(config.attack.eps), official_budget(config.attack.step_size)
  num_rows, shape = state.memory['delta'].shape[0], batches[0]['image'].shape[1:]
  start = sdi_pgi.reset_delta(uniform_draws(config, init_keys(num_rows), shape), alpha, epsilon)   # their epoch 0's
  np.testing.assert_array_equal(nchw(jax.device_get(state.memory['delta'])).numpy(), start.numpy())
  memory = dict(delta=start, momentum=torch.zeros_like(start))
  train_step = step_lib.make_train_step(model, tx, config, mesh, KEY)
  sums = step_lib.zero_metrics(config)
  for step, (batch, epoch) in enumerate(zip(batches, EPOCHS)):
    x, y, index = _torch_batch(batch)
    hparams = methods.hparams(config, epoch)
    rows = slice(None) if prior == 'bp' else index
    delta, momentum = memory['delta'][rows], memory['momentum'][rows]
    if prior != 'bp' and (epoch - 1) % p.reset_every == 0 and epoch > 1:   # FGSM_MEP.py's reset after epoch 0's
      u = uniform_draws(config, ts.example_keys(KEY, step, jnp.asarray(index)), shape)
      delta, momentum = sdi_pgi.reset_delta(u, alpha, epsilon), 0 * momentum
    stored, momentum, their_loss = sdi_pgi.pgi_train_step(
        net, optimizer, x, y, delta, momentum, prior=prior, epsilon=epsilon, alpha=alpha,
        factor=config.label_confidence, lamda=p.reg_weight, decay=p.momentum)
    memory['delta'][rows] = stored
    if momentum is not None:
      memory['momentum'][rows] = momentum
    before = float(sums['loss'])
    state, sums = train_step(state, batch, hparams, sums)

    ours = jax.device_get(state.memory)
    np.testing.assert_allclose(nchw(ours['delta']).numpy(), memory['delta'].numpy(), atol=1e-5, rtol=0,
                               err_msg=f'step {step}')
    if prior == 'mep':   # g / ||g||_1 is about 1 / (batch size x pixels): compared relative to its scale
      want = memory['momentum'].numpy()
      np.testing.assert_allclose(nchw(ours['momentum']).numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    assert (float(sums['loss']) - before) / BATCH == pytest.approx(their_loss, rel=1e-5), step

  assert_weights_equal(state.variables, interop.load_torch(net.state_dict(), 'small_cnn')[1])
