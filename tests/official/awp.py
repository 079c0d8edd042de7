"""AT-AWP's and TRADES-AWP's training steps as their official code runs them, transcribed for the differential tests.

Source: csdongxian/AWP, commit a7acf5d842fccf1bbb4b91644352ce157d370a26: `AT_AWP/train_cifar10.py` (`normalize`,
`clamp`, `attack_pgd` for L-inf without mixup or early stop, the body of `main`'s training loop, lines 314-375, and
its `piecewise` `lr_schedule`), `AT_AWP/utils_awp.py` (`AdvWeightPerturb`), `trades_AWP/train_trades_cifar.py`
(`perturb_input` for L-inf, the body of `train`'s loop, lines 166-206, `adjust_learning_rate`) and
`trades_AWP/utils_awp.py` (`TradesAWP`); both `diff_in_weights` and `add_into_weights` are the same in the two files.
The `*_ARGS` are the scripts' argparse defaults that the steps read. Lines intentionally changed:
- the draws are injected: `delta.uniform_(-epsilon, epsilon)` is `start_noise` (AT-AWP), and
  `0.001 * torch.randn(x_natural.shape)` is `start_noise` (TRADES-AWP);
- `.cuda()` / `.to(device)` dropped; the model may compute in a wider dtype than the
  images and iterates (float32, as in the official code): `model(v)` is `model(v.to(dtype))`;
- the loop bodies are functions of the batch; they take `epoch` and the LR, and return the adversarial points (AT-AWP's
  `X_adv` before `normalize`) and the loss the optimiser minimised. The model's mode is the caller's: AT-AWP's loop
  leaves it in training mode, and the evaluation after each epoch leaves it in eval mode (`model.eval()`, line 379).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1E-20
AT_AWP_ARGS = dict(epsilon=8 / 255., pgd_alpha=2 / 255., attack_iters=10, restarts=1, awp_gamma=0.01, awp_warmup=0,
                   lr_max=0.1, epochs=200, momentum=0.9, weight_decay=5e-4, proxy_lr=0.01)
TRADES_AWP_ARGS = dict(epsilon=8 / 255, step_size=2 / 255, num_steps=10, beta=6.0, awp_gamma=0.005, awp_warmup=10,
                       lr=0.1, momentum=0.9, weight_decay=5e-4)
cifar10_mean = (0.4914, 0.4822, 0.4465)   # AT_AWP/utils.py
cifar10_std = (0.2471, 0.2435, 0.2616)
mu = torch.tensor(cifar10_mean).view(3, 1, 1)
std = torch.tensor(cifar10_std).view(3, 1, 1)
upper_limit, lower_limit = 1, 0


def normalize(X):
  return (X - mu)/std


def _dtype(model):
  return next(model.parameters()).dtype


# --- utils_awp.py (AT_AWP and trades_AWP) --------------------------------------------------------------------------

def diff_in_weights(model, proxy):
  diff_dict = {}
  model_state_dict = model.state_dict()
  proxy_state_dict = proxy.state_dict()
  for (old_k, old_w), (new_k, new_w) in zip(model_state_dict.items(), proxy_state_dict.items()):
    if len(old_w.size()) <= 1:
      continue
    if 'weight' in old_k:
      diff_w = new_w - old_w
      diff_dict[old_k] = old_w.norm() / (diff_w.norm() + EPS) * diff_w
  return diff_dict


def add_into_weights(model, diff, coeff=1.0):
  names_in_diff = diff.keys()
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name in names_in_diff:
        param.add_(coeff * diff[name])


class AdvWeightPerturb:
  def __init__(self, model, proxy, proxy_optim, gamma):
    self.model = model
    self.proxy = proxy
    self.proxy_optim = proxy_optim
    self.gamma = gamma

  def calc_awp(self, inputs_adv, targets):
    self.proxy.load_state_dict(self.model.state_dict())
    self.proxy.train()
    loss = - F.cross_entropy(self.proxy(inputs_adv.to(_dtype(self.proxy))), targets)
    self.proxy_optim.zero_grad()
    loss.backward()
    self.proxy_optim.step()
    return diff_in_weights(self.model, self.proxy)

  def perturb(self, diff):
    add_into_weights(self.model, diff, coeff=1.0 * self.gamma)

  def restore(self, diff):
    add_into_weights(self.model, diff, coeff=-1.0 * self.gamma)


class TradesAWP(AdvWeightPerturb):
  def calc_awp(self, inputs_adv, inputs_clean, targets, beta):
    self.proxy.load_state_dict(self.model.state_dict())
    self.proxy.train()
    dtype = _dtype(self.proxy)
    loss_natural = F.cross_entropy(self.proxy(inputs_clean.to(dtype)), targets)
    loss_robust = F.kl_div(F.log_softmax(self.proxy(inputs_adv.to(dtype)), dim=1),
                           F.softmax(self.proxy(inputs_clean.to(dtype)), dim=1), reduction='batchmean')
    loss = - 1.0 * (loss_natural + beta * loss_robust)
    self.proxy_optim.zero_grad()
    loss.backward()
    self.proxy_optim.step()
    return diff_in_weights(self.model, self.proxy)


# --- AT_AWP/train_cifar10.py ---------------------------------------------------------------------------------------

def clamp(X, lower_limit, upper_limit):
  return torch.max(torch.min(X, upper_limit), lower_limit)


def attack_pgd(model, X, y, epsilon, alpha, attack_iters, restarts, start_noise):
  max_loss = torch.zeros(y.shape[0])
  max_delta = torch.zeros_like(X)
  dtype = _dtype(model)
  for _ in range(restarts):
    delta = start_noise.clone()
    delta = clamp(delta, lower_limit - X, upper_limit - X)
    delta.requires_grad = True
    for _ in range(attack_iters):
      output = model(normalize(X + delta).to(dtype))
      index = slice(None, None, None)
      loss = F.cross_entropy(output, y)
      loss.backward()
      grad = delta.grad.detach()
      d = delta[index, :, :, :]
      g = grad[index, :, :, :]
      x = X[index, :, :, :]
      d = torch.clamp(d + alpha * torch.sign(g), min=-epsilon, max=epsilon)
      d = clamp(d, lower_limit - x, upper_limit - x)
      delta.data[index, :, :, :] = d
      delta.grad.zero_()
    all_loss = F.cross_entropy(model(normalize(X + delta).to(dtype)), y, reduction='none')
    max_delta[all_loss >= max_loss] = delta.detach()[all_loss >= max_loss]
    max_loss = torch.max(max_loss, all_loss)
  return max_delta


def at_awp_lr_schedule(t, args=AT_AWP_ARGS):
  """The `piecewise` schedule, read at `epoch + (i + 1) / len(train_batches)` (epoch from 0, batch i from 0)."""
  if t / args['epochs'] < 0.5:
    return args['lr_max']
  elif t / args['epochs'] < 0.75:
    return args['lr_max'] / 10.
  else:
    return args['lr_max'] / 100.


def at_awp_train_batch(model, opt, awp_adversary, X, y, *, epoch, lr, start_noise, args=AT_AWP_ARGS):
  """One batch of `main`'s training loop (`epoch` from 0, as the script counts); the model in the mode the previous
  batch or evaluation left it."""
  criterion = nn.CrossEntropyLoss()
  dtype = _dtype(model)
  opt.param_groups[0].update(lr=lr)
  delta = attack_pgd(model, X, y, args['epsilon'], args['pgd_alpha'], args['attack_iters'], args['restarts'],
                     start_noise)
  delta = delta.detach()
  X_adv = normalize(torch.clamp(X + delta[:X.size(0)], min=lower_limit, max=upper_limit))

  model.train()
  if epoch >= args['awp_warmup']:
    awp = awp_adversary.calc_awp(inputs_adv=X_adv, targets=y)
    awp_adversary.perturb(awp)
  robust_output = model(X_adv.to(dtype))
  robust_loss = criterion(robust_output, y)
  opt.zero_grad()
  robust_loss.backward()
  opt.step()
  if epoch >= args['awp_warmup']:
    awp_adversary.restore(awp)
  output = model(normalize(X).to(dtype))
  loss = criterion(output, y)
  del loss   # the script's clean training loss, logged only
  return torch.clamp(X + delta[:X.size(0)], min=lower_limit, max=upper_limit), robust_loss.item()


# --- trades_AWP/train_trades_cifar.py ------------------------------------------------------------------------------

def perturb_input(model, x_natural, start_noise, step_size=0.003, epsilon=0.031, perturb_steps=10):
  model.eval()
  dtype = _dtype(model)
  x_adv = x_natural.detach() + start_noise
  for _ in range(perturb_steps):
    x_adv.requires_grad_()
    with torch.enable_grad():
      loss_kl = F.kl_div(F.log_softmax(model(x_adv.to(dtype)), dim=1),
                         F.softmax(model(x_natural.to(dtype)), dim=1),
                         reduction='sum')
    grad = torch.autograd.grad(loss_kl, [x_adv])[0]
    x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
    x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
  return x_adv


def adjust_learning_rate(optimizer, epoch, args=TRADES_AWP_ARGS):
  """decrease the learning rate"""
  lr = args['lr']
  if epoch >= 100:
    lr = args['lr'] * 0.1
  if epoch >= 150:
    lr = args['lr'] * 0.01
  for param_group in optimizer.param_groups:
    param_group['lr'] = lr
  return lr


def trades_awp_train_batch(model, optimizer, awp_adversary, x_natural, target, *, epoch, start_noise,
                           args=TRADES_AWP_ARGS):
  """One batch of `train` (`epoch` from 1, as the script counts), at the optimiser's LR."""
  dtype = _dtype(model)
  x_adv = perturb_input(model=model, x_natural=x_natural, start_noise=start_noise, step_size=args['step_size'],
                        epsilon=args['epsilon'], perturb_steps=args['num_steps'])
  model.train()
  if epoch >= args['awp_warmup']:
    awp = awp_adversary.calc_awp(inputs_adv=x_adv, inputs_clean=x_natural, targets=target, beta=args['beta'])
    awp_adversary.perturb(awp)
  optimizer.zero_grad()
  logits_adv = model(x_adv.to(dtype))
  loss_robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(model(x_natural.to(dtype)), dim=1),
                         reduction='batchmean')
  logits = model(x_natural.to(dtype))
  loss_natural = F.cross_entropy(logits, target)
  loss = loss_natural + args['beta'] * loss_robust
  optimizer.zero_grad()
  loss.backward()
  optimizer.step()
  if epoch >= args['awp_warmup']:
    awp_adversary.restore(awp)
  return x_adv, loss.item()
