"""Robust evaluation as the papers report it: named protocols of attacks, run data-parallel over a test set.

`evaluate(logits_fn, params, images, labels, protocol)` works for any `logits_fn(params, x) -> logits`; `run(config)`
evaluates an advjax checkpoint (`python -m advjax.main --config=configs/eval.py --config.checkpoint=DIR`).

A protocol is a list of named attacks. Each attack is scored alone (accuracy under it), and cumulatively: a point
counts as robust only if no attack so far broke it, which for `aa_standard` is AutoAttack's cascade and its final
number. Points misclassified when clean are robust under nothing.
"""
import functools
import importlib.metadata
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from advjax import attacks, checkpoint, data, interop, metrics, models
from advjax import train_state as ts
from advjax.attacks.auto_attack import VERSIONS, standard_stages
from advjax.data import pipeline


# Scored as AutoAttack is, a cascade; the papers' protocols report each attack alone.
CASCADE_PROTOCOLS = ('aa_standard', 'aa_plus', 'aa_rand')


class ProtocolError(ValueError):
  """A protocol the model cannot be evaluated under (one line), found before anything is compiled."""


def _pgd(eps, step_size, steps, init, loss=attacks.losses.cross_entropy, norm='linf'):
  return functools.partial(attacks.pgd, eps=eps, step_size=step_size, steps=steps, init=init, loss=loss, norm=norm)


@functools.lru_cache(maxsize=64)   # the same attack objects for the same protocol: `_attack_fn` compiles once
def protocol_attacks(name, eps=None, norm='linf', randomized=False):
  """(eps, ((attack name, attack), ...)) of a named protocol; `eps` overrides the protocol's radius. The papers'
  protocols are L-inf; AutoAttack takes `norm` (its L2 radius defaults to RobustBench's 0.5, L1 to 12, the
  AutoAttack paper's CIFAR-10 radius). `randomized` (a model `logits_fn(params, x, key)`): only 'aa_rand'."""
  if norm != 'linf' and name not in CASCADE_PROTOCOLS:
    raise ProtocolError(f"protocol {name!r} is L-inf only; under {norm} use aa_standard or custom")
  if randomized and name != 'aa_rand':
    raise ProtocolError(f"a randomised model is evaluated with aa_rand (APGD with EoT), not {name!r}")
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
  if name in CASCADE_PROTOCOLS:
    eps = eps or DEFAULT_EPS[norm]
    version = VERSIONS[name.removeprefix('aa_')]
    return eps, version(eps, norm=norm, **({'randomized': True} if randomized else {}))
  raise ValueError(f'unknown protocol {name!r}; choose one of {", ".join(PROTOCOLS)} (custom: a list of attacks)')


PROTOCOLS = ('dat', 'trades', 'trades_rs', 'mart', 'jia', 'aa_standard', 'aa_plus', 'aa_rand', 'custom')
DEFAULT_EPS = {'linf': 8 / 255, 'l2': 0.5, 'l1': 12.0}   # AutoAttack's radii by norm


@functools.lru_cache(maxsize=64)
def custom_attacks(spec, eps, step_size, random_start=True, norm='linf'):
  """Attacks from a comma-separated list: fgsm, pgd-<K>, cw-<K> (margin, kappa 50), apgd-ce, apgd-t, fab-t, square,
  under `norm` (L1: only AutoAttack's four).

  PGD and CW take `step_size` and start uniformly in the ball when `random_start`, FGSM too.
  """
  init = 'uniform' if random_start else 'none'
  named = standard_stages(eps, norm=norm)
  if norm in attacks.parts.NORMS:
    named = (('FGSM', functools.partial(attacks.fgsm, eps=eps, init=init, norm=norm)), *named)
  fixed = {name.lower(): (name, attack) for name, attack in named}   # rows named as in the protocols' tables
  stages = []
  for name in filter(None, (part.strip().lower() for part in spec.split(','))):
    kind, _, steps = name.partition('-')
    if name in fixed:
      stages.append(fixed[name])
    elif kind in ('pgd', 'cw') and steps.isdigit() and norm in attacks.parts.NORMS:
      loss = attacks.losses.margin(50.0) if kind == 'cw' else attacks.losses.cross_entropy
      stages.append((name.upper(), _pgd(eps, step_size, int(steps), init, loss, norm)))
    else:
      gradient = 'pgd-<K>, cw-<K>, ' if norm in attacks.parts.NORMS else ''
      raise ValueError(f'unknown attack {name!r} under {norm}; use {gradient}{", ".join(fixed)}')
  return tuple(stages)


