"""DAT's training step as its official Keras / TensorFlow code runs it, transcribed to PyTorch for the differential
tests.

Source: YisenWang/dynamic_adv_training, commit 470210e23941a2faca804e83e0f17cf58d913707: `pgd_attack.py`
(`LinfPGDAttack`: the 'xent' loss, its gradient and `perturb`), `train_models.py` (`advs_train`'s loop body: the
FOSC threshold, the loss weights, `train_on_batch`), `losses.py` (`cross_entropy`), `resnet.py` (`l2(decay)` on
every kernel, none on biases or BatchNorm), and Keras 2's `SGD(lr, decay, momentum)` update
(v <- momentum v - lr / (1 + decay t) g, w <- w + v, t the updates before this one) and weighted loss
(mean(w_i loss_i) / mean(w_i != 0)). The network is the test's; the official WRN-32-10 is not transcribed.
Lines intentionally changed:
- NumPy / TF / Keras written in torch; `np.random.uniform(-epsilon, epsilon, x_nat.shape)` is `start_noise`
  (injected); `sess.run` and `model.predict` run the model in eval mode (the Keras learning phase is not fed:
  inference), `train_on_batch` in training mode;
- `perturb`'s split into batches of `batch_size` is one batch; `np.repeat(control_indicator, 32*32*3)` broadcasts
  over the input's shape;
- the model outputs logits, to which the Keras model's final softmax is applied here; it may compute in a wider
  dtype than the images and iterates: `model(v)` is `model(v.to(dtype))`;
- it also returns each example's step count (the official code counts none).
"""
import torch
import torch.nn.functional as F

KERAS_EPSILON = 1e-7   # K.epsilon()


def _dtype(model):
  return next(model.parameters()).dtype


def perturb(model, x_nat, y, start_noise, epsilon, eps_iter, nb_iter, cri):
  """`LinfPGDAttack.perturb` with random_start=True, loss_func='xent'."""
  y_true = F.one_hot(y, 10).to(_dtype(model))

  def gradient(v):
    v = v.detach().requires_grad_()
    y_pred = F.softmax(model(v.to(_dtype(model))), dim=1)
    loss = -torch.sum(y_true * torch.log(y_pred + 1e-20), dim=1)
    return torch.autograd.grad(loss.sum(), [v])[0]   # tf.gradients of the per-example losses: of their sum

  model.eval()
  batch_x = x_nat + start_noise
  original_batch_x = batch_x.clone()
  steps = torch.zeros(len(y), dtype=torch.long)
  for j in range(nb_iter):
    if j == 0:
      grad = gradient(batch_x)
      batch_x = batch_x + eps_iter * torch.sign(grad)
      steps += 1
    else:
      batch_x = batch_x + eps_iter * torch.sign(grad) * control_indicator.view(-1, *[1] * (batch_x.dim() - 1))
      steps += control_indicator.long()
    batch_x = torch.clamp(batch_x, x_nat - epsilon, x_nat + epsilon)
    batch_x = torch.clamp(batch_x, 0.0, 1.0)
    grad = gradient(batch_x)
    grad_flatten = grad.reshape(len(y), -1)
    grad_norm = grad_flatten.abs().sum(1)
    diff = (batch_x - original_batch_x).reshape(len(y), -1)
    fosc = -(grad_flatten * diff).sum(1) + epsilon * grad_norm
    control_indicator = (fosc > cri).to(batch_x.dtype)
  return batch_x.detach(), steps, fosc


def keras_cross_entropy(y_true, y_pred):
  """losses.py's `cross_entropy`."""
  y_pred = y_pred / torch.sum(y_pred, dim=-1, keepdim=True)
  y_pred = torch.clamp(y_pred, KERAS_EPSILON, 1.0 - KERAS_EPSILON)
  return -torch.sum(y_true * torch.log(y_pred), dim=-1)


class KerasSGD:
  """Keras 2's SGD(lr, momentum, decay) with the network's l2(l2) kernel regulariser in the loss."""

  def __init__(self, model, lr, momentum, decay, l2):
    self.model, self.lr, self.momentum, self.decay, self.l2 = model, lr, momentum, decay, l2
    self.iterations = 0
    self.moments = {name: torch.zeros_like(p) for name, p in model.named_parameters()}

  def regularisation(self):
    return sum(self.l2 * torch.sum(p ** 2) for p in self.model.parameters() if p.dim() > 1)   # kernels

  def step(self, loss):
    params = dict(self.model.named_parameters())
    grads = torch.autograd.grad(loss + self.regularisation(), list(params.values()))
    lr = self.lr * (1.0 / (1.0 + self.decay * self.iterations))
    with torch.no_grad():
      for (name, p), g in zip(params.items(), grads):
        v = self.momentum * self.moments[name] - lr * g
        self.moments[name] = v
        p.add_(v)
    self.iterations += 1


def train_step(model, optimizer, x, y, *, ep, start_noise, epsilon=0.031, nb_iter=10, fosc_max=0.5,
               dynamic_epoch=100):
  """One batch of `advs_train` in epoch `ep` (from 0). Returns (adversarial points, per-example steps, loss without
  the regulariser)."""
  fosc = max(fosc_max - fosc_max * (ep * 1.0 / dynamic_epoch), 0.0)
  batch_advs, steps, _ = perturb(model, x, y, start_noise, epsilon, epsilon / 4, nb_iter, fosc)
  y_true = F.one_hot(y, 10).to(_dtype(model))
  with torch.no_grad():
    probs = F.softmax(model(batch_advs.to(_dtype(model))), dim=1)   # model.predict: inference mode
  loss_weight = torch.max(-y_true * torch.log(probs + 1e-12), dim=1).values
  model.train()
  score = keras_cross_entropy(y_true, F.softmax(model(batch_advs.to(_dtype(model))), dim=1))
  if ep == 0:
    loss = score.mean()
  else:
    loss = (score * loss_weight / (loss_weight != 0).to(score.dtype).mean()).mean()
  optimizer.step(loss)
  return batch_advs, steps, loss.item()
