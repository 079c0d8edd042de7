"""Checks a config before anything is compiled: each problem is one line saying what is wrong and what is allowed."""
import importlib.util
import json
import math
import os
from typing import NamedTuple

import jax
import ml_collections

from advjax import attacks, checkpoint, data, evaluate, interop, methods, models
from advjax.methods import search

ATTACK_INITS = ('uniform', 'gaussian', 'none')
ATTACK_LOSSES = ('ce', 'kl', 'cw')


class ConfigError(ValueError):
  """One line: a newline in a value it quotes is written as \\n."""

  def __init__(self, message):
    super().__init__(str(message).replace('\r', '\\r').replace('\n', '\\n'))


def _require(ok, message):
  if not ok:
    raise ConfigError(message)


class Range(NamedTuple):
  """The finite numbers from `low` to `high` (None: unbounded), each end open or closed; integers within int32."""
  low: float
  high: float | None = None
  open_low: bool = False
  open_high: bool = False
  note: str = ''

  def __contains__(self, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
      return False
    if isinstance(value, int) and abs(value) >= 2**31:   # counts and seeds become int32 on the devices
      return False
    above = value > self.low if self.open_low else value >= self.low
    below = self.high is None or (value < self.high if self.open_high else value <= self.high)
    return above and below

  def __str__(self):
    if self.high is None:
      text = f'>= {self.low:g}' if not self.open_low else f'> {self.low:g}'
    else:
      text = f'in {"(" if self.open_low else "["}{self.low:g}, {self.high:g}{")" if self.open_high else "]"}'
    return text + (f' ({self.note})' if self.note else '')


UNIT, RATE, AT_LEAST_0, AT_LEAST_1 = Range(0, 1), Range(0, 1, open_high=True), Range(0), Range(1)
# Every numeric field a training config may have (each is checked where the config has it). Budgets and step sizes
# are in the pixel units of images in [0, 1]; rates average, so 1 would never move.
RANGES = {
    **dict.fromkeys(('attack.eps', 'attack.step_size', 'attack.noise_std', 'eval.eps', 'eval.step_size',
                     'las.reward_eps', 'las.reward_step_size', 'las.start_eps'), UNIT),
    'las.train_eps_clip': Range(0, 1, note='0: none'),
    'optimizer.momentum': RATE, 'las.policy_momentum': RATE, 'ema_decay': Range(0, 1, open_high=True, note='0: no EMA'),
    'pgi.momentum': UNIT,
    'label_confidence': Range(0, 1, open_low=True, note='1: plain CE'),
    'las.lookahead_label_confidence': Range(0, 1, open_low=True, note='1: plain CE'),
    **dict.fromkeys(('batch_size', 'eval.batch_size', 'attack.steps', 'eval.steps', 'eval.restarts', 'num_epochs',
                     'checkpoint_keep', 'free.replays', 'sdi.generator_every', 'las.policy_every', 'las.reward_steps',
                     'las.reward_restarts', 'fosc.decay_epochs'), AT_LEAST_1),
    **dict.fromkeys(('beta', 'attack.kappa', 'eval.kappa', 'optimizer.weight_decay', 'free.weight_decay',
                     'sdi.weight_decay', 'sdi.learning_rate', 'las.policy_lr', 'las.policy_weight_decay',
                     'las.policy_clip', 'las.accuracy_reward_clip', 'las.loss_reward_clip', 'las.clean_reward',
                     'las.robust_reward', 'grad_align.weight', 'pgi.reg_weight', 'fosc.c_max', 'awp.warmup_epochs',
                     'cat.max_k', 'data.crop_padding', 'seed', 'data.seed', 'log_every_steps'), AT_LEAST_0),
    'awp.gamma': Range(0, note='0: no AWP'),
    'pgi.reset_every': Range(0, note='0: never'),
    'attack.compact_min_size': Range(0, note='0: no compaction'),
    'optimizer.keras_time_decay': Range(0, note='0: none'),
}
ALL_OR_COUNT = ('data.num_train', 'data.num_test', 'eval.num_examples')   # -1: all


# An L2 radius is not bounded by the pixel range (ImageNet's is 3.0); up to the box's diagonal it can matter.
L2_BUDGET = Range(0, note='under norm l2')


def _check_ranges(config):
  for name, allowed in RANGES.items():
    value = _field(config, name)
    section, _, leaf = name.partition('.')
    if leaf in ('eps', 'step_size') and section in ('attack', 'eval') and _field(config, f'{section}.norm') == 'l2':
      allowed = L2_BUDGET
    _require(value is None or value in allowed, f'{name} must be {allowed}, got {value!r}')
  for name in ALL_OR_COUNT:
    value = _field(config, name)
    _require(value is None or value == -1 or value in AT_LEAST_1, f'{name} must be -1 (all) or >= 1, got {value!r}')


def _check_schedule(name, schedule, lowest=None, highest=None):
  _require(isinstance(schedule, (tuple, list)) and len(schedule) > 0 and all(
      isinstance(entry, (tuple, list)) and len(entry) == 2 and entry[0] in Range(1) for entry in schedule),
           f'{name} must be ((first_epoch, value), ...), got {schedule!r}')
  starts = [start for start, _ in schedule]
  _require(starts[0] == 1 and starts == sorted(set(starts)),
           f'{name} must start at epoch 1 with increasing epochs, got epochs {starts}')
  for _, value in schedule:
    _require(isinstance(value, (int, float)) and math.isfinite(value), f'{name} values must be finite numbers, got '
             f'{value!r}')
    _require(lowest is None or value >= lowest, f'{name} values must be >= {lowest}, got {value}')
    _require(highest is None or value <= highest, f'{name} values must be <= {highest}, got {value}')


L2_METHODS = ('madry', 'trades', 'mart', 'fat', 'fat_trades', 'fat_mart')   # the search-based ones


def _check_attack(name, a):
  _require(a.init in ATTACK_INITS, f'{name}.init must be one of {", ".join(ATTACK_INITS)}; got {a.init!r}')
  _require(a.loss in ATTACK_LOSSES, f'{name}.loss must be one of {", ".join(ATTACK_LOSSES)}; got {a.loss!r}')
  _one_of(f'{name}.norm', a.norm, attacks.parts.NORMS)


def _check_method_settings(config):
  """The settings the chosen method reads, beyond those every method has."""
  method = methods.METHODS[config.method]
  needs = lambda field: _require(field in config, f'method {config.method!r} needs config.{field}')
  if method.hparams is search.tau_hparams:
    needs('tau_schedule')
    _check_schedule('tau_schedule', config.tau_schedule, lowest=0, highest=config.attack.steps)
  if config.method == 'cat':
    needs('steps_schedule')
    needs('cat')
    _check_schedule('steps_schedule', config.steps_schedule, lowest=0, highest=config.cat.max_k)
    _one_of('cat.step_rule', config.cat.step_rule, ('random', 'fixed'))
    _one_of('attack.model_mode', config.attack.get('model_mode', 'eval'), ('eval', 'train'))
    per_device = config.batch_size // jax.device_count()
    _require(not config.cat.batch_mixing or per_device >= config.cat.max_k + 1,
             f'cat.batch_mixing needs batch_size per device >= cat.max_k + 1 = {config.cat.max_k + 1} (an example '
             f'per part), got {per_device}')
  if method.hparams is search.fosc_hparams:
    needs('fosc')
    _require(config.fosc.reference in ('clean', 'start'),
             f"fosc.reference must be 'clean' or 'start', got {config.fosc.reference!r}")
  _require(config.attack.norm == 'linf' or config.method in L2_METHODS,
           f"attack.norm 'l2' trains {', '.join(L2_METHODS)}, not {config.method!r}")
  if method.attack is not None:
    mode = config.attack.get('model_mode', 'eval')
    _one_of('attack.model_mode', mode, ('eval', 'train', 'train_except_after_eval'))
    _require(mode == 'eval' or method.attack is search.pgd_attack,
             f"attack.model_mode {mode!r} needs a PGD attack (madry, trades, mart), not {config.method!r}'s")
  if method.loss in (search.trades_loss, search.mart_loss):
    needs('beta')
  _check_fast_and_learned(config)
  _require(config.get('trades_forwards', 2) in (2, 3),
           f'trades_forwards must be 2 or 3, got {config.get("trades_forwards")}')
  _require(config.get('forward_order', 'natural_first') in search.FORWARD_ORDERS,
           f"forward_order must be 'natural_first' or 'adversarial_first', got {config.get('forward_order')!r}")


def _check_optimizer(o):
  _one_of('optimizer.name', o.get('name', 'sgd'), ('sgd', 'adam'))
  _one_of('optimizer.weight_decay_on', o.get('weight_decay_on', 'all'), ('all', 'kernels'))


def _one_of(name, value, allowed):
  _require(value in allowed, f'{name} must be one of {", ".join(map(str, allowed))}; got {value!r}')


def _check_fast_and_learned(config):
  """The settings of the single-step and learned-strategy methods (`single_step`, `las_at`) and of AWP."""
  method = config.method
  needs = lambda field: _require(field in config, f'method {method!r} needs config.{field}')
  if 'awp' in config:
    _require(config.awp.gamma == 0 or method not in ('fgsm_rs', 'fgsm_ga', 'free_at', 'fgsm_sdi', 'fgsm_pgi'),
             f'awp.gamma > 0 applies to the search-based methods and LAS-AT, not {method!r}')
  if method == 'fgsm_rs':
    _require(config.attack.steps == 1, f'fgsm_rs takes one attack step (attack.steps=1), got {config.attack.steps}')
  if method in ('fgsm_rs', 'fgsm_ga', 'fgsm_sdi', 'fgsm_pgi'):
    _one_of('attack.model_mode', config.attack.get('model_mode', 'train'), ('train', 'eval'))
  if method == 'fgsm_ga':
    needs('grad_align')
  if method == 'free_at':
    needs('free')
  if method == 'fgsm_sdi':
    needs('sdi')
  if method == 'fgsm_pgi':
    needs('pgi')
    _one_of('pgi.prior', config.pgi.prior, ('bp', 'ep', 'mep'))
    _one_of('pgi.momentum_input', config.pgi.momentum_input, ('sign', 'l1'))
    _one_of('pgi.reg_reduction', config.pgi.reg_reduction, ('sum_classes', 'mean_classes'))
    _one_of('pgi.start', config.pgi.start, ('vertex', 'uniform'))
  if method.startswith('las_'):
    needs('las')
    l = config.las
    _require(models.is_known(l.policy_model), f'unknown las.policy_model {l.policy_model!r}; choose one of '
             f'{models.KNOWN_MODELS}')
    heads = ('eps', 'step', 'steps') + (('beta',) if method == 'las_trades' else ())
    for head in ('eps', 'step', 'steps', 'beta'):
      choices = l.get(f'{head}_choices', ())
      _require((len(choices) > 0 or head not in heads) and all(c in Range(0, open_low=True) for c in choices),
               f'las.{head}_choices must be {"non-empty and " if head in heads else ""}positive, got {tuple(choices)}')


def check(config):
  """Raises ConfigError (a one-line message) for the first problem found in `config`."""
  _require(config.method in methods.METHODS,
           f'unknown method {config.method!r}; choose one of {", ".join(methods.METHODS)}')
  _require(models.is_known(config.model.name),
           f'unknown model {config.model.name!r}; choose one of {models.KNOWN_MODELS}')
  _require(config.model.dtype in ('float32', 'bfloat16'),
           f'model.dtype must be float32 or bfloat16, got {config.model.dtype!r}')
  _require(len(config.model.mean) == len(config.model.std),
           'model.mean and model.std must have the same length (empty for no normalisation)')
  _require(config.bn_stats in ('global', 'per_device'),
           f"bn_stats must be 'global' or 'per_device', got {config.bn_stats!r}")
  _require(all(v in Range(0, open_low=True) for v in config.model.std), f'model.std values must be > 0, got '
           f'{tuple(config.model.std)}')
  _require(all(v in Range(-1, 1) for v in config.model.mean), f'model.mean values must be in [-1, 1], got '
           f'{tuple(config.model.mean)}')
  _check_ranges(config)
  _check_attack('attack', config.attack)
  _check_attack('eval', config.eval)
  _check_schedule('lr_schedule', config.lr_schedule, lowest=0)
  _one_of('lr_interpolation', config.lr_interpolation, ('constant', 'linear'))
  _check_optimizer(config.optimizer)
  _check_method_settings(config)
  devices = jax.device_count()
  for name, size in (('batch_size', config.batch_size), ('eval.batch_size', config.eval.batch_size)):
    _require(size >= devices and size % devices == 0,
             f'{name} must be a positive multiple of the device count ({devices}), got {size}')
  try:
    data.check(config.data)
  except data.DataError as e:
    raise ConfigError(str(e)) from None


# What fixes the shapes of a run's train state: a checkpoint written under other values cannot be resumed.
# The device count is not among them: per-example memories are refitted on restore (`checkpoint._refit_rows`).
STATE_FIELDS = ('method', 'model.name', 'data.source', 'data.name', 'data.num_train', 'batch_size', 'optimizer.name',
                'pgi.prior', 'las.policy_model')


def _field(config, dotted):
  for part in dotted.split('.'):
    config = config.get(part) if hasattr(config, 'get') else None
  return config


def check_workdir(config, workdir):
  """Raises ConfigError when `workdir` holds checkpoints of a run whose train state has other shapes."""
  settings = os.path.join(workdir, 'config.json')
  if not (os.path.isfile(settings) and checkpoint.finished_steps(workdir)):
    return
  with open(settings) as f:
    previous = json.load(f)
  fields = {name: (_field(previous, name), _field(config, name)) for name in STATE_FIELDS}
  fields['ema_decay > 0'] = (bool(previous.get('ema_decay')), config.ema_decay > 0)
  for name, (was, now) in fields.items():
    _require(was == now, f'{workdir} holds checkpoints of a run with {name} {was!r}, not {now!r}: resume with the '
             'same settings or use another --workdir')


def check_against_data(config, num_train, num_evaluated, image_shape):
  """Raises ConfigError for sizes the loaded data cannot fill: an epoch needs one whole batch, and padding an eval
  batch or an image far beyond the data only allocates."""
  _require(config.batch_size <= num_train,
           f'batch_size {config.batch_size} exceeds the {num_train} training examples (an epoch is whole batches)')
  devices = jax.device_count()
  whole = -(-num_evaluated // devices) * devices
  _require(config.eval.batch_size <= whole, f'eval.batch_size {config.eval.batch_size} exceeds the {num_evaluated} '
           f'evaluated examples; at most {whole}')
  side = max(image_shape[:2])
  _require(config.data.crop_padding <= side,
           f'data.crop_padding {config.data.crop_padding} exceeds the image side ({side}); at most {side}')


def check_evaluation(config):
  """Raises ConfigError for an evaluation config (configs/eval.py) that cannot run."""
  _require(config.checkpoint, '--config.checkpoint is required: a training workdir or a PyTorch .pt / .pth file')
  _require(jax.process_count() == 1, 'evaluation runs in one process: run it on one host, without --distributed')
  is_torch = config.checkpoint.endswith(interop.TORCH_SUFFIXES)
  settings = os.path.join(config.checkpoint, 'config.json')
  if is_torch:
    _require(os.path.isfile(config.checkpoint), f'{config.checkpoint} not found')
    _require(importlib.util.find_spec('torch') is not None,
             f'reading {config.checkpoint} needs PyTorch: pip install "advjax[torch]"')
    _require(interop.has_layout(config.model.name),
             f'--config.model.name must name the network of {config.checkpoint}, got {config.model.name!r}; one of '
             f'{interop.LAYOUTS}')
  else:
    _require(os.path.isfile(settings), f'{settings} not found: --config.checkpoint must be a training workdir')
    _require(checkpoint.finished_steps(config.checkpoint),
             f'no checkpoint in {os.path.join(config.checkpoint, "checkpoints")}')
  _one_of('norm', config.norm, attacks.parts.AUTOATTACK_NORMS)
  budget = Range(0, 1, open_low=True) if config.norm == 'linf' else Range(0, open_low=True)
  for name in ('eps', 'step_size'):   # -1: the protocol's
    _require(config[name] == -1 or config[name] in budget,
             f'{name} must be -1 (the protocol\'s) or {budget}, got {config[name]!r}')
  _require(config.num_examples == -1 or config.num_examples in AT_LEAST_1,
           f'num_examples must be -1 (all) or >= 1, got {config.num_examples!r}')
  _require(config.seed in AT_LEAST_0, f'seed must be >= 0, got {config.seed!r}')
  _require(config.protocol in evaluate.PROTOCOLS,
           f'unknown protocol {config.protocol!r}; choose one of {", ".join(evaluate.PROTOCOLS)}')
  _require(config.norm == 'linf' or config.protocol in evaluate.CASCADE_PROTOCOLS + ('custom',),
           f"protocol {config.protocol!r} is L-inf only; under {config.norm} use aa_standard or custom")
  _require(config.mode in ('', 'cascade', 'individual'),
           f"mode must be '' (the protocol's), 'cascade' or 'individual', got {config.mode!r}")
  if config.protocol == 'custom':
    _require(config.eps > 0, "protocol 'custom' needs --config.eps > 0")
    try:
      _require(evaluate.custom_attacks(config.attacks, config.eps, 1.0, norm=config.norm),
               "protocol 'custom' needs --config.attacks")
    except ValueError as e:
      raise ConfigError(str(e)) from None
  devices = jax.device_count()
  _require(config.batch_size >= devices and config.batch_size % devices == 0,
           f'batch_size must be a positive multiple of the device count ({devices}), got {config.batch_size}')
  if is_torch:
    data_config = evaluate.torch_data_config(config)
  else:
    with open(settings) as f:
      trained = ml_collections.ConfigDict(json.load(f))
    _require(config.weights in ('raw', 'ema'), f"weights must be 'raw' or 'ema', got {config.weights!r}")
    _require(config.weights == 'raw' or trained.get('ema_decay', 0) > 0,
             "weights='ema' needs a run trained with ema_decay > 0")
    data_config = trained.data
    if config.data_dir:
      data_config.data_dir = config.data_dir
  try:
    data.check(data_config)
  except data.DataError as e:
    raise ConfigError(str(e)) from None