@functools.lru_cache(maxsize=64)
def _attack_fn(logits_fn, attack, mesh, norm, randomized=False):
  """Jitted, data-parallel: per example, (correct under `attack` (None: natural), the `norm` of x_adv - x, x_adv
  finite and in [0, 1]). `randomized`: `logits_fn(params, x, key)`, and the check is one draw per example.

  Cached: evaluating several models of one architecture with the same `logits_fn` and attack objects compiles once.
  """
  def per_device(params, batch, key):
    fn = functools.partial(logits_fn, params)
    x, y = batch['image'], batch['label']
    keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, batch['index'])
    predict = fn
    if randomized:   # the check's draws from a stream of their own
      keys, check_keys = attacks.parts.split(keys)
      predict = attacks.parts.one_draw(fn, check_keys)
    x_adv = x
    if attack is not None:
      x_adv = attack(fn, x, y, keys).x_adv
    flat, delta = x_adv.reshape(x.shape[0], -1), (x_adv - x).reshape(x.shape[0], -1)
    valid = (jnp.isfinite(flat) & (flat >= 0) & (flat <= 1)).all(-1)
    size = attacks.parts.norm_of(delta, norm)
    return predict(x_adv).argmax(-1) == y, size, valid

  return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P(ts.AXIS), P()), out_specs=P(ts.AXIS)))


def check_classes(stages, num_classes):
  """AutoAttack's `check_n_classes`: raises ProtocolError where a loss needs more classes than the model has;
  warnings where a targeted attack will run fewer targets than asked (capped at C - 1)."""
  warnings = []
  for name, attack in stages:
    needs = {'APGD-T': 4, 'APGD-DLR': 3}.get(name)
    if needs and num_classes < needs:
      raise ProtocolError(f'{name} needs at least {needs} classes (its DLR loss ranks {needs - 1} logits), the model '
                          f'has {num_classes}: leave it out (protocol custom)')
    targets = getattr(attack, 'keywords', {}).get('n_targets')   # a functools.partial of standard_stages
    if targets and targets > num_classes - 1:
      warnings.append(f'{name} asks for {targets} target classes, the model has {num_classes - 1} others: it runs '
                      f'{num_classes - 1}')
  return warnings


def differentiates(fn, *args):
  """Whether tracing fn(*args) runs JAX's autodiff, as the official `check_dynamic` watches a PyTorch forward for
  calls of `grad` / `backward` (a defence that optimises at test time). A fresh function is traced, so jit's cache
  is not consulted for it; a caller's own jitted function already traced at these shapes is not looked into."""
  autodiff = os.path.join('jax', '_src', 'interpreters', 'ad.py')
  calls = []

  def watch(frame, event, _):
    if event == 'call' and frame.f_code.co_filename.endswith(autodiff):
      calls.append(frame.f_code.co_name)
  previous = sys.gettrace()
  sys.settrace(watch)
  try:
    jax.make_jaxpr(lambda *a: fn(*a))(*args)
  finally:
    sys.settrace(previous)
  return bool(calls)


def sanity_warnings(logits_fn, params, x, y, forwards=5, tolerance=1e-4, randomness=True):
  """AutoAttack's checks on a sample (fra31/auto-attack a392200, autoattack/checks.py): a randomised model (5
  forwards differ, in predictions or in L2-normalised logits beyond 1e-4: a key-less logits_fn can only differ
  through hidden state or host callbacks; not with `randomness=False`, as the official skips it for 'rand'),
  probabilities instead of logits, points whose loss gradient is exactly 0, a dynamic model (its forward
  differentiates)."""
  warnings = []
  if differentiates(logits_fn, params, x):
    warnings.append('the forward differentiates (a dynamic, test-time optimising defence?): AutoAttack may be '
                    'insufficient; use an adaptive attack')
  outputs = [np.asarray(logits_fn(params, x)) for _ in range(forwards if randomness else 1)]
  normalised = [o / (np.linalg.norm(o, axis=-1, keepdims=True) + 1e-10) for o in outputs]
  if (len({int((o.argmax(-1) == y).sum()) for o in outputs}) > 1
      or max(np.linalg.norm(a - b, axis=-1).max() for a in normalised for b in normalised) > tolerance):
    warnings.append(f'the model is randomised ({forwards} forwards differ): use aa_rand (EoT), with the model as '
                    'logits_fn(params, x, key)')
  first = outputs[0]
  if first.max() < 1 + 1e-5 and first.min() > -1e-5 and np.all(np.abs(first.sum(-1) - 1) < 1e-5):
    warnings.append('outputs look like probabilities, not logits: margin and DLR losses assume logits')
  cross_entropy = lambda v: optax.softmax_cross_entropy_with_integer_labels(logits_fn(params, v), y).sum()
  grad = jax.jit(jax.grad(cross_entropy))(x)   # jitted: eager JVPs of sharded weights fail on a device mesh
  zero = int((np.abs(np.asarray(grad)).reshape(len(x), -1).sum(-1) == 0).sum())
  if zero:
    warnings.append(f'{zero} of {len(x)} sampled points have a zero loss gradient: gradient-based attacks are '
                    'unreliable on them')
  return warnings


