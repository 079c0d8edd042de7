r"""Training throughput of advjax (Madry PGD-10, FAT tau=0, TRADES) against the PyTorch yardstick, on one machine.

For each (method, model) row it builds the config from configs/<method>.py (CIFAR shape 32x32x3, batch 128, eps 8/255,
step 2/255, K = 10, FAT with tau 0 throughout, TRADES beta 6: torch_ref.py's settings), feeds a few batches of random
data (uniform images, random labels, as torch_ref does by default) to the jitted train step on every device, and
reports examples/s, seconds per step, compile time, BP per example, GFLOP per step and MFU; then it runs
torch_ref.py as a subprocess with the same settings and prints advjax/torch. For FAT it compares the epoch time
(50,000 examples) with Madry's against (BP_FAT + 1) / (K + 1), the ratio of gradient computations per example.

  # CPU smoke test (minutes): small batch, two steps
  nice -n 10 python benchmarks/throughput.py --models=small_cnn --methods=madry,fat --batch=16 --steps=2 --warmup=1
  # CPU: two simulated devices, and FAT without compaction (one masked loop over the whole batch)
  python benchmarks/throughput.py --models=small_cnn --xla_flags=--xla_force_host_platform_device_count=2 \
      --config_override=attack.compact_min_size=0
  # GPU: the full matrix in fp32 and bf16, the yardstick on the GPU too (its default when JAX runs on a GPU)
  python benchmarks/throughput.py --json=throughput_fp32.json
  python benchmarks/throughput.py --dtype=bfloat16 --json=throughput_bf16.json

Pass XLA flags with '=' (`--xla_flags=--flag=value ...`); they are added to $XLA_FLAGS before jax is imported.
Compile s is `train_step.lower(...).compile()` (tracing included); the timed steps call the compiled executable.
torch_ref.py always computes in float32, whatever --dtype says. It comes from --torch_ref, else $ADVJAX_TORCH_REF,
else <repo>/../shared/bench/torch_ref.py. It has no WideResNet, so WRN rows have no torch number.

FLOPs. XLA's cost analysis (`compiled.cost_analysis()['flops']`) counts the body of a while loop once, whatever its
trip count: a `fori_loop` of K = 3 and K = 6 matmuls report the same FLOPs on XLA:CPU, and a static-trip-count
`fori_loop` (Madry's PGD-K) is lowered to a while loop and counted once like FAT's data-dependent `while_loop`: the
whole train step of Madry and FAT on tiny_cnn reports the same FLOPs for K = 1, 2 and 10, one attack step plus the
outer step. The script prints a probe of this on the backend it runs on. So FLOPs per step are computed from
loop-free pieces, each from XLA's cost analysis of the lowered program at the full batch:
  attack_steps * F_attack + F_outer (+ F_forward for a KL attack's clean forward, TRADES)
where F_attack is one eval-mode forward and backward to the input (gradient of the summed CE), F_outer is the
method's outer loss (one train-mode forward for Madry/FAT, two for TRADES) differentiated to the parameters, and
attack_steps is the measured BP per example (K for Madry and TRADES). These are the useful FLOPs, the BP count as
torch_ref counts it: the check that stops a FAT example and the masked work of stopped examples are not counted, and
neither are the optimiser update and the random start (elementwise, negligible). XLA counts convolution MACs over
non-padding input only (SmallCNN: 243 MFLOP per forward against 267 counting padding). The whole step's raw XLA
count ("loop bodies once") is kept in the JSON as `xla_step_gflop_per_device` for comparison.

MFU = FLOPs per step / seconds per step / (peak per device * devices). Peak: --peak_tflops, else by device kind, the
dense tensor-core peak of the compute dtype: bfloat16 on H100 SXM / H200 989.4 TFLOP/s, A100 312, H100 PCIe 756.5;
float32 as TF32 (494.7, 156, 378), which XLA:GPU uses for fp32 convolutions and matmuls at JAX's default matmul
precision (the non-tensor fp32 peak, 66.9 / 19.5 / 51.2, when jax_default_matmul_precision is 'highest'); TPU v4 275,
v5e 197, v5p 459, v6e 918 (fp32 too: TPUs run fp32 matmuls as bf16 passes at default precision). On a CPU the peak
is estimated from /proc/cpuinfo as logical CPUs * 'cpu MHz' * FP32 FLOP per cycle (64 with AVX-512, 32 with
AVX2 + FMA assuming two FMA units, 16 with AVX, 8 otherwise), the whole CPU however many devices simulate it; the
estimate is printed, and used for bfloat16 too. Logical CPUs may be hyperthreads, so that peak is generous.
"""
import argparse
import ast
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _set_xla_flags_from_argv():
  """XLA reads $XLA_FLAGS when jax starts: take --xla_flags from the command line before jax is imported."""
  early = argparse.ArgumentParser(add_help=False)
  early.add_argument('--xla_flags', default='')
  flags = early.parse_known_args()[0].xla_flags
  if flags:
    os.environ['XLA_FLAGS'] = f'{os.environ.get("XLA_FLAGS", "")} {flags}'.strip()


