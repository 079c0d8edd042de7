r"""Convolution gradients at the top level and inside loop bodies, with JAX's own convolution and with advjax's seam.

XLA:CPU runs the transposed-layout convolutions of JAX's gradients slowly inside `while_loop` / `fori_loop` / `cond`
bodies (jax-ml/jax#12868); `advjax.models.cpu_conv` writes them in the canonical layout. This script prints, for
each variant, seconds per call of
- each kind of convolution in the zoo (3x3 stride 1 and 2, 1x1 stride 2, the stem): input and kernel gradients,
  five chained, unrolled and inside a `fori_loop`;
- PGD-10 on SmallCNN and ResNet-18 in eval mode: ten steps unrolled, in a `fori_loop` (advjax's `pgd`) and in a
  `while_loop` (the early-stopped attacks), and one input gradient on its own;
- 2x2 max-pooling's forward and backward (128 x 32 x 32 x 64, after a ReLU).
Variants: `jax` (lax.conv_general_dilated and flax's max_pool: advjax before the seam), `seam` (the seam, flax's
max_pool), `advjax` (the seam and max-pooling as four strided slices: advjax now).

  python benchmarks/loop_body.py                       # everything, ~15 min on 2 cores
  python benchmarks/loop_body.py --parts=pgd --batch=64 --variants=jax,advjax
  python benchmarks/loop_body.py --no-xla_defaults      # without advjax's XLA:CPU flag (advjax.xla_flags)
"""
import argparse
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from advjax import models, xla_flags
from advjax.attacks import losses, parts
from advjax.models import cpu_conv, layers

VARIANTS = ('jax', 'seam', 'advjax')
# (name, kernel, stride, channels in, channels out, input size)
CONVS = (('3x3 stride 1', 3, 1, 64, 64, 32), ('3x3 stride 2', 3, 2, 64, 128, 32), ('1x1 stride 2', 1, 2, 64, 128, 32),
         ('3x3 stem, 3 channels', 3, 1, 3, 64, 32))
CHAIN = 5


def use(variant):
  """Points the model zoo at the variant's convolution and max-pool."""
  cpu_conv_fn = lax.conv_general_dilated if variant == 'jax' else _SEAM
  pool = _ADVJAX_POOL if variant == 'advjax' else (lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)))
  cpu_conv.conv_general_dilated, layers.max_pool_2x2 = cpu_conv_fn, pool


_SEAM, _ADVJAX_POOL = cpu_conv.conv_general_dilated, layers.max_pool_2x2


def seconds(fn, *args, repeats):
  jax.block_until_ready(fn(*args))   # compiles
  best = float('inf')
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    best = min(best, time.perf_counter() - start)
  return best