def square_warning(rows):
  """AutoAttack's `check_square_sr`: Square lowered the robust accuracy by more than 0.2 points below the best of
  the other attacks (and clean), which hints at gradient masking; only when other attacks ran."""
  others = [r['cumulative'] for r in rows if r['attack'] != 'Square']
  square = [r['cumulative'] for r in rows if r['attack'] == 'Square']
  if square and len(others) > 1 and square[0] < min(others) - 0.2:
    return [f'Square lowered the robust accuracy by {min(others) - square[0]:.2f} points: the gradient attacks may '
            'be masked; run Square with more queries and restarts, or an adaptive attack']
  return []


class _Saved:
  """The per-batch results of a killed evaluation, kept in `path` (JSON, rewritten atomically) so that a rerun with
  the same settings goes on after the last finished batch."""

  def __init__(self, path, settings):
    self.path, self.settings, self.stages = path, settings, {}
    if path and os.path.exists(path):
      with open(path) as f:
        saved = json.load(f)
      if saved['settings'] == settings:
        self.stages = saved['stages']
        metrics.log(f'Resuming the evaluation from {path}: {sum(len(v["correct"]) for v in self.stages.values())} '
                    'attacked examples done.')

  def results(self, name):
    return self.stages.setdefault(name, dict(correct=[], delta=[], valid=[], seconds=0.0))

  def save(self):
    if self.path:
      metrics.write_atomically(self.path, json.dumps(dict(settings=self.settings, stages=self.stages)))


