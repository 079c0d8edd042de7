"""LAS-AT, LAS-TRADES and LAS-AWP against the official code (tests/official/las.py), step for step: the same weights,
batch and draws (the strategy samples, attack starts and reward restarts) give the same sampled strategies, step
counts, losses, rewards, target and policy weights and BatchNorm statistics after two steps (LAS-AT updates its
policy at the second, the others at both, with an LR drop between them); and the official policy network loads.
Float64 networks, float32 images, as test_search_fat.py explains; target and policy are SmallCNNs of width 8, whose
torch forwards run on one thread.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import traverse_util

from advjax import interop, methods, models, train
from advjax.methods import las_at
from advjax import step as step_lib
from advjax import train_state as ts
from advjax.attacks import parts
from advjax.data import pipeline
from helpers import load_config
from official import las

BATCH, STEPS, WIDTH = 8, 2, 8
KEY = jax.random.key(2)   # the train step's
NET = f'small_cnn-{WIDTH}'
# advjax's head names in the official heads' order (after Attack_method).
OFFICIAL_HEADS = ('eps', 'steps', 'step_size', 'beta')


def nchw(a):
  return torch.from_numpy(np.array(a)).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(autouse=True)
def float64():
  with jax.enable_x64(True):
    yield


def advjax_draws(step, index, x, choices):
  """The draws advjax's step makes (las_at.step_keys, strategy.sample, parts.random_start), to inject."""
  keys = {name: ts.example_keys(k, 0, jnp.asarray(index)) for name, k in las_at.step_keys(KEY, step).items()}
  names = sorted(choices)

  def gumbel(keys):
    noise = {name: jax.vmap(lambda k, n=len(choices[name]): jax.random.gumbel(k, (n,), jnp.float64))(
        parts.fold_in(keys, h)) for h, name in enumerate(names)}
    return [torch.zeros(len(index), 1, dtype=torch.float64)] + [
        torch.from_numpy(np.array(noise[name])) for name in OFFICIAL_HEADS if name in choices]

  init_keys = lambda keys: jax.vmap(jax.random.split)(keys)[:, 0]   # the attack's start keys
  uniform = lambda keys, eps: nchw(parts.uniform_noise(keys, x, -eps, eps))
  normal = lambda keys: nchw(parts.normal_noise(keys, x))
  return dict(reward_gumbel=gumbel(keys['reward_sample']), gumbel=gumbel(keys['sample']),
              uniform=lambda name, eps: uniform(init_keys(keys[name]), eps),
              normal=lambda name: normal(init_keys(keys[name])),
              restarts=lambda eps, n: [uniform(parts.fold_in(keys['reward_restarts'], r), eps) for r in range(n)])


def _setup(name):
  """SmallCNN-8 target and policy in float64 on 1 device, the target's BatchNorm statistics warmed on the batch;
  half of the labels are the target's own predictions."""
  config = load_config(name, batch_size=BATCH)
  config.model.update(name=NET, dtype='float64')
  config.las.policy_model = NET
  mesh = ts.make_mesh(jax.devices()[:1])
  model = train.build_model(config, 10)
  tx = step_lib.make_optimizer(config, steps_per_epoch=1)
  state = train.create_state(config, model, tx, (32, 32, 3), BATCH, jax.random.key(0), mesh)
  images = np.random.RandomState(0).randint(0, 256, (BATCH, 32, 32, 3)).astype(np.uint8)
  stats = jax.jit(lambda v: ts.train_forward(models.from_config(config.model, 10), state.params, v, images / 255.0)[1])
  batch_stats = state.batch_stats
  for _ in range(30):
    batch_stats = stats(batch_stats)
  wide = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)
  state = state.replace(params=wide(state.params), batch_stats=wide(batch_stats),
                        method=dict(state.method, params=wide(state.method['params']),
                                    batch_stats=wide(state.method['batch_stats'])))
  predicted = np.asarray(model.apply(state.variables, images / 255.0, train=False).argmax(-1))
  labels = np.where(np.arange(BATCH) % 2 == 0, predicted, (predicted + 1 + np.arange(BATCH)) % 10).astype(np.int32)
  batch = pipeline.Loader(mesh, images, labels, BATCH, crop_padding=0, flip=False).batch(np.arange(BATCH),
                                                                                         jax.random.key(1))
  return config, model, mesh, state, batch


