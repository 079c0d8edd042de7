"""FAT's training step as its official code runs it, transcribed for the differential tests.

Source: zjfheart/Friendly-Adversarial-Training, commit 80a064074891775146bca8c4d8a6b99c1499285a: `earlystop.py`
(`earlystop`, uniform random init, loss 'cent') and `FAT.py` (`train`'s loop body). Lines intentionally changed:
- the draws are injected: `np.random.uniform(-epsilon, epsilon, data.shape)` is `start_noise`, and step k's
  `torch.randn(iter_adv.shape)` is `step_noise[k]` at the examples still iterating (indexed by their place in the
  input batch, which `origin` tracks through the official code's re-indexing);
- `.cuda()` dropped; the hard-coded `reshape(-1, 3, 32, 32)` reads the input's shape; the model may compute in a
  wider dtype than the images and iterates (float32, as in the official code): `model(v)` is `model(v.to(dtype))`;
- it also returns each example's step count and its position in the output (the official code returns only the
  sum, `count`, and the adversarial batch reordered: stopped examples first, in the order they stopped).
With tau >= K and omega = 0 the loop takes K steps for every example: PGD-K, the AT baseline of FAT's Table 1.
"""
import torch
import torch.nn as nn


def earlystop(model, data, target, step_size, epsilon, perturb_steps, tau, start_noise, step_noise, omega=0.0):
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

  while K > 0:
    iter_adv.requires_grad_()
    output = model(iter_adv.to(dtype))
    pred = output.max(1, keepdim=True)[1]
    output_index, iter_index = [], []
    for idx in range(len(pred)):
      if pred[idx] != iter_target[idx]:
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
      loss_adv = nn.CrossEntropyLoss(reduction='mean')(output, iter_target)
    loss_adv.backward(retain_graph=True)
    grad = iter_adv.grad

    if len(iter_index) != 0:
      control = control[iter_index]
      iter_adv = iter_adv[iter_index]
      iter_clean_data = iter_clean_data[iter_index]
      iter_target = iter_target[iter_index]
      origin = origin[iter_index]
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
  output_origin = torch.cat(output_origin + [origin], dim=0)
  return output_adv, output_target, output_origin, count, steps


def train_step(model, optimizer, data, target, *, tau, start_noise, step_noise, epsilon=0.031, step_size=0.007,
               num_steps=10, omega=0.001):
  """One batch of FAT.py's `train`: early-stopped PGD in eval mode, then CE on the friendly adversarial data in
  training mode. Returns (adversarial points in input order, per-example steps, loss)."""
  output_adv, output_target, output_origin, _, steps = earlystop(
      model, data, target, step_size=step_size, epsilon=epsilon, perturb_steps=num_steps, tau=tau,
      start_noise=start_noise, step_noise=step_noise, omega=omega)
  model.train()
  optimizer.zero_grad()
  output = model(output_adv.to(next(model.parameters()).dtype))
  loss = nn.CrossEntropyLoss(reduction='mean')(output, output_target)
  loss.backward()
  optimizer.step()
  in_input_order = torch.empty_like(output_adv)
  in_input_order[output_origin] = output_adv
  return in_input_order, steps, loss.item()
