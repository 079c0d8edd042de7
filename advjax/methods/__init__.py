"""The training methods, one module per family, and the registry of every method by name (what `config.method` picks).

- `search`: the search-based methods, an attack and an outer loss that `step.attack_then_loss_step` composes
  (Madry, TRADES, MART, FAT and its variants, DAT);
- `cat`: CAT, whose batch mixing attacks each part of the batch with its own number of steps;
- `single_step`: the fast methods (FGSM-RS, FGSM-GA, Free-AT, FGSM-SDI, FGSM-PGI);
- `las_at` and `strategy`: LAS-AT and its learned attack strategy;
- `awp`: adversarial weight perturbation, on top of the search-based methods and LAS-AT;
- `memory`: the per-example state (FGSM-PGI's EP and MEP priors), sharded by dataset index.
A method either is search-based or brings a per-device step of its own. Methods with learned or remembered state (a
generator, a policy, per-example perturbations) also initialise it; it lives in the train state, is checkpointed
with it, and is updated inside the jitted step.
"""
from typing import Callable, NamedTuple, Optional

from advjax.methods import cat, las_at, search, single_step


def one_update(config):
  del config
  return 1


class Method(NamedTuple):
  hparams: Callable                   # (config, epoch) -> the epoch's scheduled settings, traced in the step
  attack: Optional[Callable] = None   # search-based: see `search`
  loss: Optional[Callable] = None
  step: Optional[Callable] = None     # (model, tx, config, key) -> per-device step(state, batch, hparams)
  init: Optional[Callable] = None     # (config, model, input_shape, memory_rows) -> key -> (method state, memory)
  extra_metrics: tuple = ()           # metric sums beyond loss, adv_correct, attack_steps, examples
  updates_per_batch: Callable = one_update   # optimiser updates per batch (Free-AT's replays)
  counts_epoch_batches: bool = False   # its step reads hparams['epoch_first_step'] (FGSM-SDI's generator schedule)


def _search(attack, loss, hparams=search.no_hparams, **kwargs):
  return Method(hparams, attack=attack, loss=loss, **kwargs)


def _las():
  return Method(las_at.las_hparams, step=las_at.las_step, init=las_at.las_init,
                extra_metrics=('sampled_eps', 'reward', 'policy_updates'))


METHODS = {
    'madry': _search(search.pgd_attack, search.madry_loss),              # PGD-AT (Madry et al., 2018)
    'fat': _search(search.early_stopped_attack, search.madry_loss, search.tau_hparams),   # FAT (2020)
    'trades': _search(search.pgd_attack, search.trades_loss),            # TRADES (Zhang et al., 2019)
    'fat_trades': _search(search.early_stopped_attack, search.trades_loss, search.tau_hparams),
    'mart': _search(search.pgd_attack, search.mart_loss),                # MART (Wang et al., 2020)
    'fat_mart': _search(search.early_stopped_attack, search.mart_loss, search.tau_hparams),
    'dat': _search(search.fosc_attack, search.dat_loss, search.fosc_hparams,   # DAT (Wang et al., 2019)
                   extra_metrics=('fosc',)),
    'cat': Method(cat.steps_hparams, step=cat.cat_step),                      # CAT (Cai et al., 2018)
    'fgsm_rs': Method(search.no_hparams, step=single_step.fgsm_rs_step),     # FGSM-RS (Wong et al., 2020)
    'fgsm_ga': Method(search.no_hparams, step=single_step.grad_align_step),   # GradAlign (2020)
    'free_at': Method(search.no_hparams, step=single_step.free_step, init=single_step.free_init,   # Free-AT
                      updates_per_batch=single_step.free_updates_per_batch),
    'fgsm_sdi': Method(search.no_hparams, step=single_step.sdi_step, init=single_step.sdi_init,  # TIP 2022
                       counts_epoch_batches=True),
    'fgsm_pgi': Method(single_step.pgi_hparams, step=single_step.pgi_step, init=single_step.pgi_init),  # ECCV 2022
    'las_at': _las(),            # LAS-AT (Jia et al., CVPR 2022): LS-CE target loss
    'las_trades': _las(),    # LAS-TRADES: TRADES with a per-example beta
    'las_awp': _las(),          # LAS-AWP: CE under adversarial weight perturbation
}


def hparams(config, epoch, first_step=None):
  """The epoch's traced settings: the method's schedule, AWP's gamma (zero during its warm-up), for an attack in
  training mode except after each evaluation (`attack.model_mode`, see `step.attack_then_loss_step`) the step of
  the batch that attacks in eval mode (none in epoch 1), and for a method that counts the epoch's batches
  (`Method.counts_epoch_batches`: FGSM-SDI's generator updates) the epoch's first step. `first_step`: the train state's step at the epoch's first batch."""
  method = METHODS[config.method]
  settings = method.hparams(config, epoch)
  if config.get('awp') and config.awp.gamma > 0:
    settings['awp_gamma'] = config.awp.gamma if epoch > config.awp.warmup_epochs else 0.0
  train_except_after_eval = config.attack.get('model_mode') == 'train_except_after_eval'
  if first_step is None and (train_except_after_eval or method.counts_epoch_batches):
    raise ValueError(f"{config.method}'s settings (attack.model_mode {config.attack.get('model_mode')!r}) need "
                     'first_step, the step of the epoch\'s first batch')
  if train_except_after_eval:
    settings['eval_mode_step'] = first_step if epoch > 1 else -1
  if method.counts_epoch_batches:
    settings['epoch_first_step'] = first_step
  return settings

