r"""Where a training step's time goes: the step against its parts, and XLA's per-op timings.

For each (method, model) row of a search-based method (an attack and an outer loss: `methods.METHODS`), with
throughput.py's settings (batch 128, eps 8/255, K = 10, FAT tau = 0, random data):
1. Parts, each jitted on its own from advjax's code and timed like the whole step: the attack (eval mode; for FAT
   also its start check, one forward), the outer step (the method's loss in training mode, its gradient and the
   optimiser update), and the whole train step. "Rest" is the step minus the parts.
2. A `jax.profiler` trace of the whole step, its XLA ops summed by kind (convolutions, BatchNorm, ReLU, max-pool,
   random numbers, the compaction's gathers and sorts, the rest), from the HLO metadata of each op. XLA:CPU traces
   every thunk except Eigen's convolutions, so those are reported as the step's time minus the traced ops.

  python benchmarks/profile_step.py --methods=madry,fat,trades --models=small_cnn,resnet18
  python benchmarks/profile_step.py --variant=jax      # advjax before the convolution seam and the XLA:CPU flag

`--variant=jax` gives the zoo `lax.conv_general_dilated` and flax's max-pool and leaves $XLA_FLAGS alone: the code
as it was before (2026-12-01). Timings are the median of --repeats calls.
"""
import argparse
import collections
import glob
import re
import shutil
import statistics
import sys
import tempfile
import time

import throughput  # benchmarks/throughput.py: its configs, data and model setup

VARIANTS = ('advjax', 'jax')


def parse_args():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--methods', default='madry,fat,trades')
  p.add_argument('--models', default='small_cnn,resnet18')
  p.add_argument('--variant', default='advjax', choices=VARIANTS)
  p.add_argument('--batch', type=int, default=128)
  p.add_argument('--repeats', type=int, default=3)
  p.add_argument('--top', type=int, default=8, help='single XLA ops listed per row')
  args = p.parse_args()
  args.dtype, args.config_override = 'float32', []
  return args


ARGS = parse_args()
if ARGS.variant == 'advjax':
  from advjax import xla_flags  # pylint: disable=g-import-not-at-top
  xla_flags.apply()

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
from jax.profiler import ProfileData  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

import loop_body  # noqa: E402  benchmarks/loop_body.py: the variants
from advjax import methods, step as step_lib, train, train_state as ts  # noqa: E402

loop_body.use(ARGS.variant)

# An op's kind, from its HLO metadata op_name (first match wins).
KINDS = (('convolution', r'conv_general_dilated'), ('max-pool', r'max_pool|reduce_window|select_and_scatter'),
         ('BatchNorm', r'_bn/'), ('ReLU', r'relu'), ('random numbers', r'threefry|_normal|_uniform|random_bits'),
         ('gathers and sorts', r'/(gather|scatter|sort|argsort|take)'))


