r"""FGSM-SDI (Jia et al., TIP 2022, arXiv:2110.05007): a generator proposes each example's FGSM start.

  python -m advjax.main --config=configs/fgsm_sdi.py         # ResNet-18, CIFAR-10, 110 epochs
  python -m advjax.main --config=configs/fgsm_sdi.py:small   # SmallCNN on a CIFAR-10 subset, minutes on a CPU

The official code: generator ([x, sign grad] -> eps tanh, "2 conv + 1 res-block", `One_Layer_Attacker` with its
initialisation) updated every 20 iterations to maximise LS-CE at the final example (Adam lr 1e-3, weight decay 5e-4,
never decayed; at batches 0, 20, 40, ... of each epoch); target in training
mode throughout, LS-CE with confidence 0.5 (HEAD; 0.9 before commit d54cac6), examples not clipped to [0, 1];
eps = alpha = 8/255; SGD 0.1, momentum 0.9, weight decay 5e-4, LR /10 at 100/110 and 105/110 of the run; batch 128;
no normalisation. Per-epoch evaluation as theirs: PGD-10, step 2/255.
Reported [from memory of the paper, unverified]: clean 84.86, PGD-10 53.73, PGD-20 52.54, PGD-50 52.18, C&W 51.00,
AA 48.50, ~83 min.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import default  # pylint: disable=g-import-not-at-top


def jia_et_al(c):
  """The training setting the Jia et al. repositories share (FGSM-SDI, FGSM-PGI)."""
  c.num_epochs = 110
  c.model.name = 'resnet18'
  c.attack.update(eps=8 / 255, step_size=8 / 255, steps=1)
  c.attack.model_mode = 'train'   # their official code; 'eval' for the attack gradients in eval mode
  c.optimizer.weight_decay = 5e-4
  c.lr_schedule = ((1, 0.1), (101, 0.01), (106, 0.001))
  c.eval.update(eps=8 / 255, step_size=2 / 255, steps=10)


def eval_attack(c):
  """Variant eval_attack: the attack's input gradients with the model in eval mode (not in the official code)."""
  c.attack.model_mode = 'eval'


def get_config(arg=None):
  c = default.base_config()
  c.method = 'fgsm_sdi'
  jia_et_al(c)
  c.label_confidence = 0.5
  c.sdi = default.ml_collections.ConfigDict(dict(generator_every=20, learning_rate=1e-3, weight_decay=5e-4))
  return default.apply_variants(c, arg, dict(eval_attack=eval_attack))
