"""Robust evaluation as the papers report it: named protocols of attacks, run data-parallel over a test set.

`evaluate(logits_fn, params, images, labels, protocol)` works for any `logits_fn(params, x) -> logits`; `run(config)`
evaluates an advjax checkpoint (`python -m advjax.main --config=configs/eval.py --config.checkpoint=DIR`).

A protocol is a list of named attacks. Each attack is scored alone (accuracy under it), and cumulatively: a point
counts as robust only if no attack so far broke it, which for `aa_standard` is AutoAttack's cascade and its final
number. Points misclassified when clean are robust under nothing.
"""
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from advjax import attacks, checkpoint, data, interop, metrics, models
from advjax import train_state as ts
from advjax.attacks.auto_attack import standard_stages
from advjax.data import pipeline


def _pgd(eps, step_size, steps, init, loss=attacks.losses.cross_entropy):
  return functools.partial(attacks.pgd, eps=eps, step_size=step_size, steps=steps, init=init, loss=loss)


def protocol_attacks(name, eps=None):
  """(eps, ((attack name, attack), ...)) of a named protocol; `eps` overrides the protocol's radius."""
  cw = attacks.losses.margin(50.0)   # FAT's CW-inf: PGD on the hinged margin, kappa 50
  if name == 'dat':       # FAT Table 1 / DAT: eps 0.031, step eps/4, uniform start for every attack
    eps = eps or 0.031
    return eps, (('FGSM', functools.partial(attacks.fgsm, eps=eps, init='uniform')),
                 ('PGD-20', _pgd(eps, eps / 4, 20, 'uniform')), ('CW-30', _pgd(eps, eps / 4, 30, 'uniform', cw)))
  if name in ('trades', 'trades_rs'):   # FAT Tables 2-3: step 0.003; README numbers without a start ('trades')
    eps, init = eps or 0.031, 'uniform' if name == 'trades_rs' else 'none'
    return eps, (('FGSM', functools.partial(attacks.fgsm, eps=eps, init=init)),
                 ('PGD-20', _pgd(eps, 0.003, 20, init)), ('CW-30', _pgd(eps, 0.003, 30, init, cw)))
  if name == 'mart':      # FAT Table 4 / MART: eps 8/255, step eps/10, random start, CW = PGD-30 on the margin
    eps = eps or 8 / 255
    return eps, (('FGSM', functools.partial(attacks.fgsm, eps=eps)), ('PGD-20', _pgd(eps, eps / 10, 20, 'uniform')),
                 ('CW-30', _pgd(eps, eps / 10, 30, 'uniform', cw)))
  if name == 'jia':        # the Jia et al. test scripts (LAS-AT, FGSM-SDI, FGSM-PGI): step 2/255, one start
    eps = eps or 8 / 255
    step = 2 / 255
    return eps, (('FGSM', functools.partial(attacks.fgsm, eps=eps)),
                 *((f'PGD-{k}', _pgd(eps, step, k, 'uniform')) for k in (10, 20, 50)),
                 ('CW-20', _pgd(eps, step, 20, 'uniform', attacks.losses.margin(None))))
  if name == 'aa_standard':
    eps = eps or 8 / 255
    return eps, standard_stages(eps)
  raise ValueError(f'unknown protocol {name!r}; choose one of {", ".join(PROTOCOLS)} (custom: a list of attacks)')


PROTOCOLS = ('dat', 'trades', 'trades_rs', 'mart', 'jia', 'aa_standard', 'custom')


