"""CAT's training step as its official code runs it, transcribed for the differential tests.

Source: sunblaze-ucb/curriculum-adversarial-training-CAT, commit ab58b77ac2 (`git show ab58b77:advtrain_all.py`,
`PGDAttack.py`): `regularLoss` (the batch of `advtrain_CAT`, the model in training mode throughout) and
`LinfPGDAttack.perturb_true` (built as `LinfPGDAttack(net, epsilon, 1, step_size, True, 'xent')`). Lines
intentionally changed:
- the draws are injected: the start's `np.random.uniform(-self.epsilon, self.epsilon, x_nat.shape)` is
  `start_noise` (the part's rows of it) and the step size's `np.random.uniform(1, 10.0 / k)` is `step_factor[k]`;
- the step size is float32, as advjax holds it (`np.float32(...)` around the official float64 product): in float64
  the step moves about one float32 iterate pixel in ten by a different last bit (seen: 793 of 6144 at level 2),
  enough to flip max-pool ties and move a few fc1 weights by 1e-3 relative after three Adam steps;
- Python 3: `inputs.size(0) / (k+1)` is `//` (Python 2's integer division, which the code was written for),
  `loss.data[0]` is `loss.item()`; `Variable(...)` and `.cuda()` dropped;
- the model may compute in a wider dtype than the images and iterates (float32, as in the official code):
  `model(v)` is `model(v.to(dtype))`;
- `inputs_var = Variable(inputs)` writes the parts into `inputs` itself; here into a clone (the same values: each
  part's rows are read before they are written);
- it also returns the mixed batch and each example's step count.
"""
import numpy as np
import torch
import torch.nn as nn


def perturb_true(model, x_nat, y, k, *, epsilon, step_size, start_noise, step_factor, num_steps=1):
  step_size = np.float32(step_size * num_steps / k) * np.float32(step_factor[k])
  dtype = next(model.parameters()).dtype
  criterion = nn.CrossEntropyLoss()
  x_nat = x_nat.data.numpy()
  x = x_nat + start_noise
  for _ in range(k):
    x = torch.Tensor(x)
    x.requires_grad_(True)
    model.zero_grad()
    output = model(x.to(dtype))
    loss = criterion(output, y)
    loss.backward()
    grad = x.grad.data.numpy()
    x = x.data.numpy()
    x = np.add(x, step_size * (np.sign(grad)), out=x, casting='unsafe')
    x = np.clip(x, x_nat - epsilon, x_nat + epsilon)
    x = np.clip(x, 0, 1)
  return torch.Tensor(x)


def regular_loss(net, optimizer, inputs, targets, k, *, epsilon, step_size, start_noise, step_factor):
  """One batch of `advtrain_CAT` at level k: (mixed batch, per-example steps, loss, correct predictions)."""
  net.train()
  dtype = next(net.parameters()).dtype
  criterion = nn.CrossEntropyLoss()
  inputs_var, targets_var = inputs.clone(), targets.clone()
  steps = torch.zeros(len(targets), dtype=torch.long)
  each_batch = inputs.size(0) // (k + 1)
  for cur_k in range(k + 1):
    rows = slice(cur_k * each_batch, (cur_k + 1) * each_batch) if cur_k != k else slice(k * each_batch, None)
    inputs_now, targets_now = inputs[rows], targets[rows]
    inputs_adv = perturb_true(net, inputs_now, targets_now, cur_k, epsilon=epsilon, step_size=step_size,
                              start_noise=start_noise[rows].numpy(), step_factor=step_factor) if cur_k != 0 \
        else inputs_now
    inputs_var[rows], targets_var[rows] = inputs_adv, targets_now
    steps[rows] = cur_k
  outputs = net(inputs_var.to(dtype))
  loss = criterion(outputs, targets_var)
  optimizer.zero_grad()
  loss.backward()
  optimizer.step()
  _, predicted = torch.max(outputs.data, 1)
  current_correct = predicted.eq(targets_var.data).cpu().sum()
  return inputs_var, steps, loss.item(), int(current_correct)
