"""FGSM-RS, FGSM-GA and Free-AT training steps as their official code runs them, transcribed for the differential tests.

FGSM-RS: locuslab/fast_adversarial, commit 54f728755e71857b632882ba6d6cef22f56e2172, `CIFAR10/train_fgsm.py` (the
  body of the batch loop, `--delta-init random`) and `CIFAR10/utils.py` (`clamp`, the limits, CIFAR mean/std).
  Its `utils.clamp` is the same function as FGSM-GA's below (here only on `.data`, so its gradient plays no part).
  Lines intentionally changed:
  - the draw is injected: `delta[:, j].uniform_(-epsilon[j], epsilon[j])` is `start_noise[:, j] / std[j]`, advjax's
    U(-eps, eps) draw in pixel units put in the channel's normalised units (the official delta lives there);
  - apex amp (O2, fp16) dropped: the model computes in its own dtype; `.cuda()` dropped; `model(v)` is
    `model(v.to(dtype))`, as in fat.py;
  - it returns the adversarial point in pixel units and the loss; the scheduler's step is the caller's (fixed LR).
FGSM-GA: tml-epfl/understanding-fast-adv-training, commit ceed49440bfc35a676375b783eaba5940e583bcc, `train.py` (the
  batch loop's `--attack=fgsm` branch with `minibatch_replay=1` and the GradAlign regulariser, as
  `sh/exps_diff_eps_cifar10.sh` runs it) and `utils.py` (`get_input_grad`, `get_uniform_delta`, `l2_norm_batch`,
  `clamp`; `get_lr_schedule`). Lines intentionally changed:
  - `utils.clamp` back-propagates as it did under the Dockerfile's torch 1.4.0, whose `max(self, other)` gives self
    no gradient where self <= other and `min` none where self >= other (torch >= 1.10 halves it at ties): the input
    gradient of clamp(v, 0, 1) is zero at and beyond the bounds;
  - the draws are injected: `get_uniform_delta` for the start (`--attack_init random`) is `start_noise`, the one in
    the regulariser's `get_input_grad(..., delta_init='random_uniform')` is `eta`;
  - half precision and the SVHN warm-ups dropped; `.cuda()` dropped; `model(v)` is `model(v.to(dtype))`.
Free-AT: ashafahi/free_adv_train, commit c42cac2c4711bc65363f836a42e883b6a65a4c40, `free_train.py` (the graph of the
  replay and `min_step`), `free_model.py` (`Model`: the perturbation variable, the input clip, `_decay`), TF 1
  transcribed into PyTorch:
  - one `sess.run(min_step)` is one call of `free_replay`: the forward at clip(x + pert, 0, 255), the gradients of
    mean CE + weight_decay * sum(l2_loss(DW)) with respect to the perturbation and the weights, the perturbation's
    `tf.assign` (clip(pert + eps sign g, -eps, eps)), then `MomentumOptimizer.apply_gradients` with the gradients
    taken before the assign (its control dependency); the momentum update accum = m accum + g, w -= lr accum is
    torch's SGD(momentum, dampening 0, no weight decay);
  - 'DW' variables (the convolution kernels and the fc weight) are the network's conv and linear weights;
    `tf.nn.l2_loss(w)` is sum(w^2) / 2;
  - the model is the caller's, reading the [0, 255] input (the official one standardises each image itself);
  - the loop's extra training-mode forwards for its logs (every 100th replay, and a test batch every 500th), which
    update BatchNorm's moving averages, are left out.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)


def fgsm_rs_train_step(model, opt, X, y, *, start_noise, epsilon=8, alpha=10):
  """One batch of `train_fgsm.py` from the [0, 1] images `X`: returns (x + delta in pixel units, loss)."""
  mu = torch.tensor(CIFAR10_MEAN).view(3, 1, 1)
  std = torch.tensor(CIFAR10_STD).view(3, 1, 1)
  upper_limit, lower_limit = (1 - mu) / std, (0 - mu) / std
  epsilon = (epsilon / 255.) / std
  alpha = (alpha / 255.) / std
  X = (X - mu) / std   # the loader's transforms.Normalize
  dtype = next(model.parameters()).dtype
  criterion = nn.CrossEntropyLoss()
  model.train()

  delta = torch.zeros_like(X)
  for j in range(len(epsilon)):
    delta[:, j, :, :] = start_noise[:, j] / std[j]
  delta.data = clamp(delta, lower_limit - X, upper_limit - X)
  delta.requires_grad = True
  output = model((X + delta[:X.size(0)]).to(dtype))
  loss = F.cross_entropy(output, y)
  loss.backward()
  grad = delta.grad.detach()
  delta.data = clamp(delta + alpha * torch.sign(grad), -epsilon, epsilon)
  delta.data[:X.size(0)] = clamp(delta[:X.size(0)], lower_limit - X, upper_limit - X)
  delta = delta.detach()
  output = model((X + delta[:X.size(0)]).to(dtype))
  loss = criterion(output, y)
  opt.zero_grad()
  loss.backward()
  opt.step()
  return X * std + mu + delta * std, loss.item()


class _Clamp14(torch.autograd.Function):
  """`utils.clamp(X, l, u)` = max(min(X, u), l) with torch 1.4's gradient: X's gradient where l < X < u only."""

  @staticmethod
  def forward(ctx, X, l, u):
    ctx.save_for_backward((X > l) & (X < u))
    return torch.max(torch.min(X, u), l)

  @staticmethod
  def backward(ctx, grad):
    inside, = ctx.saved_tensors
    return grad * inside, None, None


def clamp(X, l, u):
  return _Clamp14.apply(X, torch.as_tensor(l, dtype=X.dtype), torch.as_tensor(u, dtype=X.dtype))


def l2_norm_batch(v):
  norms = (v ** 2).sum([1, 2, 3]) ** 0.5
  return norms


def get_input_grad(model, X, y, eta, backprop=False):
  """`utils.get_input_grad(..., delta_init='random_uniform')` with the draw injected."""
  dtype = next(model.parameters()).dtype
  delta = eta.clone().requires_grad_(True)
  output = model((X + delta).to(dtype))
  loss = F.cross_entropy(output, y)
  grad = torch.autograd.grad(loss, delta, create_graph=True if backprop else False)[0]
  if not backprop:
    grad, delta = grad.detach(), delta.detach()
  return grad


def grad_align_train_step(model, opt, X, y, *, eta, start_noise=None, eps=8.0 / 255, fgsm_alpha=1.25,
                          grad_align_cos_lambda=0.2):
  """One batch of `train.py --attack=fgsm --grad_align_cos_lambda=...` (zero start unless `start_noise`): returns
  (X + delta, loss including the regulariser)."""
  dtype = next(model.parameters()).dtype
  double_bp = True if grad_align_cos_lambda > 0 else False
  loss_function = nn.CrossEntropyLoss()
  model.train()

  if start_noise is None:
    delta = torch.zeros_like(X, requires_grad=True)
  else:
    delta = start_noise.clone().requires_grad_(True)

  X_adv = clamp(X + delta, 0, 1)
  output = model(X_adv.to(dtype))
  loss = F.cross_entropy(output, y)
  grad = torch.autograd.grad(loss, delta, create_graph=True if double_bp else False)[0]
  grad = grad.detach()

  argmax_delta = eps * torch.sign(grad)
  delta.data = clamp(delta.data + fgsm_alpha * argmax_delta, -eps, eps)
  delta.data = clamp(X + delta.data, 0, 1) - X
  delta = delta.detach()

  output = model((X + delta).to(dtype))
  loss = loss_function(output, y)

  reg = torch.zeros(1, dtype=loss.dtype)[0]
  if grad_align_cos_lambda != 0.0:
    grad2 = get_input_grad(model, X, y, eta, backprop=True)
    grads_nnz_idx = ((grad**2).sum([1, 2, 3])**0.5 != 0) * ((grad2**2).sum([1, 2, 3])**0.5 != 0)
    grad1, grad2 = grad[grads_nnz_idx], grad2[grads_nnz_idx]
    grad1_norms, grad2_norms = l2_norm_batch(grad1), l2_norm_batch(grad2)
    grad1_normalized = grad1 / grad1_norms[:, None, None, None]
    grad2_normalized = grad2 / grad2_norms[:, None, None, None]
    cos = torch.sum(grad1_normalized * grad2_normalized, (1, 2, 3))
    reg += grad_align_cos_lambda * (1.0 - cos.mean())

  loss += reg
  opt.zero_grad()
  loss.backward()
  opt.step()
  return (X + delta).detach(), loss.item()


def ga_lr_schedule(lr_schedule_type, n_epochs, lr_max):
  """`utils.get_lr_schedule`, as written; `train.py` sets batch i of epoch e (from 1; epoch 0 is one batch at
  init) to `lr_schedule(epoch - 1 + (i + 1) / len(train_batches))`."""
  if lr_schedule_type == 'cyclic':
    lr_schedule = lambda t: np.interp([t], [0, n_epochs * 2 // 5, n_epochs], [0, lr_max, 0])[0]
  elif lr_schedule_type == 'piecewise':
    def lr_schedule(t):
      if t / n_epochs < 0.5:
        return lr_max
      elif t / n_epochs < 0.75:
        return lr_max / 10.
      else:
        return lr_max / 100.
  else:
    raise ValueError('wrong lr_schedule_type')
  return lr_schedule


def decayed_weights(model):
  """The official `_decay`'s variables: those whose name holds 'DW', the convolution kernels and the fc weight."""
  return [module.weight for module in model.modules() if isinstance(module, (nn.Conv2d, nn.Linear))]