def conv_rows(variant, batch, repeats):
  rows = []
  for name, k, stride, c_in, c_out, size in CONVS:
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (batch, size, size, c_in))
    w = jax.random.normal(kw, (k, k, c_in, c_out)) / k
    conv = lambda x, w: cpu_conv.conv_general_dilated(x, w, (stride, stride), ((k // 2, k // 2),) * 2,
                                                       dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    grads = {'input': lambda x, w: jax.grad(lambda x: jnp.sum(jnp.tanh(conv(x, w))))(x),
             'kernel': lambda x, w: jax.grad(lambda w: jnp.sum(jnp.tanh(conv(x, w))))(w)}
    for wrt, grad in grads.items():
      # Chained through a scalar so that neither XLA nor the loop can hoist or merge the calls; x and w are
      # arguments, not constants, so that XLA cannot fold the calls at compile time.
      step = lambda x, w: lambda i, acc: acc + 1e-9 * jnp.sum(grad(x * (1 + 1e-6 * acc), w))
      unrolled = jax.jit(lambda x, w: unroll(step(x, w), CHAIN, 0.0))
      looped = jax.jit(lambda x, w: lax.fori_loop(0, CHAIN, step(x, w), 0.0))
      slow = variant == 'jax' and wrt == 'kernel'   # a minute per call in the loop: timed once
      rows.append((f'{name}, {wrt} gradient', seconds(unrolled, x, w, repeats=repeats),
                   seconds(looped, x, w, repeats=1 if slow else repeats)))
  return rows


def unroll(step, n, carry):
  """`lax.fori_loop(0, n, step, carry)` written out: n copies of the body at the top level."""
  for i in range(n):
    carry = step(i, carry)
  return carry


def pgd_rows(model_name, batch, repeats):
  model = models.get_model(model_name, 10)
  x = jax.random.uniform(jax.random.key(1), (batch, 32, 32, 3))
  y = jax.random.randint(jax.random.key(2), (batch,), 0, 10)
  variables = model.init(jax.random.key(0), x[:1], train=False)
  eps, alpha = 8 / 255, 2 / 255

  def grad(variables, v):
    objective = losses.cross_entropy(lambda u: model.apply(variables, u, train=False), x, y)
    return jax.grad(lambda u: objective(model.apply(variables, u, train=False)).sum())(v)

  step = lambda variables, v: parts.ascent_step(v, x, grad(variables, v), eps=eps, step_size=alpha)
  unrolled = jax.jit(lambda variables, v: unroll(lambda i, v: step(variables, v), 10, v))
  fori = jax.jit(lambda variables, v: lax.fori_loop(0, 10, lambda i, v: step(variables, v), v))
  while_ = jax.jit(lambda variables, v: lax.while_loop(lambda s: s[0] < 10, lambda s: (s[0] + 1, step(variables, s[1])),
                                                       (0, v))[1])
  one = jax.jit(grad)
  times = {name: seconds(fn, variables, x, repeats=repeats)
           for name, fn in [('one input gradient', one), ('PGD-10 unrolled', unrolled), ('PGD-10 fori_loop', fori),
                            ('PGD-10 while_loop', while_)]}
  return times


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument('--variants', default=','.join(VARIANTS))
  p.add_argument('--parts', default='convs,pgd,pool', help='comma-separated: convs, pgd, pool')
  p.add_argument('--models', default='small_cnn,resnet18')
  p.add_argument('--batch', type=int, default=64)
  p.add_argument('--conv_batch', type=int, default=32)
  p.add_argument('--repeats', type=int, default=3, help='timed calls after compiling; the best is kept')
  p.add_argument('--xla_defaults', action=argparse.BooleanOptionalAction, default=True,
                 help="advjax's XLA:CPU flags (advjax.xla_flags), as advjax.main runs")
  args = p.parse_args()
  if args.xla_defaults:
    xla_flags.apply()   # XLA reads its flags when the first computation starts the backend
  variants, todo = args.variants.split(','), args.parts.split(',')
  print(f'{jax.devices()[0].device_kind} x {jax.device_count()}, jax {jax.__version__}; best of {args.repeats}; '
        f'XLA_FLAGS "{os.environ.get("XLA_FLAGS", "")}"')
  if 'convs' in todo:
    print(f'\nConvolution gradients, batch {args.conv_batch}, {CHAIN} chained: seconds unrolled / in fori_loop '
          '(ratio)\n\n| convolution | ' + ' | '.join(variants) + ' |\n|---|' + '---:|' * len(variants))
    table = {}
    for variant in variants:
      use(variant)
      table[variant] = conv_rows(variant, args.conv_batch, args.repeats)
    for i, (name, *_) in enumerate(table[variants[0]]):
      cells = [f'{table[v][i][1]:.3f} / {table[v][i][2]:.3f} ({table[v][i][2] / table[v][i][1]:.2f})' for v in variants]
      print(f'| {name} | ' + ' | '.join(cells) + ' |', flush=True)
  if 'pgd' in todo:
    for model_name in args.models.split(','):
      print(f'\n{model_name}, batch {args.batch}, eval mode: seconds\n\n| | ' + ' | '.join(variants) + ' |\n|---|' +
            '---:|' * len(variants))
      results = {}
      for variant in variants:
        use(variant)
        results[variant] = pgd_rows(model_name, args.batch, args.repeats)
      for name in results[variants[0]]:
        print(f'| {name} | ' + ' | '.join(f'{results[v][name]:.3f}' for v in variants) + ' |', flush=True)
      for v in variants:
        r = results[v]
        print(f'{v}: fori_loop / unrolled {r["PGD-10 fori_loop"] / r["PGD-10 unrolled"]:.2f}, while_loop / unrolled '
              f'{r["PGD-10 while_loop"] / r["PGD-10 unrolled"]:.2f}', flush=True)

  if 'pool' in todo:
    print('\n2x2 max-pool, 128 x 32 x 32 x 64 after a ReLU: ms, forward / forward and backward\n')
    x = jax.random.normal(jax.random.key(0), (128, 32, 32, 64))
    weights = jax.random.normal(jax.random.key(1), (128, 16, 16, 64))
    pools = {'flax max_pool (select-and-scatter backward)': lambda x: nn.max_pool(x, (2, 2), strides=(2, 2)),
             'reshape and max': lambda x: x.reshape(128, 16, 2, 16, 2, 64).max(axis=(2, 4)),
             'advjax: maximum of four strided slices': _ADVJAX_POOL}
    for name, pool in pools.items():
      forward = jax.jit(lambda x: pool(jax.nn.relu(x)))
      backward = jax.jit(jax.grad(lambda x: jnp.sum(pool(jax.nn.relu(x)) * weights)))
      print(f'| {name} | {1e3 * seconds(forward, x, repeats=args.repeats):.1f} | '
            f'{1e3 * seconds(backward, x, repeats=args.repeats):.1f} |', flush=True)


if __name__ == '__main__':
  main()
