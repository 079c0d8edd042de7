r"""Robust evaluation of a training run's latest checkpoint, or of a PyTorch checkpoint, under a named protocol.

  python -m advjax.main --config=configs/eval.py --config.checkpoint=runs/fat                  # AutoAttack
  python -m advjax.main --config=configs/eval.py --config.checkpoint=runs/fat --config.protocol=dat
  python -m advjax.main --config=configs/eval.py --config.checkpoint=model.pt --config.model.name=wrn-34-10
  python -m advjax.main --config=configs/eval.py --config.checkpoint=runs/fat --config.norm=l2 --config.eps=0.5

A PyTorch checkpoint (a .pt / .pth `state_dict` in the official module layout, see advjax/interop.py) needs the
advjax name of its network, the data (`data`, CIFAR-10 from $ADVJAX_DATA_DIR by default) and, where the network
normalised its input inside, its mean and std (`--config.model.mean='(0.4914, 0.4822, 0.4465)'`).

Protocols (advjax/evaluate.py): 'dat' (FAT Table 1: FGSM, PGD-20, CW-30, step eps/4, random start, eps 0.031),
'trades' / 'trades_rs' (FAT Tables 2-3: step 0.003, without / with a random start), 'mart' (FAT Table 4: eps 8/255,
step eps/10), 'aa_standard' (AutoAttack standard, eps 8/255, L2 0.5, L1 12: APGD-CE, APGD-T, FAB-T, Square) and
'aa_plus' (its plus version), 'aa_rand' (its rand version, APGD-CE and APGD-DLR with EoT over 20 forwards, for
randomised models; the networks here are deterministic, where it is APGD at 20x the cost); 'custom' takes a list:
  --config.protocol=custom --config.attacks=fgsm,pgd-100,cw-30,square --config.eps=0.031
The table (points attacked, accuracy under each attack alone where the mode is 'individual', under all so far, and
time per attack) is printed and written to <checkpoint>/eval_<protocol>.md and .json (with per-example robust flags);
AutoAttack also writes a RobustBench-style <checkpoint>/eval_<protocol>_entry.json. A killed evaluation goes on from
<checkpoint>/eval_<protocol>_state.json when the same command is rerun. Expected numbers are those of the training
config's docstring.
"""
import os
import sys

import ml_collections

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top


def get_config():
  c = ml_collections.ConfigDict()
  c.checkpoint = ''          # a training workdir (holds config.json and checkpoints/), or a PyTorch .pt / .pth file
  c.protocol = 'aa_standard'
  c.weights = 'raw'          # or 'ema': the moving average of a run trained with ema_decay > 0
  c.norm = 'linf'            # or 'l2', 'l1' (AutoAttack and custom lists; L1: AutoAttack's attacks only)
  c.eps = -1.0               # > 0 overrides the protocol's radius (e.g. 0.2 for the digits quick start; L2 0.5, L1 12)
  # protocol 'custom': a free-form list, e.g. 'fgsm,pgd-100,cw-30,apgd-ce,square' (needs eps > 0)
  c.attacks = ''
  c.step_size = -1.0         # PGD/CW step of 'custom'; default eps / 4
  c.random_start = True
  # '' the protocol's: a cascade for AutoAttack (each attack on the points still robust), each attack alone on every
  # point for the papers' protocols and custom lists; or 'cascade' / 'individual'
  c.mode = ''
  c.num_examples = -1        # a seeded subset of N test examples; -1 for all (CIFAR-10: 10,000, as RobustBench)
  c.batch_size = 500
  c.seed = 0
  c.data_dir = ''            # overrides the training run's data directory
  c.output = ''              # path prefix of the .md/.json report; default <checkpoint>/eval_<protocol>
  # Only for a PyTorch checkpoint (a training workdir brings its own):
  c.model = ml_collections.ConfigDict(dict(name='', mean=(), std=(), num_classes=-1))   # -1: the data's
  c.data = default.base_config().data   # CIFAR-10 from $ADVJAX_DATA_DIR
  return c
