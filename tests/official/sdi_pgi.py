"""FGSM-SDI's and FGSM-PGI's training steps as their official code runs them, transcribed for the differential tests.

Sources:
- jiaxiaojunQAQ/FGSM-SDI, commit d54cac68b52d4a11ff54817ca3d904f1a3b02b42: `attacker.py` (`BasicConv2d`, `GenBlock`,
  `One_Layer_Attacker`), `FGSM_SDI_loss.py` (`_label_smoothing`, `LabelSmoothLoss`, `adv_FGSM_loss`), `utils.py`
  (`clamp`) and `FGSM_SDI.py` (`train`'s loop body).
- jiaxiaojunQAQ/FGSM-PGI, commit fc15cfeffd48f8ebebaea7c7b46b72b1c99bd7d3: `FGSM_MEP.py` (`main`'s reset of the memory
  at `epoch % epochs_reset == 0` and its loop body over a batch).
Lines intentionally changed:
- `.cuda()`, `Variable` and the loop's logging dropped; the networks may compute in a wider dtype than the images
  (float32, as in the official code): the classifier's input is rounded to float32 as the official code's float32
  arithmetic rounds it (and as advjax's models round theirs), `model(v)` is `model(v.float().to(dtype))`; the
  attacker's input is `advinput.to(dtype)`; the `.float()` casts of the smoothed labels and of PGI's MSE inputs
  (to the official model's float32) are `.to(dtype)`;
- `GenBlock` keeps only what `One_Layer_Attacker` uses (no upsampling, no learnable shortcut: 64 -> 64 channels);
- SDI: the loop body is a function of the batch and its `batch_idx`; `adv_FGSM_loss` also returns the final example;
- PGI: the draw of the reset (`all_delta.uniform_(-eps, eps)`) is injected as `u`; the loop body is a function of
  the batch's stored delta and momentum (the official code gathers and scatters them by `cur_order`), and returns
  what it stores (`next_delta` and `momentum`) and the loss; DataParallel dropped. The code has MEP only: `prior`
  'ep' and 'bp' store the training perturbation `delta` instead of `next_delta` (the paper's EP and BP: the caller
  keeps it by example or by batch slot) and carry no momentum.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def clamp(X, lower_limit, upper_limit):
  return torch.max(torch.min(X, upper_limit), lower_limit)


class BasicConv2d(nn.Module):
  def __init__(self, in_planes, out_planes, kernel_size, stride, padding=0):
    super().__init__()
    self.conv = nn.Conv2d(in_planes, out_planes, kernel_size=kernel_size, stride=stride, padding=padding, bias=False)
    self.bn = nn.BatchNorm2d(out_planes, eps=0.001)
    self.relu = nn.ReLU(inplace=True)

  def forward(self, x):
    return self.relu(self.bn(self.conv(x)))


class GenBlock(nn.Module):
  def __init__(self, in_channels, out_channels, ksize=3, pad=1, activation=nn.PReLU):
    super().__init__()
    self.b1 = nn.BatchNorm2d(in_channels, affine=False)
    self.act1 = activation()
    self.b2 = nn.BatchNorm2d(out_channels, affine=False)
    self.act2 = activation()
    self.c1 = nn.Conv2d(in_channels, out_channels, ksize, 1, pad)
    self.c2 = nn.Conv2d(out_channels, out_channels, ksize, 1, pad)
    nn.init.xavier_uniform_(self.c1.weight.data, gain=math.sqrt(2))
    nn.init.xavier_uniform_(self.c2.weight.data, gain=math.sqrt(2))

  def forward(self, x):
    h = self.c1(self.act1(self.b1(x)))
    h = self.c2(self.act2(self.b2(h)))
    return h + x


class One_Layer_Attacker(nn.Module):  # pylint: disable=invalid-name
  def __init__(self, eps, input_channel=6):
    super().__init__()
    self.res_group = nn.Sequential(
        BasicConv2d(input_channel, 64, kernel_size=3, stride=1, padding=1),
        GenBlock(64, 64),
        nn.BatchNorm2d(64, affine=False),
        nn.Conv2d(64, 3, kernel_size=3, stride=1, padding=1, bias=True))
    self.eps = eps
    self.scale_last = nn.Parameter(torch.Tensor(1))
    self.scale_last.data *= 0
    self.scale_last.data += 5

  def forward(self, x):
    return self.res_group(x).tanh() * self.eps


def _label_smoothing(label, factor):
  one_hot = np.eye(10)[label.data.cpu().numpy()]
  return one_hot * factor + (one_hot - 1.) * ((factor - 1) / float(10 - 1))


def LabelSmoothLoss(input, target):  # pylint: disable=invalid-name,redefined-builtin
  log_prob = F.log_softmax(input, dim=-1)
  return (-target * log_prob).sum(dim=-1).mean()


def adv_FGSM_loss(model, grad, factor, attacker, x_natural, y, epsilon, alpha,  # pylint: disable=invalid-name
                  for_attacker=0):
  dtype = next(model.parameters()).dtype
  if for_attacker == 0:
    model.train()
    attacker.eval()
  else:
    attacker.train()
  label_smoothing = torch.tensor(_label_smoothing(y, factor))
  advinput = torch.cat([x_natural, 1.0 * (torch.sign(grad))], 1).detach()
  perturbation = attacker(advinput.to(dtype))
  x_adv = x_natural + perturbation
  x_adv.requires_grad_()
  with torch.enable_grad():
    loss_adv = F.cross_entropy(model(x_adv.float().to(dtype)), y)
    grad_adv = torch.autograd.grad(loss_adv, [x_adv])[0]
    perturbation_1 = clamp(alpha * torch.sign(grad_adv), -epsilon, epsilon)
  perturbation_total = perturbation + perturbation_1
  perturbation_total = clamp(perturbation_total, -epsilon, epsilon)
  x_adv_final = x_natural + perturbation_total
  output = model(x_adv_final.float().to(dtype))
  loss_robust = LabelSmoothLoss(output, label_smoothing.to(dtype))
  return loss_robust, output, x_adv_final


def sdi_train_step(model, attacker, target_model_optimizer, optimizer_att, data, target, batch_idx, *, factor,
                   epsilon, alpha, att_num):
  """One iteration of FGSM_SDI.py's `train` loop. Returns (the final example, the loss)."""
  dtype = next(model.parameters()).dtype
  data.requires_grad_()
  with torch.enable_grad():
    loss_natural = F.cross_entropy(model(data.float().to(dtype)), target)
  grad = torch.autograd.grad(loss_natural, [data])[0]
  if batch_idx % att_num == 0:
    optimizer_att.zero_grad()
    attacker.zero_grad()
    model.zero_grad()
    loss_adv, _, _ = adv_FGSM_loss(model=model, grad=grad, factor=factor, attacker=attacker, x_natural=data,
                                   y=target, epsilon=epsilon, alpha=alpha, for_attacker=1)
    loss_adv = -loss_adv
    loss_adv.backward()
    optimizer_att.step()
  target_model_optimizer.zero_grad()
  model.zero_grad()
  attacker.zero_grad()
  loss, _, x_adv_final = adv_FGSM_loss(model=model, grad=grad, factor=factor, attacker=attacker, x_natural=data,
                                       y=target, epsilon=epsilon, alpha=alpha, for_attacker=0)
  loss.backward()
  target_model_optimizer.step()
  return x_adv_final.detach(), loss.item()