if __name__ == '__main__':
  _set_xla_flags_from_argv()
  from advjax import xla_flags   # imports no jax
  xla_flags.apply()              # advjax's XLA:CPU defaults, as advjax.main runs; a flag given above wins

import jax  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position
import jax.numpy as jnp  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

from advjax import methods, models  # noqa: E402
from advjax.methods import search  # noqa: E402
from advjax import step as step_lib  # noqa: E402
from advjax import train_state as ts  # noqa: E402
from advjax import train  # noqa: E402

METHODS = ('madry', 'fat', 'trades')
MODELS = ('small_cnn', 'resnet18', 'wrn-34-10')
TORCH_MODELS = {'small_cnn': 'smallcnn', 'resnet18': 'resnet18'}   # torch_ref.py has no WideResNet
IMAGE_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
NUM_BATCHES = 4            # distinct random batches, cycled
EPOCH_EXAMPLES = 50_000    # CIFAR-10's training set

# Dense peak TFLOP/s per device: (device_kind substring, bfloat16, fp32 at default precision (TF32), fp32 'highest').
PEAK_TFLOPS = (
    ('h100 pcie', 756.5, 378.0, 51.2),
    ('h100', 989.4, 494.7, 66.9),
    ('h200', 989.4, 494.7, 66.9),
    ('gh200', 989.4, 494.7, 66.9),
    ('a100', 312.0, 156.0, 19.5),
    ('tpu v4', 275.0, 275.0, None),
    ('tpu v5 lite', 197.0, 197.0, None),
    ('tpu v5e', 197.0, 197.0, None),
    ('tpu v5p', 459.0, 459.0, None),
    ('tpu v5', 459.0, 459.0, None),
    ('tpu v6 lite', 918.0, 918.0, None),
    ('tpu v6e', 918.0, 918.0, None),
)


# --- Configs and data -------------------------------------------------------------------------------------------------

def parse_value(text):
  """A Python literal where the text is one (0, 1.5, True, (1, 0)), else the text itself."""
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_override(config, assignment):
  """Sets `a.b.c=value` in the ConfigDict; a field the config lacks is refused (a typo would measure nothing)."""
  key, sep, text = assignment.partition('=')
  if not sep:
    raise SystemExit(f'--config_override wants KEY=VALUE, got {assignment!r}')
  *parents, leaf = key.split('.')
  node = config
  for name in parents:
    node = node[name]
  if leaf not in node:
    raise SystemExit(f'--config_override: the config has no field {key!r}')
  node[leaf] = parse_value(text)


