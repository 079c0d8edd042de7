"""LAS-AT's training steps as its official code runs them, transcribed for the differential tests.

Source: jiaxiaojunQAQ/LAS-AT, commit ee756b7ef7f8f7ca3843d0d4f5659e655ee3242e: LAS_PGD_AT/LAS_AT_train_cifar10.py
(`select_action`, `attack_pgd`, `train_target_model`, `Attack_policy_batch`, `Get_delta`, `Get_reward`, `train`'s
loop body), LAS_Trades/LAS_Trades_train_cifar10.py (the same functions for TRADES), LAS_AWP/LAS_AWP_train_cifar10.py
(the same, `main`'s loop body) with LAS_AWP/utils_awp.py (`AdvWeightPerturb`, as awp.py's), and StrategyNet.py
(`ResNet_Strategy`). Lines intentionally changed:
- the draws are injected: `Categorical(probs).sample()` is argmax(logits + gumbel), the Gumbel-max form of
  `jax.random.categorical`, with advjax's noise; every `uniform_` start (the strategy attack's U(-8/255, 8/255), each
  reward restart's U(-eps, eps)) and LAS-TRADES' `torch.randn` start are given tensors;
- module-level globals are arguments: `args`, the schedulers' current LR (`target_lr`: the official
  `target_model_scheduler.get_lr()` returns it, except at the iteration right after a milestone, where it returns
  it times gamma again), the optimisers; `.cuda()` dropped; std = 1 and mu = 0 (LAS-PGD-AT, LAS-TRADES) folded
  in, the LAS-AWP `normalize()` kept;
- the loop over `policies` that builds epsilon_batch, alpha_batch and attack_iters_batch takes the values as
  tensors (the same float32 values, per example instead of per example and channel);
- the network computes in its own (wider) dtype: `model(v)` is `model(v.to(dtype))`; `size_average=False` is
  `reduction='sum'`, `reduce=False` `reduction='none'`; prints, tensorboard and the unused argmax policy dropped.
`ResNet18Strategy` is the official policy network; `SmallCNN` is FAT's SmallCNN at advjax's `small_cnn-<width>`
widths, and `SmallCNNStrategy` the narrow policy the step tests use (ResNet_Strategy's heads in place of its fc2).
"""
import copy

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Categorical

from official import nets
from official.awp import AdvWeightPerturb

# ResNet_Strategy's heads, in its forward's order; LAS-TRADES adds Attack_beta_size.
HEADS = ('Attack_method', 'Attack_epsilon', 'Attack_iters', 'Attack_step_size', 'Attack_beta_size')


