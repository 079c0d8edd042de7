"""FAT's training steps as its official code runs them, transcribed for the differential tests.

Source: zjfheart/Friendly-Adversarial-Training, commit 80a064074891775146bca8c4d8a6b99c1499285a: `earlystop.py`
(`earlystop`, both random inits, both losses), `FAT.py`, `FAT_for_TRADES.py` and `FAT_for_MART.py` (`train`'s loop
bodies, `TRADES_loss`, `MART_loss`; the per-epoch PGD-20 of `eval_robust`), `attack_generator.py` (`pgd`, its
"Madry" start). Lines intentionally changed:
- the draws are injected: the start's `np.random.uniform(-epsilon, epsilon, data.shape)` (in `pgd` too) or
  `0.001 * torch.randn(data.shape)` is `start_noise`, and step k's `torch.randn(iter_adv.shape)` is `step_noise[k]`
  at the examples still iterating (indexed by their place in the input batch, which `origin` tracks through the
  official code's re-indexing);
- `.cuda()` dropped; the hard-coded `reshape(-1, 3, 32, 32)` reads the input's shape; the model may compute in a
  wider dtype than the images and iterates (float32, as in the official code): `model(v)` is `model(v.to(dtype))`;
- `before_6e461e0`: the check as it was before commit 6e461e0 (2021-01-15), `pred[idx] != target[idx]`;
- it also returns each example's step count and its position in the output (the official code returns only the
  sum, `count`, and the adversarial batch reordered: stopped examples first, in the order they stopped).
With tau >= K and omega = 0 the loop takes K steps for every example: PGD-K, the AT baseline of FAT's Table 1.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


def earlystop(model, data, target, step_size, epsilon, perturb_steps, tau, start_noise, step_noise, omega=0.0,
              loss_fn='cent', before_6e461e0=False):
  model.eval()
  K = perturb_steps
  count = 0
  output_target, output_adv, output_natural, output_origin = [], [], [], []
  control = torch.ones(len(target)) * tau
  steps = torch.zeros(len(target), dtype=torch.long)
  origin = torch.arange(len(target))
  shape = data.shape[1:]
  dtype = next(model.parameters()).dtype

  iter_adv = data.detach() + start_noise
  iter_adv = torch.clamp(iter_adv, 0.0, 1.0)
  iter_clean_data = data.detach()
  iter_target = target.detach()
  output_iter_clean_data = model(data.to(dtype))

  while K > 0:
    iter_adv.requires_grad_()
    output = model(iter_adv.to(dtype))
    pred = output.max(1, keepdim=True)[1]
    output_index, iter_index = [], []
    for idx in range(len(pred)):
      if pred[idx] != (target if before_6e461e0 else iter_target)[idx]:
        if control[idx] == 0:
          output_index.append(idx)
        else:
          control[idx] -= 1
          iter_index.append(idx)
      else:
        iter_index.append(idx)

    if len(output_index) != 0:
      output_adv.append(iter_adv[output_index].reshape(-1, *shape))
      output_natural.append(iter_clean_data[output_index].reshape(-1, *shape))
      output_target.append(iter_target[output_index].reshape(-1))
      output_origin.append(origin[output_index])

    model.zero_grad()
    with torch.enable_grad():
      if loss_fn == 'cent':
        loss_adv = nn.CrossEntropyLoss(reduction='mean')(output, iter_target)
      if loss_fn == 'kl':
        criterion_kl = nn.KLDivLoss(reduction='sum')   # the official size_average=False
        loss_adv = criterion_kl(F.log_softmax(output, dim=1), F.softmax(output_iter_clean_data, dim=1))
    loss_adv.backward(retain_graph=True)
    grad = iter_adv.grad

    if len(iter_index) != 0:
      control = control[iter_index]
      iter_adv = iter_adv[iter_index]
      iter_clean_data = iter_clean_data[iter_index]
      iter_target = iter_target[iter_index]
      origin = origin[iter_index]
      output_iter_clean_data = output_iter_clean_data[iter_index]
      grad = grad[iter_index]
      eta = step_size * grad.sign()
      noise = step_noise[perturb_steps - K][origin]
      iter_adv = iter_adv.detach() + eta + omega * noise
      iter_adv = torch.min(torch.max(iter_adv, iter_clean_data - epsilon), iter_clean_data + epsilon)
      iter_adv = torch.clamp(iter_adv, 0, 1)
      count += len(iter_target)
      steps[origin] += 1
    else:
      origin = origin[:0]
      iter_adv, iter_clean_data, iter_target = iter_adv[:0], iter_clean_data[:0], iter_target[:0]
      break
    K = K - 1

  output_adv = torch.cat(output_adv + [iter_adv.reshape(-1, *shape)], dim=0).detach()
  output_target = torch.cat(output_target + [iter_target.reshape(-1)], dim=0)
  output_natural = torch.cat(output_natural + [iter_clean_data.reshape(-1, *shape)], dim=0)
  output_origin = torch.cat(output_origin + [origin], dim=0)
  return output_adv, output_target, output_natural, output_origin, count, steps


def TRADES_loss(adv_logits, natural_logits, target, beta):
  batch_size = len(target)
  criterion_kl = nn.KLDivLoss(reduction='sum')
  loss_natural = nn.CrossEntropyLoss(reduction='mean')(natural_logits, target)
  loss_robust = (1.0 / batch_size) * criterion_kl(F.log_softmax(adv_logits, dim=1), F.softmax(natural_logits, dim=1))
  return loss_natural + beta * loss_robust


def MART_loss(adv_logits, natural_logits, target, beta):
  kl = nn.KLDivLoss(reduction='none')
  batch_size = len(target)
  adv_probs = F.softmax(adv_logits, dim=1)
  tmp1 = torch.argsort(adv_probs, dim=1)[:, -2:]
  new_y = torch.where(tmp1[:, -1] == target, tmp1[:, -2], tmp1[:, -1])
  loss_adv = F.cross_entropy(adv_logits, target) + F.nll_loss(torch.log(1.0001 - adv_probs + 1e-12), new_y)
  nat_probs = F.softmax(natural_logits, dim=1)
  true_probs = torch.gather(nat_probs, 1, (target.unsqueeze(1)).long()).squeeze()
  loss_robust = (1.0 / batch_size) * torch.sum(
      torch.sum(kl(torch.log(adv_probs + 1e-12), nat_probs), dim=1) * (1.0000001 - true_probs))
  return loss_adv + float(beta) * loss_robust


def train_step(model, optimizer, data, target, *, method, tau, start_noise, step_noise, epsilon=0.031,
               step_size=0.007, num_steps=10, omega=0.001, beta=6.0):
  """One batch of the `train` loop of FAT.py (method 'fat': CE on the friendly adversarial data), FAT_for_TRADES.py
  ('fat_trades': the KL attack, then natural and adversarial training-mode forwards, TRADES_loss) or FAT_for_MART.py
  ('fat_mart': adversarial, then natural forwards, MART_loss). Returns (adversarial points in input order,
  per-example steps, loss)."""
  output_adv, output_target, output_natural, output_origin, _, steps = earlystop(
      model, data, target, step_size=step_size, epsilon=epsilon, perturb_steps=num_steps, tau=tau,
      start_noise=start_noise, step_noise=step_noise, omega=omega, loss_fn='kl' if method == 'fat_trades' else 'cent')
  dtype = next(model.parameters()).dtype
  model.train()
  optimizer.zero_grad()
  if method == 'fat':
    loss = nn.CrossEntropyLoss(reduction='mean')(model(output_adv.to(dtype)), output_target)
  elif method == 'fat_trades':
    natural_logits = model(output_natural.to(dtype))
    adv_logits = model(output_adv.to(dtype))
    loss = TRADES_loss(adv_logits, natural_logits, output_target, beta)
  else:
    adv_logits = model(output_adv.to(dtype))
    natural_logits = model(output_natural.to(dtype))
    loss = MART_loss(adv_logits, natural_logits, output_target, beta)
  loss.backward()
  optimizer.step()
  in_input_order = torch.empty_like(output_adv)
  in_input_order[output_origin] = output_adv
  return in_input_order, steps, loss.item()


def madry_pgd(model, data, target, epsilon, step_size, num_steps, start_noise):
  """`attack_generator.pgd(..., loss_fn="cent", category="Madry", rand_init=True)`: the per-epoch PGD-20 of FAT.py,
  FAT_for_TRADES.py and FAT_for_MART.py (`eval_robust`)."""
  dtype = next(model.parameters()).dtype
  model.eval()
  x_adv = data.detach() + start_noise
  x_adv = torch.clamp(x_adv, 0.0, 1.0)
  for _ in range(num_steps):
    x_adv.requires_grad_()
    output = model(x_adv.to(dtype))
    model.zero_grad()
    with torch.enable_grad():
      loss_adv = nn.CrossEntropyLoss(reduction="mean")(output, target)
    loss_adv.backward()
    eta = step_size * x_adv.grad.sign()
    x_adv = x_adv.detach() + eta
    x_adv = torch.min(torch.max(x_adv, data - epsilon), data + epsilon)
    x_adv = torch.clamp(x_adv, 0.0, 1.0)
  return x_adv