def load_config(method, model_name, args):
  """configs/<method>.py with torch_ref.py's settings, the model, dtype and batch of this row, then the overrides."""
  spec = importlib.util.spec_from_file_location(method, os.path.join(REPO, 'configs', f'{method}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.batch_size = args.batch
  config.model.name = model_name
  config.model.dtype = args.dtype
  config.attack.update(eps=8 / 255, step_size=2 / 255, steps=10)
  if method == 'fat':
    config.tau_schedule = ((1, 0),)
  if method == 'trades':
    config.beta = 6.0
  for assignment in args.config_override:
    apply_override(config, assignment)
  return config


def random_batches(mesh, batch_size, key):
  """NUM_BATCHES batches of uniform images and random labels, sharded over the mesh's data axis."""
  sharding = NamedSharding(mesh, P(ts.AXIS))
  batches = []
  for i in range(NUM_BATCHES):
    image_key, label_key = jax.random.split(jax.random.fold_in(key, i))
    batch = dict(image=jax.random.uniform(image_key, (batch_size, *IMAGE_SHAPE), jnp.float32),
                 label=jax.random.randint(label_key, (batch_size,), 0, NUM_CLASSES, jnp.int32),
                 index=jnp.arange(i * batch_size, (i + 1) * batch_size, dtype=jnp.int32))
    batches.append(jax.device_put(batch, sharding))
  return batches


# --- FLOPs and peak ---------------------------------------------------------------------------------------------------

def flops_of(analysis):
  """The 'flops' entry of a cost analysis (a dict, or a list of one dict per program)."""
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis['flops']) if analysis and 'flops' in analysis else None


def lowered_flops(lowered):
  """FLOPs of a lowered program by XLA's cost analysis, compiling it where the lowered analysis is unavailable."""
  try:
    value = flops_of(lowered.cost_analysis())
  except Exception:  # pylint: disable=broad-except
    value = None
  return value if value is not None else flops_of(lowered.compile().cost_analysis())


def loop_probe():
  """Compiled FLOPs of a fori_loop of 3 matmuls and of 6: equal where XLA counts a loop body once."""
  w, x = jnp.ones((64, 64)), jnp.ones((64, 64))
  loop = jax.jit(lambda w, x, k: jax.lax.fori_loop(0, k, lambda i, v: jnp.tanh(v @ w), x), static_argnums=2)
  return tuple(flops_of(loop.lower(w, x, k).compile().cost_analysis()) for k in (3, 6))


def step_flop_pieces(config, batch_size):
  """Loop-free FLOPs, each at the full batch: one attack step, the outer loss's gradient, one clean forward."""
  model = models.from_config(config.model, NUM_CLASSES)   # no mapped BatchNorm axis: lowered outside shard_map
  x = jax.ShapeDtypeStruct((batch_size, *IMAGE_SHAPE), jnp.float32)
  y = jax.ShapeDtypeStruct((batch_size,), jnp.int32)
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *IMAGE_SHAPE)), train=False))
  cross_entropy = search.cross_entropy

  def forward(variables, x):
    return model.apply(variables, x, train=False)

  def attack_step(variables, x, y):
    return jax.grad(lambda v: cross_entropy(forward(variables, v), y).sum())(x)

  outer_loss = methods.METHODS[config.method].loss(config)

  def outer(variables, x, y):
    def loss_fn(params):
      def train_forward(v, batch_stats):
        logits, updates = model.apply(dict(params=params, batch_stats=batch_stats), v, train=True,
                                      mutable=['batch_stats'])
        return logits, updates['batch_stats']
      return outer_loss(train_forward, variables['batch_stats'], x, x, y)
    return jax.value_and_grad(loss_fn, has_aux=True)(variables['params'])

  return dict(attack_step=lowered_flops(jax.jit(attack_step).lower(variables, x, y)),
              outer=lowered_flops(jax.jit(outer).lower(variables, x, y)),
              forward=lowered_flops(jax.jit(forward).lower(variables, x)))


def flops_per_step(config, pieces, bp_per_example):
  extra = pieces['forward'] if config.attack.loss == 'kl' else 0.0
  return bp_per_example * pieces['attack_step'] + pieces['outer'] + extra


def cpu_peak():
  """(FLOP/s, how it was estimated) for the whole CPU, from /proc/cpuinfo; (None, why) where that is unreadable."""
  try:
    with open('/proc/cpuinfo') as f:
      lines = f.read().splitlines()
  except OSError:
    return None, 'no /proc/cpuinfo: pass --peak_tflops'
  field = lambda name: [line.split(':', 1)[1].strip() for line in lines if line.split(':')[0].strip() == name]
  mhz, flags = field('cpu MHz'), set((field('flags') or [''])[0].split())
  if not mhz:
    return None, 'no "cpu MHz" in /proc/cpuinfo: pass --peak_tflops'
  ghz, cpus = max(float(m) for m in mhz) / 1000, len(os.sched_getaffinity(0))
  if 'avx512f' in flags:
    per_cycle, isa = 64, 'AVX-512, 2 FMA units'
  elif 'avx2' in flags and 'fma' in flags:
    per_cycle, isa = 32, 'AVX2 + FMA, 2 FMA units assumed'
  elif 'avx' in flags:
    per_cycle, isa = 16, 'AVX'
  else:
    per_cycle, isa = 8, 'SSE'
  peak = cpus * ghz * 1e9 * per_cycle
  return peak, (f'estimated {cpus} logical CPUs x {ghz:.2f} GHz x {per_cycle} FP32 FLOP/cycle ({isa}) = '
                f'{peak / 1e9:.1f} GFLOP/s for the whole CPU')