class SmallCNN(nn.Module):
  """FAT's SmallCNN with channels (w, 2w, 196w/64) and fc 4w (w = 64 is nets.SmallCNN)."""

  def __init__(self, width, num_classes=10):
    super().__init__()
    c = (3, width, 2 * width, 196 * width // 64)
    for s in range(1, 4):
      setattr(self, f'block{s}_conv1', nn.Conv2d(c[s - 1], c[s], 3, padding=1))
      setattr(self, f'block{s}_conv2', nn.Conv2d(c[s], c[s], 3, padding=1))
      setattr(self, f'batchnorm{s}_1', nn.BatchNorm2d(c[s]))
      setattr(self, f'batchnorm{s}_2', nn.BatchNorm2d(c[s]))
    self.fc1 = nn.Linear(c[3] * 4 * 4, 4 * width)
    self.fc2 = nn.Linear(4 * width, num_classes)

  def features(self, x):
    for s in range(1, 4):
      x = F.relu(getattr(self, f'batchnorm{s}_1')(getattr(self, f'block{s}_conv1')(x)))
      x = F.max_pool2d(F.relu(getattr(self, f'batchnorm{s}_2')(getattr(self, f'block{s}_conv2')(x))), 2, 2)
    return F.relu(self.fc1(x.reshape(x.shape[0], -1)))

  def forward(self, x):
    return self.fc2(self.features(x))


class SmallCNNStrategy(SmallCNN):
  """ResNet_Strategy's heads (one Linear per attack parameter) in place of SmallCNN's fc2."""

  def __init__(self, width, sizes):
    super().__init__(width)
    del self.fc2
    for name, size in zip(HEADS, sizes):
      setattr(self, name, nn.Linear(4 * width, size))
    self.names = HEADS[:len(sizes)]

  def forward(self, x):
    out = self.features(x)
    return tuple(getattr(self, name)(out) for name in self.names)


class ResNet18Strategy(nets.ResNet18):
  """StrategyNet.py's ResNet18_Strategy: kuangliu's ResNet-18 whose `linear` is one head per attack parameter."""

  def __init__(self, sizes):
    super().__init__()
    del self.linear
    for name, size in zip(HEADS, sizes):
      setattr(self, name, nn.Linear(512, size))
    self.names = HEADS[:len(sizes)]

  def forward(self, x):
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
    out = F.avg_pool2d(out, 4)
    out = out.view(out.size(0), -1)
    return tuple(getattr(self, name)(out) for name in self.names)


def clamp(X, lower_limit, upper_limit):
  return torch.max(torch.min(X, upper_limit), lower_limit)


def _dtype(model):
  return next(model.parameters()).dtype


def select_action(policy_model, state, gumbel):
  """The actions (one per head, official order) and the distributions; `gumbel[j]` replaces head j's sample."""
  outputs = policy_model(state.to(_dtype(policy_model)))
  action_list, prob_list = [], []
  for logits, noise in zip(outputs, gumbel):
    probs = F.softmax(logits, dim=-1)
    m = Categorical(probs)
    prob_list.append(m)
    action_list.append((logits + noise).argmax(-1))   # m.sample()
  return action_list, prob_list


def label_smoothing(label, factor, num_classes=10):
  one_hot = torch.eye(num_classes, dtype=torch.float64)[label]
  return (one_hot * factor + (one_hot - 1.) * ((factor - 1) / float(num_classes - 1))).float()


def LabelSmoothLoss(input, target):
  log_prob = F.log_softmax(input, dim=-1)
  return (-target * log_prob).sum(dim=-1).mean()


def attack_pgd(model, X, y, epsilon, alpha, attack_iters, restarts, starts, early_stop=True, normalize=None):
  """LAS_PGD_AT's and LAS_Trades' `attack_pgd` (early-stopped), or LAS_AWP's (`early_stop=False`, `normalize`)."""
  normalize = normalize or (lambda v: v)
  dtype = _dtype(model)
  max_loss = torch.zeros(y.shape[0], dtype=dtype)
  max_delta = torch.zeros_like(X)
  for zz in range(restarts):
    delta = starts[zz].clone()   # uniform_(-epsilon, epsilon)
    delta.data = clamp(delta, 0 - X, 1 - X)
    delta.requires_grad = True
    for _ in range(attack_iters):
      output = model(normalize(X + delta).to(dtype))
      if early_stop:
        index = torch.where(output.max(1)[1] == y)[0]
        if len(index) == 0:
          break
      else:
        index = slice(None, None, None)
      loss = F.cross_entropy(output, y)
      loss.backward()
      grad = delta.grad.detach()
      d = delta[index, :, :, :]
      g = grad[index, :, :, :]
      d = clamp(d + alpha * torch.sign(g), -epsilon, epsilon)
      d = clamp(d, 0 - X[index, :, :, :], 1 - X[index, :, :, :])
      delta.data[index, :, :, :] = d
      delta.grad.zero_()
    all_loss = F.cross_entropy(model(normalize(X + delta).to(dtype)), y, reduction='none').detach()
    max_delta[all_loss >= max_loss] = delta.detach()[all_loss >= max_loss]
    max_loss = torch.max(max_loss, all_loss)
  return max_delta


def attack_policy_batch(X, y, target_model, epsilon_batch, alpha_batch, attack_iters_batch, start,
                        normalize=None):
  """LAS_PGD_AT's (and LAS_AWP's, with `normalize`) Attack_policy_batch: per-example eps, step and steps (B,)."""
  normalize = normalize or (lambda v: v)
  criterion = nn.CrossEntropyLoss()
  dtype = _dtype(target_model)
  per_example = lambda v: v.reshape(-1, 1, 1, 1)
  epsilon_batch, alpha_batch = per_example(epsilon_batch), per_example(alpha_batch)
  attack_iters_batch = per_example(attack_iters_batch)
  delta_batch = start.clone()   # uniform_(-8/255, 8/255)
  delta_batch.data = clamp(delta_batch, 0 - X, 1 - X)
  delta_batch.requires_grad = True
  max_attack_iters = int(torch.max(attack_iters_batch))
  for _ in range(max_attack_iters):
    mask_bacth = attack_iters_batch.ge(1).float()
    output = target_model(normalize(X + delta_batch).to(dtype))
    loss = criterion(output, y)
    loss.backward()
    grad = delta_batch.grad.detach()
    delta_batch.data = clamp(delta_batch + mask_bacth * alpha_batch * torch.sign(grad), -epsilon_batch,
                             epsilon_batch)
    delta_batch.data = clamp(delta_batch, 0 - X, 1 - X)
    attack_iters_batch = attack_iters_batch - 1
    delta_batch.grad.zero_()
  return delta_batch.detach()


def train_target_model(input_batch, y_batch, copy_target_model, target_lr, factor, weight_decay=5e-4):
  optimizer = torch.optim.SGD(copy_target_model.parameters(), lr=target_lr, momentum=0.9, weight_decay=weight_decay)
  copy_target_model.train()
  optimizer.zero_grad()
  target_output = copy_target_model(input_batch.to(_dtype(copy_target_model)))
  copy_target_loss = LabelSmoothLoss(target_output, label_smoothing(y_batch, factor))
  copy_target_loss.backward()
  optimizer.step()
  return copy_target_model


def get_reward(inputs, targets, target_model, strategy, draws, target_lr, args):
  """LAS_PGD_AT's Get_reward. `strategy`: (eps, alpha, iters) per example; draws: 'reward_start', 'restarts'."""
  target_model.eval()
  criterion = nn.CrossEntropyLoss()
  dtype = _dtype(target_model)
  delta = attack_policy_batch(inputs, targets, target_model, *strategy, draws['reward_start'])
  with torch.no_grad():
    output = target_model((inputs + delta).to(dtype))
  R1 = criterion(output, targets)
  R1 = torch.clamp(R1, 0, 10)
  copy_target_model = copy.deepcopy(target_model)
  copy_target_model.train()
  copy_target_model = train_target_model(inputs + delta, targets, copy_target_model, target_lr, args['factor'])
  pgd_delta = attack_pgd(copy_target_model, inputs, targets, torch.tensor(8 / 255.), torch.tensor(2 / 255.), 10, 2,
                         draws['restarts'])
  copy_target_model.eval()
  with torch.no_grad():
    R2_output = copy_target_model((inputs + pgd_delta).to(dtype))
    clean_output = copy_target_model(inputs.to(dtype))
  R2 = (R2_output.max(1)[1] == targets).sum().item()
  R3 = (clean_output.max(1)[1] == targets).sum().item()
  test_n = targets.size(0)
  R2 = R2 / test_n * args['R2_param']
  R3 = R3 / test_n * args['R3_param']
  R2 = torch.clamp(torch.tensor(R2), -10, 10)
  R3 = torch.clamp(torch.tensor(R3), -10, 10)
  return R1 + R2 + R3, inputs + delta


def policy_step(policy_model, policy_optimizer, policy_scheduler, action_list, policy_prob, reward, clip_grad_norm):
  """The policy update of `train`: sum over heads of mean(-log pi(a) * r), grad-norm clip, SGD, scheduler step."""
  policy_loss = sum((-policy_prob[j].log_prob(action_list[j]) * reward).mean() for j in range(len(action_list)))
  policy_optimizer.zero_grad()
  policy_loss.backward()
  torch.nn.utils.clip_grad_norm_(policy_model.parameters(), clip_grad_norm)
  policy_optimizer.step()
  if policy_scheduler is not None:
    policy_scheduler.step()


def _strategy(action_list, types):
  """(eps, alpha, iters[, beta]) per example from the actions: eps and step in /255, float32, as the official
  `(policies[ii][ii]['epsilon'] / 255.) / std`."""
  eps = torch.tensor([types['epsilon'][a] / 255. for a in action_list[1].tolist()])
  alpha = torch.tensor([types['step_size'][a] / 255. for a in action_list[3].tolist()])
  iters = torch.tensor([types['attack_iters'][a] for a in action_list[2].tolist()])
  if len(action_list) == 4:
    return eps, alpha, iters
  return eps, alpha, iters, torch.tensor([types['beta'][a] for a in action_list[4].tolist()])


def las_at_train_step(curr_step, inputs, targets, target_model, target_optimizer, policy_model, policy_optimizer,
                      draws, target_lr, args):
  """One batch of LAS_AT_train_cifar10.py's `train` (curr_step already incremented). `draws`: 'reward_gumbel',
  'gumbel' (per head), 'reward_start', 'restarts', 'start'. Returns (adversarial batch, loss, reward or None, the
  target's strategy)."""
  reward = None
  if curr_step % args['interval_num'] == 0:
    policy_model.train()
    action_list, policy_prob = select_action(policy_model, inputs, draws['reward_gumbel'])
    reward, _ = get_reward(inputs, targets, target_model, _strategy(action_list, args['types']), draws, target_lr,
                           args)
    policy_step(policy_model, policy_optimizer, None, action_list, policy_prob, reward, args['clip_grad_norm'])
  policy_model.eval()
  action_list, _ = select_action(policy_model, inputs, draws['gumbel'])
  strategy = _strategy(action_list, args['types'])
  target_model.eval()
  adv_examples = inputs + attack_policy_batch(inputs, targets, target_model, *strategy, draws['start'])
  target_model.train()
  target_model.zero_grad()
  target_output = target_model(adv_examples.to(_dtype(target_model)))
  target_loss = LabelSmoothLoss(target_output, label_smoothing(targets, args['factor']))
  target_optimizer.zero_grad()
  target_loss.backward()
  target_optimizer.step()
  return adv_examples, target_loss.item(), reward, strategy


# LAS-TRADES (LAS_Trades/LAS_Trades_train_cifar10.py).

def attack_policy_batch_trades(X, y, target_model, epsilon_batch, alpha_batch, attack_iters_batch, beta_batch,
                               noise):
  target_model.eval()
  dtype = _dtype(target_model)
  per_example = lambda v: v.reshape(-1, 1, 1, 1)
  epsilon_batch, alpha_batch = per_example(epsilon_batch), per_example(alpha_batch)
  attack_iters_batch = per_example(attack_iters_batch)
  criterion_kl = nn.KLDivLoss(reduction='sum')
  max_attack_iters = int(torch.max(attack_iters_batch))
  x_adv = X.detach() + 0.001 * noise   # torch.randn(X.shape)
  for _ in range(max_attack_iters):
    mask_bacth = attack_iters_batch.ge(1).float()
    x_adv.requires_grad_()
    with torch.enable_grad():
      adv_kl = F.log_softmax(target_model(x_adv.to(dtype)), dim=1)
      clean_kl = F.softmax(target_model(X.to(dtype)), dim=1)
      loss_kl = criterion_kl(adv_kl, clean_kl)
    grad = torch.autograd.grad(loss_kl, [x_adv])[0]
    x_adv = x_adv.detach() + mask_bacth * alpha_batch * torch.sign(grad.detach())
    x_adv = torch.min(torch.max(x_adv, X - epsilon_batch), X + epsilon_batch)
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
    attack_iters_batch = attack_iters_batch - 1
  delta_batch = x_adv - X
  delta_batch = delta_batch.detach()
  target_model.train()
  return delta_batch, beta_batch


def trades_loss(model, X, X_adv, Y, beta_batch, third_clean_forward):
  """The TRADES loss of `train` (clean, adversarial forwards) or of `train_target_model` (a third clean forward)."""
  criterion_kl_not_sum = nn.KLDivLoss(reduction='none')
  dtype = _dtype(model)
  batch_size = len(X)
  logits = model(X.to(dtype))
  logits_adv = model(X_adv.to(dtype))
  clean_for_kl = model(X.to(dtype)) if third_clean_forward else logits
  loss_natural = F.cross_entropy(logits, Y)
  all_loss_robust = beta_batch * torch.sum(
      criterion_kl_not_sum(F.log_softmax(logits_adv, dim=1), F.softmax(clean_for_kl, dim=1)), dim=1)
  loss_robust = (1.0 / batch_size) * torch.sum(all_loss_robust, dim=0)
  return loss_natural + loss_robust, logits_adv


def train_target_model_trades(X, delta, Y, copy_target_model, beta_batch, target_lr, weight_decay):
  optimizer = torch.optim.SGD(copy_target_model.parameters(), lr=target_lr, momentum=0.9, weight_decay=weight_decay)
  copy_target_model.train()
  optimizer.zero_grad()
  loss, _ = trades_loss(copy_target_model, X, X + delta, Y, beta_batch, third_clean_forward=True)
  loss.backward()
  optimizer.step()
  return copy_target_model


def get_reward_trades(inputs, targets, target_model, strategy, draws, target_lr, args):
  criterion_kl_not_sum = nn.KLDivLoss(reduction='none')
  dtype = _dtype(target_model)
  batch_size = len(inputs)
  delta, beta_batch = attack_policy_batch_trades(inputs, targets, target_model, *strategy, draws['reward_start'])
  with torch.no_grad():   # the model is in training mode here: Attack_policy_batch ends with target_model.train()
    ori_clean_output = target_model(inputs.to(dtype))
    output = target_model((inputs + delta).to(dtype))
  loss_natural = F.cross_entropy(ori_clean_output, targets)
  all_loss_robust = beta_batch * torch.sum(
      criterion_kl_not_sum(F.log_softmax(output, dim=1), F.softmax(ori_clean_output, dim=1)), dim=1)
  loss_robust = (1.0 / batch_size) * torch.sum(all_loss_robust, dim=0)
  R1 = loss_natural + loss_robust
  R1 = torch.clamp(R1, 0, 20)
  copy_target_model = copy.deepcopy(target_model)
  copy_target_model.train()
  copy_target_model = train_target_model_trades(inputs, delta, targets, copy_target_model, beta_batch, target_lr,
                                                args['weight_decay'])
  pgd_delta = attack_pgd(copy_target_model, inputs, targets, torch.tensor(8 / 255.), torch.tensor(2 / 255.), 10, 2,
                         draws['restarts'])
  copy_target_model.eval()
  with torch.no_grad():
    R2_output = copy_target_model((inputs + pgd_delta).to(dtype))
    clean_output = copy_target_model(inputs.to(dtype))
  R2 = (R2_output.max(1)[1] == targets).sum().item()
  R3 = (clean_output.max(1)[1] == targets).sum().item()
  test_n = targets.size(0)
  R2 = R2 / test_n * args['R2_param']
  R3 = R3 / test_n * args['R3_param']
  R2 = torch.clamp(torch.tensor(R2), -20, 20)
  R3 = torch.clamp(torch.tensor(R3), -20, 20)
  return R1 + R2 + R3


def las_trades_train_step(curr_step, inputs, targets, target_model, target_optimizer, policy_model, policy_optimizer,
                          policy_scheduler, draws, target_lr, args):
  """One batch of LAS_Trades_train_cifar10.py's `train` (curr_step already incremented); the caller steps the
  target's scheduler after it, as `train` does."""
  reward = None
  if curr_step % args['interval_num'] == 0:
    policy_model.train()
    action_list, policy_prob = select_action(policy_model, inputs, draws['reward_gumbel'])
    reward = get_reward_trades(inputs, targets, target_model, _strategy(action_list, args['types']), draws, target_lr,
                               args)
    policy_step(policy_model, policy_optimizer, policy_scheduler, action_list, policy_prob, reward,
                args['clip_grad_norm'])
  policy_model.eval()
  action_list, _ = select_action(policy_model, inputs, draws['gumbel'])
  strategy = _strategy(action_list, args['types'])
  delta, beta_batch = attack_policy_batch_trades(inputs, targets, target_model, *strategy, draws['start'])
  adv_examples = inputs + delta
  target_model.train()
  target_loss, logits_adv = trades_loss(target_model, inputs, adv_examples, targets, beta_batch,
                                        third_clean_forward=False)
  target_optimizer.zero_grad()
  target_loss.backward()
  target_optimizer.step()
  return adv_examples, target_loss.item(), reward, strategy


# LAS-AWP (LAS_AWP/LAS_AWP_train_cifar10.py). Its LAS_AWP/utils_awp.py (`diff_in_weights`, `add_into_weights`,
# `AdvWeightPerturb`, EPS 1e-20) was transcribed line for line the same as csdongxian/AWP's utils_awp.py (an
# OrderedDict for a dict, a temporary named): the one transcription in awp.py serves both.


def train_target_model_awp(input_batch, y_batch, copy_target_model, proxy, awp_gamma, lr, factor, normalize):
  proxy_opt = torch.optim.SGD(proxy.parameters(), lr=0.01)
  awp_adversary = AdvWeightPerturb(model=copy_target_model, proxy=proxy, proxy_optim=proxy_opt, gamma=awp_gamma)
  awp = awp_adversary.calc_awp(inputs_adv=input_batch, targets=y_batch)
  awp_adversary.perturb(awp)
  optimizer = torch.optim.SGD(copy_target_model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
  copy_target_model.train()
  optimizer.zero_grad()
  target_output = copy_target_model(normalize(input_batch).to(_dtype(copy_target_model)))
  copy_target_loss = LabelSmoothLoss(target_output, label_smoothing(y_batch, factor))
  copy_target_loss.backward()
  optimizer.step()
  awp_adversary.restore(awp)
  return copy_target_model


def get_reward_awp(inputs, targets, target_model, strategy, draws, proxy, lr, args, normalize):
  target_model.eval()
  criterion = nn.CrossEntropyLoss()
  dtype = _dtype(target_model)
  delta = attack_policy_batch(inputs, targets, target_model, *strategy, draws['reward_start'], normalize=normalize)
  with torch.no_grad():
    output = target_model((inputs + delta).to(dtype))
  R1 = criterion(output, targets)
  R1 = torch.clamp(R1, 0, 10)
  copy_target_model = copy.deepcopy(target_model)
  copy_target_model.train()
  copy_target_model = train_target_model_awp(inputs + delta, targets, copy_target_model, proxy, args['awp_gamma'], lr,
                                             args['factor'], normalize)
  pgd_delta = attack_pgd(copy_target_model, inputs, targets, torch.tensor(8 / 255.), torch.tensor(2 / 255.), 10, 2,
                         draws['restarts'], early_stop=False, normalize=normalize)
  copy_target_model.eval()
  with torch.no_grad():
    R2_output = copy_target_model((inputs + pgd_delta).to(dtype))
    clean_output = copy_target_model(inputs.to(dtype))
  R2 = (R2_output.max(1)[1] == targets).sum().item()
  R3 = (clean_output.max(1)[1] == targets).sum().item()
  test_n = targets.size(0)
  R2 = R2 / test_n * args['R2_param']
  R3 = R3 / test_n * args['R3_param']
  R2 = torch.clamp(torch.tensor(R2), -10, 10)
  R3 = torch.clamp(torch.tensor(R3), -10, 10)
  return R1 + R2 + R3


def las_awp_train_step(X, y, model, opt, proxy, awp_adversary, policy_model, policy_optimizer, draws, lr, policy_lr,
                       args, mean, std):
  """One batch of `main`'s training loop with --attack pgd (no mixup, epoch >= awp_warmup): the policy update, then
  the target's AWP step on the clipped perturbation. Returns (adversarial batch, loss, reward, the strategy)."""
  normalize = lambda v: (v - mean) / std
  epsilon = 8 / 255.   # args.epsilon / 255.
  opt.param_groups[0].update(lr=lr)
  policy_optimizer.param_groups[0].update(lr=policy_lr)
  Strategy_model = policy_model
  Strategy_model.train()
  action_list, policy_prob = select_action(Strategy_model, X, draws['reward_gumbel'])
  reward = get_reward_awp(X, y, model, _strategy(action_list, args['types']), draws, proxy, lr, args, normalize)
  policy_step(Strategy_model, policy_optimizer, None, action_list, policy_prob, reward, args['clip_grad_norm'])
  with torch.no_grad():
    Strategy_model.eval()
    action_list, _ = select_action(Strategy_model, X, draws['gumbel'])
  strategy = _strategy(action_list, args['types'])
  model.eval()   # Get_delta
  adv_examples = X + attack_policy_batch(X, y, model, *strategy, draws['start'], normalize=normalize)
  delta = torch.clamp(adv_examples - X, min=-epsilon, max=epsilon)
  delta = delta.detach()
  X_adv = normalize(torch.clamp(X + delta[:X.size(0)], min=0, max=1))
  dtype = _dtype(model)
  model.train()
  awp = awp_adversary.calc_awp(inputs_adv=X_adv, targets=y)
  awp_adversary.perturb(awp)
  robust_output = model(X_adv.to(dtype))
  robust_loss = nn.CrossEntropyLoss()(robust_output, y)
  opt.zero_grad()
  robust_loss.backward()
  opt.step()
  awp_adversary.restore(awp)
  model(normalize(X).to(dtype))   # output = model(normalize(X)): the logged clean loss, a training-mode forward
  return torch.clamp(X + delta, 0, 1), robust_loss.item(), reward, strategy