def _torch_nets(config, model, state):
  choices = las_at.heads(config)
  target = las.SmallCNN(WIDTH).double()
  target.load_state_dict(interop.to_torch(model, jax.device_get(state.variables)))
  policy = las.SmallCNNStrategy(WIDTH, [1] + [len(choices[n]) for n in OFFICIAL_HEADS if n in choices]).double()
  pol = jax.device_get(state.method)
  policy.load_state_dict(interop.las_policy_to_torch(las_at.policy_network(config), dict(
      params=pol['params'], batch_stats=pol['batch_stats']), choices))
  return target, policy


def _args(config):
  l = config.las
  types = dict(epsilon=l.eps_choices, attack_iters=l.steps_choices, step_size=l.step_choices, beta=l.beta_choices)
  return dict(interval_num=l.policy_every, factor=l.lookahead_label_confidence, R2_param=l.robust_reward,
              R3_param=l.clean_reward, clip_grad_norm=l.policy_clip, weight_decay=config.optimizer.weight_decay,
              awp_gamma=config.awp.gamma, types=types)


def _assert_same_variables(ours, theirs, what):
  theirs = traverse_util.flatten_dict(theirs)
  ours = traverse_util.flatten_dict(jax.device_get(ours))
  assert ours.keys() == theirs.keys(), what
  for path, want in theirs.items():
    np.testing.assert_allclose(ours[path], want, rtol=1e-4, atol=1e-6 * np.abs(want).max(),
                               err_msg=f'{what} {"/".join(path)}')


# (config, overrides, the target's LR at each step): the LR drop tests that the policy's LR follows it.
CASES = {
    'las_at': ('las_at', dict(policy_every=2), (0.05, 0.05)),
    'las_trades': ('las_trades', {}, (0.05, 0.005)),
    'las_awp': ('las_awp', {}, (0.05, 0.005)),
}