def peak_flops(dtype, peak_tflops):
  """(peak FLOP/s of all devices together, how it was chosen), or (None, why) for an unknown accelerator."""
  devices = jax.devices()
  if peak_tflops:
    return peak_tflops * 1e12 * len(devices), f'--peak_tflops {peak_tflops:g} per device x {len(devices)}'
  if devices[0].platform == 'cpu':
    return cpu_peak()
  kind = devices[0].device_kind.lower()
  precision = str(jax.config.jax_default_matmul_precision or 'default').lower()
  for name, bf16, default_fp32, highest_fp32 in PEAK_TFLOPS:
    if name in kind:
      if dtype == 'bfloat16':
        tflops, what = bf16, 'bf16 dense'
      elif precision in ('highest', 'float32') and highest_fp32:
        tflops, what = highest_fp32, 'fp32 non-tensor-core (matmul precision highest)'
      else:
        tflops, what = default_fp32, 'fp32 at default matmul precision (TF32 / bf16 passes), dense'
      return tflops * 1e12 * len(devices), f'{devices[0].device_kind}: {tflops:g} TFLOP/s {what} x {len(devices)}'
  return None, f'unknown peak for {devices[0].device_kind!r}: pass --peak_tflops'


# --- Timing -----------------------------------------------------------------------------------------------------------