def median_seconds(fn, *args):
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(ARGS.repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def setup(method, model_name):
  config = throughput.load_config(method, model_name, ARGS)
  mesh = ts.make_mesh()
  model = train.build_model(config, throughput.NUM_CLASSES)
  tx = step_lib.make_optimizer(config, steps_per_epoch=throughput.EPOCH_EXAMPLES // config.batch_size)
  state = ts.create_train_state(model, tx, throughput.IMAGE_SHAPE, jax.random.key(0), mesh)
  batch = throughput.random_batches(mesh, config.batch_size, jax.random.key(2))[0]
  return config, mesh, model, tx, state, batch


def parts(config, mesh, model, tx, state, batch):
  """{part: seconds} for the attack, its start check (early-stopped attacks), the outer step and the whole step."""
  method = methods.METHODS[config.method]
  attack, outer_loss, hparams = method.attack(config), method.loss(config), methods.hparams(config, 1)
  key = jax.random.key(1)
  logits_fn = lambda variables: lambda v: model.apply(variables, v, train=False)

  def attack_only(state, batch):
    keys = ts.example_keys(key, state.step, batch['index'])
    return attack(logits_fn(state.variables), batch['image'], batch['label'], keys, hparams).x_adv

  def outer_only(state, batch, x_adv):
    def loss_fn(params):
      forward = lambda v, batch_stats: ts.train_forward(model, params, batch_stats, v)
      return outer_loss(forward, state.batch_stats, batch['image'], x_adv, batch['label'])
    (_, (_, batch_stats)), grads = ts.local_value_and_grad(loss_fn, state.params)
    return ts.apply_gradients(state, tx, grads, batch_stats, config=config)

  specs = ts.specs(state)
  outer = jax.jit(jax.shard_map(outer_only, mesh=mesh, in_specs=(specs, P(ts.AXIS), P(ts.AXIS)), out_specs=specs))
  attack_fn = jax.jit(jax.shard_map(attack_only, mesh=mesh, in_specs=(specs, P(ts.AXIS)), out_specs=P(ts.AXIS)))
  x_adv = attack_fn(state, batch)
  train_step = step_lib.make_train_step(model, tx, config, mesh, key)
  sums = step_lib.zero_metrics(config)
  step_fn = train_step.lower(state, batch, hparams, sums).compile()
  # The step donates its state: time it on copies.
  copy = lambda tree: jax.tree.map(lambda a: a.copy(), tree)
  times = {'attack': median_seconds(attack_fn, state, batch),
           'outer step': median_seconds(outer, state, batch, x_adv)}
  if config.method == 'fat':
    check = lambda s, b: logits_fn(s.variables)(b['image'])
    times['attack: start check'] = median_seconds(
        jax.jit(jax.shard_map(check, mesh=mesh, in_specs=(specs, P(ts.AXIS)), out_specs=P(ts.AXIS))), state, batch)
  step_times = []
  for _ in range(ARGS.repeats + 1):
    fresh = jax.block_until_ready(copy(state))
    start = time.perf_counter()
    jax.block_until_ready(step_fn(fresh, batch, hparams, sums))
    step_times.append(time.perf_counter() - start)
  times['step'] = statistics.median(step_times[1:])
  return times, step_fn, (hparams, sums)


def op_kinds(hlo_text):
  """{instruction name: kind} from the op_name metadata of the compiled HLO."""
  kinds = {}
  for line in hlo_text.splitlines():
    match = re.match(r'\s*(?:ROOT )?%([\w.\-]+) = ', line)
    op_name = re.search(r'op_name="([^"]+)"', line)
    if match and op_name:
      kinds[match.group(1)] = next((k for k, pattern in KINDS if re.search(pattern, op_name.group(1))), 'other')
  return kinds


def traced_ops(step_fn, state, batch, extra):
  """{XLA op: seconds per step} over --repeats traced steps (Eigen's convolutions do not appear)."""
  directory = tempfile.mkdtemp(prefix='advjax_profile_')
  copies = [jax.tree.map(lambda a: a.copy(), state) for _ in range(ARGS.repeats)]
  jax.block_until_ready(copies)
  with jax.profiler.trace(directory):
    for fresh in copies:
      jax.block_until_ready(step_fn(fresh, batch, *extra))
  profile = ProfileData.from_file(glob.glob(f'{directory}/**/*.xplane.pb', recursive=True)[0])
  shutil.rmtree(directory, ignore_errors=True)
  totals = collections.Counter()
  for plane in profile.planes:
    for line in plane.lines:
      if not line.name.startswith('tf_XLA'):   # XLA's own threads: one event per executed op
        continue
      for event in line.events:
        if not event.name.startswith(('end:', 'Threadpool', 'ThunkExecutor', 'SlinkyThreadPool')):
          totals[event.name] += event.duration_ns * 1e-9 / ARGS.repeats
  return totals


def report(method, model_name):
  config, mesh, model, tx, state, batch = setup(method, model_name)
  times, step_fn, extra = parts(config, mesh, model, tx, state, batch)
  step = times['step']
  print(f'\n### {method}, {model_name}, batch {config.batch_size}: {step:.3f} s per step\n')
  print('| part | s | share of the step |\n|---|---:|---:|')
  for name in ('attack', 'attack: start check', 'outer step'):
    if name in times:
      print(f'| {name} | {times[name]:.3f} | {100 * times[name] / step:.0f}% |')
  rest = step - times['attack'] - times['outer step']
  print(f'| rest (metrics, non-finite check, shard_map) | {rest:.3f} | {100 * rest / step:.0f}% |')
  ops = traced_ops(step_fn, state, batch, extra)
  kinds = op_kinds(step_fn.as_text())
  by_kind = collections.Counter()
  for op, seconds in ops.items():
    by_kind[kinds.get(op, 'other')] += seconds
  untraced = max(step - sum(ops.values()), 0.0)
  print('\n| XLA ops by kind (trace) | s per step | share |\n|---|---:|---:|')
  print(f'| convolutions in Eigen (untraced: step - traced) | {untraced:.3f} | {100 * untraced / step:.0f}% |')
  for kind, seconds in by_kind.most_common():
    print(f'| {kind} | {seconds:.3f} | {100 * seconds / step:.0f}% |')
  print(f'\nTop {ARGS.top} traced ops: ' + '; '.join(
      f'{op} ({kinds.get(op, "other")}) {1e3 * s:.1f} ms' for op, s in ops.most_common(ARGS.top)), flush=True)


def main():
  print(f'{jax.devices()[0].device_kind} x {jax.device_count()}, jax {jax.__version__}, variant {ARGS.variant}; '
        f'median of {ARGS.repeats}', file=sys.stderr)
  for model_name in ARGS.models.split(','):
    for method in ARGS.methods.split(','):
      report(method, model_name)


if __name__ == '__main__':
  main()
