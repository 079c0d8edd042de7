r"""AT-AWP (Wu, Xia & Wang, NeurIPS 2020): Madry PGD-10 with adversarial weight perturbation.

  python -m advjax.main --config=configs/awp.py              # PreActResNet-18, CIFAR-10, 200 epochs
  python -m advjax.main --config=configs/awp.py:trades       # TRADES-AWP: WRN-34-10, beta 6, gamma 5e-3
  python -m advjax.main --config=configs/awp.py:small        # SmallCNN on a CIFAR-10 subset, minutes on a CPU

As the official `AT_AWP/train_cifar10.py` (tests/official/test_awp.py): gamma 0.01, no warm-up, proxy SGD lr 0.01 in
training mode on the method's own loss; PGD-10, eps 8/255, step 2/255, in training mode (each forward updating
BatchNorm, and one more at the result) except in each epoch's first batch from epoch 2 on, which finds the model in
eval mode after the evaluation; a training-mode forward on the natural batch after each step; SGD momentum 0.9,
weight decay 5e-4, LR 0.1, /10 at 100 and 150, read at each batch's end (so a drop starts with the last batch
before it); CIFAR mean/std inside the model. `trades` is
`TRADES_AWP/train_trades_cifar.py`. AWP applies to any search-based method: set --config.awp.gamma.
Reported (the AWP README, AutoAttack): AT-AWP WRN-34-10 clean 85.36 / AA 53.97; TRADES-AWP WRN-34-10 85.36 / 56.17.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


def trades(c):
  """The attack in eval mode on the KL from x + 0.001 N, unclipped, step 2/255; training forwards adversarial,
  natural, natural (`train`), no clean forward after the step; AWP from epoch 10 and LR drops at epochs 100 and 150,
  which the script tests as `epoch >= 10` etc. with epochs from 1."""
  c.method = 'trades'
  c.beta = 6.0
  c.trades_forwards, c.forward_order = 3, 'adversarial_first'
  c.clean_forward_after_step = False
  c.model.update(name='wrn-34-10', mean=(), std=())
  c.attack.update(loss='kl', init='gaussian', clip_init=False, model_mode='eval', score_forward=False)
  c.awp.update(gamma=5e-3, warmup_epochs=9)
  c.lr_schedule = ((1, 0.1), (100, 0.01), (150, 0.001))
  c.optimizer.lr_at_batch_end = False   # `adjust_learning_rate` once per epoch


def get_config(arg=None):
  c = default.base_config()
  c.method = 'madry'
  c.num_epochs = 200
  c.model.update(name='preact_resnet18', mean=CIFAR_MEAN, std=CIFAR_STD)
  c.attack.update(eps=8 / 255, step_size=2 / 255, steps=10, model_mode='train_except_after_eval', score_forward=True)
  c.clean_forward_after_step = True
  c.awp.update(gamma=0.01, warmup_epochs=0)
  c.optimizer.update(weight_decay=5e-4, lr_at_batch_end=True)   # the script's lr_schedule(epoch + (i + 1) / n)
  c.lr_schedule = ((1, 0.1), (101, 0.01), (151, 0.001))
  c.eval.update(eps=8 / 255, step_size=2 / 255)
  return default.apply_variants(c, arg, dict(trades=trades))