def reset_delta(u, alpha, epsilon):
  """FGSM_MEP.py's reset every `epochs_reset` epochs, from its uniform draw u ~ U(-eps, eps): a random vertex."""
  return clamp(alpha * torch.sign(u), -epsilon, epsilon)


def pgi_train_step(model, opt, X, y, delta, momentum, *, prior, epsilon, alpha, factor=0.6, lamda=10.0, decay=0.3,
                   lower_limit=0.0, upper_limit=1.0):
  """One batch of FGSM_MEP.py's loop, from the batch's stored `delta` (and `momentum`, MEP). Returns (what is
  stored: next_delta for MEP, delta for EP and BP; the momentum, MEP; the loss)."""
  dtype = next(model.parameters()).dtype
  delta, next_delta = delta.clone().detach(), delta.clone().detach()
  label_smoothing = torch.tensor(_label_smoothing(y, factor)).to(dtype)
  delta.requires_grad = True
  ori_output = model((X + delta[:X.size(0)]).float().to(dtype))
  ori_loss = LabelSmoothLoss(ori_output, label_smoothing.to(dtype))
  ori_loss.backward(retain_graph=True)
  x_grad = delta.grad.detach()
  if prior == 'mep':
    grad_norm = torch.norm(x_grad, p=1)
    momentum = x_grad / grad_norm + momentum * decay
    next_delta.data = clamp(delta + alpha * torch.sign(momentum), -epsilon, epsilon)
    next_delta.data[:X.size(0)] = clamp(next_delta[:X.size(0)], lower_limit - X, upper_limit - X)
  delta.data = clamp(delta + alpha * torch.sign(x_grad), -epsilon, epsilon)
  delta.data[:X.size(0)] = clamp(delta[:X.size(0)], lower_limit - X, upper_limit - X)
  delta = delta.detach()
  output = model((X + delta[:X.size(0)]).float().to(dtype))
  loss_fn = torch.nn.MSELoss(reduction='mean')   # the official reduce=True, size_average=True
  loss = LabelSmoothLoss(output, label_smoothing.to(dtype)) + lamda * loss_fn(output.to(dtype), ori_output.to(dtype))
  opt.zero_grad()
  loss.backward()
  opt.step()
  return (next_delta if prior == 'mep' else delta), (momentum if prior == 'mep' else None), loss.item()