def time_advjax(config, args, mesh):
  """Compiles and times the train step on random data; the measured row (without FLOPs)."""
  init_key, attack_key, data_key = jax.random.split(jax.random.key(0), 3)
  model = train.build_model(config, NUM_CLASSES)
  tx = step_lib.make_optimizer(config, steps_per_epoch=EPOCH_EXAMPLES // config.batch_size)
  state = ts.create_train_state(model, tx, IMAGE_SHAPE, init_key, mesh)
  train_step = step_lib.make_train_step(model, tx, config, mesh, attack_key)
  batches = random_batches(mesh, config.batch_size, data_key)
  hparams = methods.hparams(config, 1, first_step=0)
  sums = step_lib.zero_metrics(config)

  start = time.perf_counter()
  compiled = train_step.lower(state, batches[0], hparams, sums).compile()
  compile_s = time.perf_counter() - start
  xla_step = flops_of(compiled.cost_analysis())   # loop bodies counted once: kept for comparison only

  for i in range(args.warmup):
    state, sums = compiled(state, batches[i % NUM_BATCHES], hparams, sums)
  jax.block_until_ready((state, sums))
  sums = step_lib.zero_metrics(config)
  start = time.perf_counter()
  for i in range(args.steps):
    state, sums = compiled(state, batches[(args.warmup + i) % NUM_BATCHES], hparams, sums)
  jax.block_until_ready((state, sums))
  seconds = time.perf_counter() - start

  sums = jax.device_get(sums)
  return dict(examples_per_s=args.steps * config.batch_size / seconds, seconds_per_step=seconds / args.steps,
              compile_s=compile_s, bp_per_example=float(sums['attack_steps'] / sums['examples']),
              xla_step_gflop_per_device=None if xla_step is None else xla_step / 1e9)


def torch_ref_path(args):
  if args.torch_ref:
    return args.torch_ref
  if os.environ.get('ADVJAX_TORCH_REF'):
    return os.environ['ADVJAX_TORCH_REF']
  default = os.path.join(os.path.dirname(REPO), 'shared', 'bench', 'torch_ref.py')
  return default if os.path.exists(default) else None


def time_torch(config, args, path):
  """torch_ref.py's JSON line for this row, or dict(error=...)."""
  model = TORCH_MODELS.get(config.model.name)
  if model is None:
    return dict(error='n/a (no WRN in the yardstick)' if config.model.name.startswith('wrn') else
                f'n/a (no {config.model.name} in the yardstick)')
  if path is None:
    return dict(error='n/a (torch_ref.py not found: pass --torch_ref or set $ADVJAX_TORCH_REF)')
  command = [sys.executable, path, '--method', config.method, '--model', model, '--tau', '0',
             '--K', str(config.attack.steps), '--batch', str(config.batch_size), '--steps', str(args.steps),
             '--warmup', str(args.warmup), '--device', args.torch_device]
  if args.threads:
    command += ['--threads', str(args.threads)]
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  lines = [line for line in result.stdout.splitlines() if line.startswith('{')]
  if result.returncode or not lines:
    tail = (result.stderr.strip().splitlines() or ['no output'])[-1]
    return dict(error=f'torch_ref.py failed (exit {result.returncode}): {tail}')
  return json.loads(lines[-1])


# --- One row, and the report ------------------------------------------------------------------------------------------

def run_row(method, model_name, args, mesh, peak, torch_path):
  config = load_config(method, model_name, args)
  row = dict(method=method, model=model_name, dtype=config.model.dtype, batch=config.batch_size,
             K=config.attack.steps, devices=len(mesh.devices.flat))
  row.update(time_advjax(config, args, mesh))
  pieces = step_flop_pieces(config, config.batch_size)
  flops = flops_per_step(config, pieces, row['bp_per_example'])
  row.update(gflop_per_step=flops / 1e9, gflop_pieces={k: v / 1e9 for k, v in pieces.items()},
             mfu=None if peak is None else flops / row['seconds_per_step'] / peak,
             epoch_s=EPOCH_EXAMPLES / row['examples_per_s'])
  if args.torch:
    row['torch'] = time_torch(config, args, torch_path)
    if 'examples_per_s' in row['torch']:
      row['torch']['epoch_s'] = EPOCH_EXAMPLES / row['torch']['examples_per_s']
      row['ratio'] = row['examples_per_s'] / row['torch']['examples_per_s']
  return row


def fmt(value, spec, missing='n/a'):
  return missing if value is None else format(value, spec)


def describe_row(row):
  line = (f'{row["method"]:6} {row["model"]:9} {row["dtype"]}: {row["examples_per_s"]:.2f} ex/s, '
          f'{row["seconds_per_step"]:.3f} s/step, compile {row["compile_s"]:.1f} s, BP/ex {row["bp_per_example"]:.2f}, '
          f'{row["gflop_per_step"]:.1f} GFLOP/step, MFU {fmt(row["mfu"] and 100 * row["mfu"], ".2f")}%, '
          f'epoch (50k) {row["epoch_s"]:.0f} s')
  if 'torch' in row:
    t = row['torch']
    line += (f' | torch {t["examples_per_s"]:.2f} ex/s, BP/ex {t["avg_bp"]:.2f}, advjax/torch {row["ratio"]:.2f}'
             if 'examples_per_s' in t else f' | torch {t["error"]}')
  return line


def fat_vs_madry(rows):
  """Lines comparing FAT's epoch time with Madry's, per model and implementation, to (BP_FAT + 1) / (K + 1)."""
  lines = []
  by_key = {(r['method'], r['model']): r for r in rows}
  for (method, model_name), fat in by_key.items():
    madry = by_key.get(('madry', model_name))
    if method != 'fat' or madry is None:
      continue
    impls = [('advjax', fat, madry)]
    if 'examples_per_s' in fat.get('torch', {}) and 'examples_per_s' in madry.get('torch', {}):
      impls.append(('torch', fat['torch'], madry['torch']))
    for impl, f, m in impls:
      bp = f['bp_per_example'] if impl == 'advjax' else f['avg_bp']
      measured = m['examples_per_s'] / f['examples_per_s']   # = epoch time FAT / epoch time Madry
      expected = (bp + 1) / (fat['K'] + 1)
      lines.append(f'{model_name:9} {impl:6}: epoch FAT {f["epoch_s"]:.0f} s / Madry {m["epoch_s"]:.0f} s = '
                   f'{measured:.3f}; (BP_FAT + 1) / (K + 1) = ({bp:.2f} + 1) / {fat["K"] + 1} = {expected:.3f}; '
                   f'gap {100 * (measured / expected - 1):+.0f}%')
  return lines


def environment(args, peak_note, probe):
  version = lambda name: importlib.metadata.version(name) if importlib.util.find_spec(name) else 'not installed'
  return dict(device_kind=jax.devices()[0].device_kind, devices=jax.device_count(), backend=jax.default_backend(),
              jax=jax.__version__, flax=version('flax'), torch=version('torch'), python=platform.python_version(),
              date=datetime.datetime.now().isoformat(timespec='seconds'), dtype=args.dtype,
              xla_flags=os.environ.get('XLA_FLAGS', ''), peak=peak_note, config_overrides=args.config_override,
              loop_probe_flops=probe)


def markdown(rows, env):
  head = (f'Device: {env["device_kind"]} x {env["devices"]} ({env["backend"]}); jax {env["jax"]}, flax {env["flax"]}, '
          f'torch {env["torch"]} (torch_ref.py in float32); {env["date"]}; dtype {env["dtype"]}; '
          f'XLA_FLAGS "{env["xla_flags"]}"; '
          f'peak: {env["peak"]}' + (f'; overrides {env["config_overrides"]}' if env['config_overrides'] else ''))
  table = ['| method | model | dtype | advjax ex/s | torch ex/s | ratio | s/step | compile s | BP/ex | GFLOP/step '
           '| MFU % |',
           '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|']
  for r in rows:
    t = r.get('torch', {})
    torch_cell = fmt(t.get('examples_per_s'), '.2f', t.get('error', 'not run'))
    table.append(f'| {r["method"]} | {r["model"]} | {r["dtype"]} | {r["examples_per_s"]:.2f} | {torch_cell} | '
                 f'{fmt(r.get("ratio"), ".2f")} | {r["seconds_per_step"]:.3f} | {r["compile_s"]:.1f} | '
                 f'{r["bp_per_example"]:.2f} | {r["gflop_per_step"]:.1f} | '
                 f'{fmt(r["mfu"] and 100 * r["mfu"], ".2f")} |')
  return '\n'.join([head, ''] + table)


def parse_args():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--methods', default=','.join(METHODS), help=f'comma-separated, from {",".join(METHODS)}')
  p.add_argument('--models', default=','.join(MODELS), help=f'comma-separated, e.g. {",".join(MODELS)}')
  p.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'), help='model compute dtype')
  p.add_argument('--batch', type=int, default=128, help='global batch (torch_ref: --batch)')
  p.add_argument('--steps', type=int, default=20, help='timed steps')
  p.add_argument('--warmup', type=int, default=3, help='untimed steps after compiling')
  p.add_argument('--torch', action=argparse.BooleanOptionalAction, default=True, help='run torch_ref.py too')
  p.add_argument('--torch_ref', default='', help='path of torch_ref.py (default $ADVJAX_TORCH_REF, then '
                                                 '<repo>/../shared/bench/torch_ref.py)')
  p.add_argument('--torch_device', choices=('cpu', 'cuda'), default=None,
                 help="torch_ref.py's device; default cuda where JAX runs on a GPU, else cpu")
  p.add_argument('--threads', type=int, default=0, help="torch_ref.py's --threads (0: PyTorch's default)")
  p.add_argument('--peak_tflops', type=float, default=0.0, help='peak TFLOP/s per device for MFU (default: table)')
  p.add_argument('--xla_flags', default='', help='added to $XLA_FLAGS before jax starts; use --xla_flags=--a=b')
  p.add_argument('--config_override', action='append', default=[], metavar='KEY=VALUE',
                 help='set a config field in every row, e.g. attack.compact_min_size=0 (repeatable)')
  p.add_argument('--json', default='', help='write the environment and all rows to this JSON file')
  args = p.parse_args()
  args.methods, args.models = args.methods.split(','), args.models.split(',')
  unknown = [m for m in args.methods if m not in METHODS]
  if unknown:
    p.error(f'unknown methods {unknown}; choose from {METHODS}')
  bad_models = [m for m in args.models if not models.is_known(m)]
  if bad_models:
    p.error(f'unknown models {bad_models}; known: {models.KNOWN_MODELS}')
  if args.torch_device is None:
    args.torch_device = 'cuda' if jax.default_backend() == 'gpu' else 'cpu'
  return args


def main():
  args = parse_args()
  mesh = ts.make_mesh()
  if args.batch % mesh.size:
    raise SystemExit(f'--batch {args.batch} must be a multiple of the device count {mesh.size}')
  peak, peak_note = peak_flops(args.dtype, args.peak_tflops)
  probe = loop_probe()
  print(f'Peak for MFU: {peak_note}')
  print(f'XLA cost analysis on {jax.default_backend()}: fori_loop of 3 / 6 matmuls -> {probe[0]:.0f} / {probe[1]:.0f} '
        f'FLOPs: loop bodies counted {"once" if probe[0] == probe[1] else "per iteration"}; FLOPs per step are '
        'computed from loop-free pieces x BP (see the docstring)', flush=True)
  torch_path = torch_ref_path(args) if args.torch else None
  rows = []
  for model_name in args.models:
    for method in args.methods:
      rows.append(run_row(method, model_name, args, mesh, peak, torch_path))
      print(describe_row(rows[-1]), flush=True)
  comparison = fat_vs_madry(rows)
  if comparison:
    print('\nFAT vs Madry, epoch time of 50,000 examples:')
    print('\n'.join(comparison))
  env = environment(args, peak_note, probe)
  print('\n' + markdown(rows, env))
  if args.json:
    with open(args.json, 'w') as f:
      json.dump(dict(environment=env, rows=rows, fat_vs_madry=comparison), f, indent=2)


if __name__ == '__main__':
  main()