def custom_attacks(spec, eps, step_size, random_start=True):
  """Attacks from a comma-separated list: fgsm, pgd-<K>, cw-<K> (margin, kappa 50), apgd-ce, apgd-t, fab-t, square.

  PGD and CW take `step_size` and start uniformly in the ball when `random_start`, FGSM too.
  """
  init = 'uniform' if random_start else 'none'
  named = (('FGSM', functools.partial(attacks.fgsm, eps=eps, init=init)), *standard_stages(eps))
  fixed = {name.lower(): (name, attack) for name, attack in named}   # rows named as in the protocols' tables
  stages = []
  for name in filter(None, (part.strip().lower() for part in spec.split(','))):
    kind, _, steps = name.partition('-')
    if name in fixed:
      stages.append(fixed[name])
    elif kind in ('pgd', 'cw') and steps.isdigit():
      loss = attacks.losses.margin(50.0) if kind == 'cw' else attacks.losses.cross_entropy
      stages.append((name.upper(), _pgd(eps, step_size, int(steps), init, loss)))
    else:
      raise ValueError(f'unknown attack {name!r}; use fgsm, pgd-<K>, cw-<K>, {", ".join(fixed)}')
  return tuple(stages)


@functools.lru_cache(maxsize=64)
def _correct_fn(logits_fn, attack, mesh):
  """Jitted, data-parallel: per-example correctness of the model under `attack` (None: natural).

  Cached: evaluating several models of one architecture with the same `logits_fn` and attack objects compiles once.
  """
  def per_device(params, batch, key):
    fn = functools.partial(logits_fn, params)
    x, y = batch['image'], batch['label']
    if attack is not None:
      keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, batch['index'])
      x = attack(fn, x, y, keys).x_adv
    return fn(x).argmax(-1) == y

  return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(ts.AXIS), P()), out_specs=P(ts.AXIS)))


def sanity_warnings(logits_fn, params, x, per_attack):
  """AutoAttack-style checks: a randomised model, probabilities for logits, Square beating the gradient attacks."""
  warnings = []
  first, second = logits_fn(params, x), logits_fn(params, x)
  if not np.allclose(first, second):
    warnings.append('the model is randomised (two forwards differ): use an EoT-style evaluation')
  if np.allclose(np.asarray(first).sum(-1), 1, atol=1e-3) and float(first.min()) >= 0:
    warnings.append('outputs look like probabilities, not logits: margin and DLR losses assume logits')
  if 'Square' in per_attack:
    gradient_based = [v for k, v in per_attack.items() if k not in ('natural', 'Square')]
    square_only = per_attack['natural'] & ~per_attack['Square'] & np.all(gradient_based, axis=0)
    if square_only.sum() > 0.005 * len(square_only):
      warnings.append(f'Square broke {int(square_only.sum())} points that the gradient attacks did not: a sign of '
                      'gradient masking')
  return warnings


def evaluate(logits_fn, params, images, labels, protocol='aa_standard', *, eps=None, batch_size=500, key=None,
             mesh=None):
  """Accuracy under each attack of `protocol` and cumulatively, over uint8 `images` (N, H, W, C) and `labels`.

  `protocol` is a name from PROTOCOLS or a sequence of (name, attack) pairs (e.g. `custom_attacks(...)`, with `eps`).
  Returns dict(eps, examples, rows=[dict(attack, accuracy, cumulative, seconds)], warnings).
  """
  mesh = mesh or ts.make_mesh()
  key = jax.random.key(0) if key is None else key
  eps, stages = protocol_attacks(protocol, eps) if isinstance(protocol, str) else (eps, tuple(protocol))
  replicated = NamedSharding(mesh, P())
  params = jax.device_put(params, replicated)
  loader = pipeline.Loader(mesh, images, labels, batch_size, process_index=0, process_count=1)
  per_attack, rows = {}, []
  robust = np.ones(len(labels), bool)
  for stage, (name, attack) in enumerate((('natural', None),) + tuple(stages)):
    correct_fn, stage_key = _correct_fn(logits_fn, attack, mesh), jax.random.fold_in(key, stage)
    started, correct = time.perf_counter(), []
    for batch in loader.batches(loader.eval_positions(), key):
      correct.append(np.asarray(jax.device_get(correct_fn(params, batch, stage_key))))
    per_attack[name] = np.concatenate(correct)[:len(labels)]
    robust &= per_attack[name]
    rows.append(dict(attack=name, accuracy=100 * per_attack[name].mean(), cumulative=100 * robust.mean(),
                     seconds=time.perf_counter() - started))
  sample = jnp.asarray(images[:min(len(labels), batch_size)], jnp.float32) / 255
  return dict(eps=eps, examples=len(labels), rows=rows, robust_indices=np.flatnonzero(robust).tolist(),
              warnings=sanity_warnings(logits_fn, params, sample, per_attack))