@pytest.mark.parametrize('case', list(CASES))
def test_two_steps_equal_the_official_code(case):
  name, overrides, lrs = CASES[case]
  with jax.enable_x64(True):
    config, model, mesh, state, batch = _setup(name)
  config.las.update(overrides)
  config.lr_schedule = tuple((epoch + 1, lr) for epoch, lr in enumerate(lrs))
  config.attack.compact_min_size = 0   # one masked loop
  l, choices = config.las, las_at.heads(config)
  tx = step_lib.make_optimizer(config, steps_per_epoch=1)   # an epoch per step: the test's LR drop after step 1
  state = jax.tree.map(jnp.copy, state.replace(opt_state=tx.init(state.params), method=dict(
      state.method, opt_state=las_at.policy_optimizer(config).init(state.method['params']))))
  target, policy = _torch_nets(config, model, state)
  f32 = lambda v: float(np.float32(v))   # advjax's LR schedule holds float32 values
  target_opt = torch.optim.SGD(target.parameters(), lr=f32(lrs[0]), momentum=0.9,
                               weight_decay=config.optimizer.weight_decay)
  policy_opt = torch.optim.SGD(policy.parameters(), lr=l.policy_lr, momentum=l.policy_momentum,
                               weight_decay=l.policy_weight_decay)
  milestones = [i for i in range(1, len(lrs)) if lrs[i] != lrs[i - 1]]
  target_scheduler = torch.optim.lr_scheduler.MultiStepLR(target_opt, milestones=milestones, gamma=0.1)
  policy_scheduler = torch.optim.lr_scheduler.MultiStepLR(policy_opt, milestones=milestones, gamma=0.1)
  proxy = las.SmallCNN(WIDTH).double()
  awp_adversary = las.AdvWeightPerturb(target, proxy, torch.optim.SGD(proxy.parameters(), lr=0.01), config.awp.gamma)
  mean, std = (torch.tensor(v).view(-1, 1, 1) for v in (config.model.mean or (0.0,), config.model.std or (1.0,)))
  train_step = step_lib.make_train_step(model, tx, config, mesh, KEY)
  host = jax.device_get(batch)
  x, y = nchw(host['image']), torch.from_numpy(np.array(host['label'])).long()
  args = _args(config)
  sums = step_lib.zero_metrics(config)
  updates = 0
  for step in range(STEPS):
    d = advjax_draws(step, host['index'], jnp.asarray(host['image']), choices)
    if name == 'las_trades':
      draws = dict(d, reward_start=d['normal']('reward_start'), start=d['normal']('start'))
    else:
      draws = dict(d, reward_start=d['uniform']('reward_start', l.start_eps), start=d['uniform']('start', l.start_eps))
    draws['restarts'] = d['restarts'](l.reward_eps, l.reward_restarts)
    policy_before = {k: v.clone() for k, v in policy.state_dict().items()}
    target_lr = target_scheduler.get_last_lr()[0]
    if name == 'las_awp':
      adv, loss, reward, strategy = las.las_awp_train_step(
          x, y, target, target_opt, proxy, awp_adversary, policy, policy_opt, draws, target_lr,
          l.policy_lr * target_lr / f32(lrs[0]), args, mean, std)
    elif name == 'las_trades':
      adv, loss, reward, strategy = las.las_trades_train_step(step + 1, x, y, target, target_opt, policy, policy_opt,
                                                    policy_scheduler, draws, target_lr, args)
    else:
      adv, loss, reward, strategy = las.las_at_train_step(step + 1, x, y, target, target_opt, policy, policy_opt, draws,
                                                target_lr, args)
    target_scheduler.step()
    before = dict(jax.device_get(sums))
    state, sums = train_step(state, batch, methods.hparams(config, epoch=step + 1), sums)
    after = jax.device_get(sums)

    eps, _, iters = strategy[:3]
    assert after['attack_steps'] - before['attack_steps'] == iters.sum().item(), f'step {step}'
    assert after['sampled_eps'] - before['sampled_eps'] == pytest.approx(eps.double().sum().item(), rel=1e-6)
    assert (after['loss'] - before['loss']) / BATCH == pytest.approx(loss, rel=1e-5), f'step {step}'
    updates += reward is not None
    assert after['policy_updates'] == updates, f'step {step}'
    if reward is not None:
      assert after['reward'] - before['reward'] == pytest.approx(float(reward), rel=1e-5), f'step {step}'
      moved = {k: (policy.state_dict()[k] - policy_before[k]).abs().max().item() for k in policy_before}
      assert max(moved.values()) > 0
  _assert_same_variables(state.variables, interop.load_torch(target.state_dict(), NET)[1], 'target')
  pol = state.method
  _assert_same_variables(dict(params=pol['params'], batch_stats=pol['batch_stats']),
                         interop.load_las_policy(policy.state_dict(), NET, choices)[1], 'policy')


def test_official_policy_network_loads_and_exports():
  """StrategyNet.py's ResNet18_Strategy through `interop.load_las_policy`: the heads' logits in eval mode (advjax's
  heads by name), and the export loads into the official module with the same logits."""
  config = load_config('las_at')
  choices = las_at.heads(config)
  sizes = [1] + [len(choices[n]) for n in OFFICIAL_HEADS if n in choices]
  torch.manual_seed(1)
  net = las.ResNet18Strategy(sizes).eval()
  for m in net.modules():   # running statistics away from their init: a swapped mean and variance shows
    if isinstance(m, torch.nn.BatchNorm2d):
      m.running_mean.uniform_(-0.2, 0.2)
      m.running_var.uniform_(0.5, 1.5)
  x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
  with torch.no_grad():
    want = dict(zip(('method',) + OFFICIAL_HEADS, (o.numpy() for o in net(x))))
  model, variables = interop.load_las_policy(net.state_dict(), 'resnet18', choices)
  got = las_at.split_heads(model.apply(variables, jnp.asarray(x.permute(0, 2, 3, 1).numpy()), train=False), choices)
  assert got.keys() == choices.keys()
  for name in choices:
    np.testing.assert_allclose(got[name], want[name], atol=1e-5, rtol=0, err_msg=name)
  fresh = las.ResNet18Strategy(sizes).eval()
  fresh.load_state_dict(interop.las_policy_to_torch(model, variables, choices))
  with torch.no_grad():
    for name, logits in zip(('method',) + OFFICIAL_HEADS, fresh(x)):
      np.testing.assert_allclose(logits.numpy(), want[name] if name != 'method' else 0.0, atol=1e-6, rtol=0)