def _chunks(indices, batch_size, devices):
  """(start, positions) batches over `indices`: whole batches of `batch_size`, then the rest in the largest of
  batch_size / 2, / 4, / 8 (multiples of the device count) that it fills, the last padded with -1 to the smallest.
  The survivors of a cascade are rarely a whole number of batches; each size compiles once."""
  sizes = [batch_size]
  while len(sizes) < 4 and sizes[-1] > devices:
    sizes.append(-(-sizes[-1] // 2 // devices) * devices)
  start = 0
  while start < len(indices):
    left = len(indices) - start
    size = max([s for s in sizes if s <= left], default=sizes[-1])
    chunk = indices[start:start + size]
    yield start, np.concatenate([chunk, np.full(size - len(chunk), -1)]).astype(np.int64)
    start += size


def _run_stage(fn, params, loader, indices, key, results, save):
  """Appends to `results` the per-example (correct, delta, valid) of `fn` on `indices`, batch by batch, from the
  first batch `results` does not hold yet; `save()` after each."""
  for start, positions in _chunks(indices, loader.local_batch_size, jax.device_count()):
    if start < len(results['correct']):
      continue
    started = time.perf_counter()
    outs = jax.device_get(fn(params, loader.batch(positions, None), key))
    for name, out in zip(('correct', 'delta', 'valid'), outs):
      results[name] += np.asarray(out)[:len(indices) - start].tolist()
    results['seconds'] += time.perf_counter() - started
    save()


def evaluate(logits_fn, params, images, labels, protocol='aa_standard', *, eps=None, batch_size=500, key=None,
             mesh=None, individual=None, state_path=None, fingerprint=None, norm='linf', randomized=False):
  """Robust accuracy under `protocol` over uint8 `images` (N, H, W, C) and `labels`.

  `protocol` is a name from PROTOCOLS or a sequence of (name, attack) pairs (e.g. `custom_attacks(...)`, with `eps`).
  As a cascade (AutoAttack's protocols, and `individual=False`), each attack runs only on the points every earlier
  one left robust, gathered into full batches (the last padded and masked), as the official
  `run_standard_evaluation`; `individual=True` (the default for the papers' protocols, whose tables report each
  attack alone) runs each on every point classified correctly, as `run_standard_evaluation_individual`. Each
  example's random draws depend on its index, not on its batch. `state_path`: a JSON file rewritten after every
  batch, from which a rerun with the same settings (and the same `fingerprint` of the weights) goes on.
  `randomized`: `logits_fn(params, x, key)` is a randomised model (protocol 'aa_rand'); each check is one draw.
  Returns dict(eps, examples, mode, rows=[dict(attack, attacked, cumulative, seconds, and accuracy alone when
  individual)], robust (per-example flags), broken_by (per example, the row of the first attack that broke it: 0
  misclassified when clean, -1 robust), max_perturbation (in `norm`, over the adversarial points found),
  invalid_points (NaN or outside [0, 1]), warnings).
  """
  mesh = mesh or ts.make_mesh()
  key = jax.random.key(0) if key is None else key
  eps, stages = (protocol_attacks(protocol, eps, norm, randomized) if isinstance(protocol, str)
                 else (eps, tuple(protocol)))
  if individual is None:
    individual = protocol not in CASCADE_PROTOCOLS
  sample = jnp.asarray(images[:min(len(labels), batch_size)], jnp.float32) / 255
  forward = (lambda p, v: logits_fn(p, v, jax.random.key(0))) if randomized else logits_fn   # one draw
  warnings = check_classes(stages, jax.eval_shape(forward, params, sample).shape[-1])   # before any compile
  params = jax.device_put(params, NamedSharding(mesh, P()))
  warnings += sanity_warnings(forward, params, sample, np.asarray(labels[:len(sample)]),
                              randomness=protocol != 'aa_rand')
  loader = pipeline.Loader(mesh, images, labels, batch_size, process_index=0, process_count=1)
  saved = _Saved(state_path, dict(
      attacks=[name for name, _ in stages], eps=eps, norm=norm, randomized=randomized, examples=len(labels),
      individual=individual, batch_size=batch_size, key=np.asarray(jax.random.key_data(key)).tolist(),
      labels=int(np.asarray(labels, np.int64) @ np.arange(len(labels))), checkpoint=fingerprint))
  rows, robust, natural = [], np.ones(len(labels), bool), None
  broken_by = np.full(len(labels), -1)
  worst, invalid = 0.0, 0
  for stage, (name, attack) in enumerate((('natural', None),) + tuple(stages)):
    attacked = np.flatnonzero(natural if individual and natural is not None else robust)
    results = saved.results(name)
    _run_stage(_attack_fn(logits_fn, attack, mesh, norm, randomized), params, loader, attacked,
               jax.random.fold_in(key, stage), results, saved.save)
    correct = np.asarray(results['correct'], bool)
    if stage and not correct.all():
      worst = max(worst, float(np.max(np.asarray(results['delta'])[~correct])))
      invalid += int((~np.asarray(results['valid'], bool)[~correct]).sum())
    broken_by[attacked[~correct & (broken_by[attacked] < 0)]] = stage
    robust[attacked] &= correct
    natural = robust.copy() if natural is None else natural
    rows.append(dict(attack=name, attacked=len(attacked), cumulative=100 * robust.mean(), seconds=results['seconds']))
    if individual:
      rows[-1]['accuracy'] = 100 * correct.sum() / len(labels)
  return dict(eps=eps, norm=norm, examples=len(labels), mode='individual' if individual else 'cascade', rows=rows,
              robust=robust.tolist(), broken_by=broken_by.tolist(), max_perturbation=worst, invalid_points=invalid,
              warnings=warnings + square_warning(rows))


def markdown_table(result):
  alone = result['mode'] == 'individual'
  lines = ['| attack | attacked | ' + ('accuracy (%) | ' if alone else '') + 'robust to all so far (%) | time (s) |',
           '|---|---|' + ('---|' if alone else '') + '---|---|']
  lines += [f'| {r["attack"]} | {r["attacked"]} | ' + (f'{r["accuracy"]:.2f} | ' if alone else '')
            + f'{r["cumulative"]:.2f} | {r["seconds"]:.1f} |' for r in result['rows']]
  return '\n'.join(lines)


def _trained_run(config):
  """(dataset, model, variables, default report prefix, model name) of the latest checkpoint of a training
  workdir."""
  with open(os.path.join(config.checkpoint, 'config.json')) as f:
    trained = ml_collections.ConfigDict(json.load(f))
  if config.data_dir:
    trained.data.data_dir = config.data_dir
  trained.data.num_test = config.num_examples
  dataset = data.load(trained.data)
  model = models.from_config(trained.model, dataset.num_classes)   # eval mode only: no BatchNorm axis
  state = checkpoint.latest_state(config.checkpoint)
  params = state['ema'] if config.weights == 'ema' else dict(params=state['params'], batch_stats=state['batch_stats'])
  return dataset, model, params, os.path.join(config.checkpoint, f'eval_{config.protocol}'), trained.model.name


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
  return dataset, model, params, f'{os.path.splitext(config.checkpoint)[0]}_eval_{config.protocol}', config.model.name


def eps_string(eps):
  """ε as RobustBench writes it: '8/255' for a multiple of 1/255 that has no short decimal form, else the number."""
  short = f'{eps:.6g}'
  if len(short) > 6 and abs(eps * 255 - round(eps * 255)) < 1e-6:
    return f'{round(eps * 255)}/255'
  return short


THREAT_MODELS = {'linf': 'Linf', 'l2': 'L2', 'l1': 'L1'}   # RobustBench's names (and AutoAttack's L1)


def robustbench_entry(result, *, name, dataset, architecture, version, seed):
  """A RobustBench `model_info`-style entry (accuracies as strings of percentages with 2 decimals), and what the
  number depends on: threat model, examples, AutoAttack version, seed, advjax version."""
  rows = result['rows']
  return dict(name=name, dataset=dataset, architecture=architecture, threat_model=THREAT_MODELS[result['norm']],
              eps=eps_string(result['eps']), clean_acc=f'{rows[0]["cumulative"]:.2f}',
              autoattack_acc=f'{rows[-1]["cumulative"]:.2f}', n_examples=result['examples'],
              autoattack_version=version, seed=seed, advjax_version=importlib.metadata.version('advjax'))


def _checkpoint_identity(config, is_torch):
  """What the evaluated weights are: a rerun goes on from a saved state only for the same ones."""
  if is_torch:
    stat = os.stat(config.checkpoint)
    return [os.path.abspath(config.checkpoint), stat.st_size, stat.st_mtime_ns]
  return [os.path.abspath(config.checkpoint), checkpoint.finished_steps(config.checkpoint)[-1], config.weights]


def run(config):
  """Evaluates `config.checkpoint` (a training workdir's latest checkpoint, or a PyTorch checkpoint file) under
  `config.protocol`: writes <output>.md (the table), .json (rows and per-example robust flags) and, for AutoAttack,
  <output>_entry.json; a killed evaluation goes on from <output>_state.json when rerun."""
  is_torch = config.checkpoint.endswith(interop.TORCH_SUFFIXES)
  dataset, model, params, default_out, architecture = (_torch_checkpoint if is_torch else _trained_run)(config)
  logits_fn = lambda variables, x: model.apply(variables, x, train=False)
  eps = config.eps if config.eps > 0 else None
  protocol = config.protocol
  if protocol == 'custom':
    protocol = custom_attacks(config.attacks, eps, config.step_size if config.step_size > 0 else eps / 4,
                              config.random_start, config.norm)
  out = config.output or default_out
  state_path = f'{out}_state.json'   # kept while it runs: a rerun on the same weights goes on from it
  result = evaluate(logits_fn, params, dataset.test_images, dataset.test_labels, protocol, eps=eps,
                    batch_size=config.batch_size, key=jax.random.key(config.seed),
                    individual={'': None, 'cascade': False, 'individual': True}[config.mode], state_path=state_path,
                    fingerprint=_checkpoint_identity(config, is_torch), norm=config.norm)
  table = markdown_table(result)
  weights = '' if is_torch else f' ({config.weights} weights)'
  with open(out + '.md', 'w') as f:
    f.write(f'{config.protocol} protocol ({result["mode"]}), {config.norm} eps {result["eps"]:.5f}, '
            f'{result["examples"]} test examples of {dataset.name}, checkpoint {config.checkpoint}{weights}\n\n'
            f'{table}\n')
  with open(out + '.json', 'w') as f:
    json.dump(result, f, indent=1)
  written = [f'{out}.md', f'{out}.json']
  if config.protocol in CASCADE_PROTOCOLS:
    entry = robustbench_entry(result, name=os.path.basename(os.path.normpath(config.checkpoint)), dataset=dataset.name,
                              architecture=architecture,
                              version=config.protocol.removeprefix('aa_'), seed=config.seed)
    with open(out + '_entry.json', 'w') as f:
      json.dump(entry, f, indent=2)
    written.append(f'{out}_entry.json')
  if os.path.exists(state_path):   # finished: a rerun evaluates afresh
    os.remove(state_path)
  metrics.log(f'{config.protocol} protocol ({result["mode"]}), {config.norm} eps {result["eps"]:.5f}, '
              f'{result["examples"]} examples:\n{table}\nLargest {config.norm} perturbation '
              f'{result["max_perturbation"]:.5f}, {result["invalid_points"]} adversarial points NaN or outside [0, 1].')
  for warning in result['warnings']:
    metrics.log(f'Warning: {warning}')
  metrics.log(f'Written to {", ".join(written)}.')
  return result