def free_replay(model, opt, x_input, y_input, pert, *, epsilon=8.0, weight_decay=0.0002):
  """One `sess.run(min_step)` on the [0, 255] batch `x_input`: updates `pert` in place and the weights; returns the
  replay's mean CE (`model.mean_xent`)."""
  dtype = next(model.parameters()).dtype
  model.train()
  pert.requires_grad_(True)
  final_input = x_input + pert
  final_input = torch.clamp(final_input, 0., 255.)
  pre_softmax = model(final_input.to(dtype))
  mean_xent = F.cross_entropy(pre_softmax, y_input)
  weight_decay_loss = sum((w ** 2).sum() / 2 for w in decayed_weights(model))
  total_loss = mean_xent + weight_decay * weight_decay_loss

  params = [p for p in model.parameters()]
  grads = torch.autograd.grad(total_loss, [pert] + params)
  pert_grad, weight_grads = grads[0], grads[1:]
  sign_pert_grad = torch.sign(pert_grad)
  new_pert = pert.detach() + epsilon * sign_pert_grad
  clip_new_pert = torch.clamp(new_pert, -epsilon, epsilon)
  pert.requires_grad_(False)
  pert.copy_(clip_new_pert)

  opt.zero_grad()
  for p, g in zip(params, weight_grads):
    p.grad = g
  opt.step()
  return mean_xent.item()