def markdown_table(result):
  lines = ['| attack | accuracy (%) | robust to all so far (%) | time (s) |', '|---|---|---|---|']
  lines += [f'| {r["attack"]} | {r["accuracy"]:.2f} | {r["cumulative"]:.2f} | {r["seconds"]:.1f} |'
            for r in result['rows']]
  return '\n'.join(lines)


def _trained_run(config):
  """(dataset, model, variables, default report prefix) of the latest checkpoint of a training workdir."""
  with open(os.path.join(config.checkpoint, 'config.json')) as f:
    trained = ml_collections.ConfigDict(json.load(f))
  if config.data_dir:
    trained.data.data_dir = config.data_dir
  trained.data.num_test = config.num_examples
  dataset = data.load(trained.data)
  model = models.from_config(trained.model, dataset.num_classes)   # eval mode only: no BatchNorm axis
  state = checkpoint.latest_state(config.checkpoint)
  params = state['ema'] if config.weights == 'ema' else dict(params=state['params'], batch_stats=state['batch_stats'])
  return dataset, model, params, os.path.join(config.checkpoint, f'eval_{config.protocol}')


def torch_data_config(config):
  """The data a PyTorch checkpoint is evaluated on: `config.data`, its directory overridden by `config.data_dir`."""
  data_config = ml_collections.ConfigDict(config.data.to_dict())
  if config.data_dir:
    data_config.data_dir = config.data_dir
  return data_config


def _torch_checkpoint(config):
  """The same for a PyTorch checkpoint file, with the network and data the evaluation config names."""
  data_config = torch_data_config(config)
  data_config.num_test = config.num_examples
  dataset = data.load(data_config)
  num_classes = config.model.num_classes if config.model.num_classes > 0 else dataset.num_classes
  model, params = interop.load_torch(config.checkpoint, config.model.name, num_classes,
                                     input_shape=dataset.test_images.shape[1:], mean=tuple(config.model.mean) or None,
                                     std=tuple(config.model.std) or None)
  return dataset, model, params, f'{os.path.splitext(config.checkpoint)[0]}_eval_{config.protocol}'


def run(config):
  """Evaluates `config.checkpoint` (a training workdir's latest checkpoint, or a PyTorch checkpoint file) under
  `config.protocol`."""
  is_torch = config.checkpoint.endswith(interop.TORCH_SUFFIXES)
  dataset, model, params, default_out = (_torch_checkpoint if is_torch else _trained_run)(config)
  logits_fn = lambda variables, x: model.apply(variables, x, train=False)
  eps = config.eps if config.eps > 0 else None
  protocol = config.protocol
  if protocol == 'custom':
    protocol = custom_attacks(config.attacks, eps, config.step_size if config.step_size > 0 else eps / 4,
                              config.random_start)
  result = evaluate(logits_fn, params, dataset.test_images, dataset.test_labels, protocol, eps=eps,
                    batch_size=config.batch_size, key=jax.random.key(config.seed))
  table = markdown_table(result)
  out = config.output or default_out
  if jax.process_index() == 0:
    with open(out + '.md', 'w') as f:
      f.write(f'{config.protocol} protocol, eps {result["eps"]:.5f}, {result["examples"]} test examples of '
              f'{dataset.name}, checkpoint {config.checkpoint}' + ('' if is_torch else f' ({config.weights} weights)') +
              f'\n\n{table}\n')
    with open(out + '.json', 'w') as f:
      json.dump(result, f, indent=1)
  metrics.log(f'{config.protocol} protocol, eps {result["eps"]:.5f}, {result["examples"]} examples:\n{table}')
  for warning in result['warnings']:
    metrics.log(f'Warning: {warning}')
  metrics.log(f'Written to {out}.md and {out}.json')
  return result
