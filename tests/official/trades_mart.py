"""TRADES' and MART's training steps as their official code runs them, transcribed for the differential tests.

Sources: yaodongyu/TRADES, commit 6e8e11b7c281371c2f027ffadfbaea80361f09de: `trades.py` (`trades_loss`, the l_inf
branch) and `train_trades_cifar10.py` (`train`'s loop body); YisenWang/MART, commit
2d83e17b381dd2ee52223695e517bf6d5ff09c2c: `mart.py` (`mart_loss`, the l_inf branch) and `train_wideresnet.py`
(`train`'s loop body). Lines intentionally changed:
- the start's `0.001 * torch.randn(x_natural.shape)` is `start_noise` (injected);
- `.cuda()` dropped; `Variable(...)` is the tensor; the deprecated `KLDivLoss(size_average=False)` is
  `reduction='sum'`; the model may compute in a wider dtype than the images and iterates: `model(v)` is
  `model(v.to(dtype))`.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def _attack(model, x_natural, y, loss, start_noise, step_size, epsilon, perturb_steps):
  dtype = next(model.parameters()).dtype
  model.eval()
  x_adv = x_natural.detach() + start_noise
  for _ in range(perturb_steps):
    x_adv.requires_grad_()
    with torch.enable_grad():
      loss_value = loss(model(x_adv.to(dtype)))
    grad = torch.autograd.grad(loss_value, [x_adv])[0]
    x_adv = x_adv.detach() + step_size * torch.sign(grad.detach())
    x_adv = torch.min(torch.max(x_adv, x_natural - epsilon), x_natural + epsilon)
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
  model.train()
  return torch.clamp(x_adv, 0.0, 1.0).detach()


def trades_loss(model, x_natural, y, optimizer, start_noise, step_size=0.003, epsilon=0.031, perturb_steps=10,
                beta=1.0):
  dtype = next(model.parameters()).dtype
  criterion_kl = nn.KLDivLoss(reduction='sum')
  batch_size = len(x_natural)
  kl = lambda adv_logits: criterion_kl(F.log_softmax(adv_logits, dim=1),
                                       F.softmax(model(x_natural.to(dtype)), dim=1))
  x_adv = _attack(model, x_natural, y, kl, start_noise, step_size, epsilon, perturb_steps)
  optimizer.zero_grad()
  logits = model(x_natural.to(dtype))
  loss_natural = F.cross_entropy(logits, y)
  loss_robust = (1.0 / batch_size) * criterion_kl(F.log_softmax(model(x_adv.to(dtype)), dim=1),
                                                  F.softmax(model(x_natural.to(dtype)), dim=1))
  return loss_natural + beta * loss_robust, x_adv


def mart_loss(model, x_natural, y, optimizer, start_noise, step_size=0.007, epsilon=0.031, perturb_steps=10,
              beta=6.0):
  dtype = next(model.parameters()).dtype
  kl = nn.KLDivLoss(reduction='none')
  batch_size = len(x_natural)
  x_adv = _attack(model, x_natural, y, lambda logits: F.cross_entropy(logits, y), start_noise, step_size, epsilon,
                  perturb_steps)
  optimizer.zero_grad()
  logits = model(x_natural.to(dtype))
  logits_adv = model(x_adv.to(dtype))
  adv_probs = F.softmax(logits_adv, dim=1)
  tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
  new_y = torch.where(tmp1[:, -1] == y, tmp1[:, -2], tmp1[:, -1])
  loss_adv = F.cross_entropy(logits_adv, y) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
  nat_probs = F.softmax(logits, dim=1)
  true_probs = torch.gather(nat_probs, 1, (y.unsqueeze(1)).long()).squeeze()
  loss_robust = (1.0 / batch_size) * torch.sum(
      torch.sum(kl(torch.log(adv_probs + 1e-12), nat_probs), dim=1) * (1.0000001 - true_probs))
  return loss_adv + float(beta) * loss_robust, x_adv


def train_step(model, optimizer, data, target, *, method, start_noise, **kwargs):
  """One batch of `train` in train_trades_cifar10.py (method 'trades') or MART's train_wideresnet.py ('mart').
  Returns (adversarial points, loss)."""
  model.train()
  optimizer.zero_grad()
  loss, x_adv = (trades_loss if method == 'trades' else mart_loss)(
      model=model, x_natural=data, y=target, optimizer=optimizer, start_noise=start_noise, **kwargs)
  loss.backward()
  optimizer.step()
  return x_adv, loss.item()
