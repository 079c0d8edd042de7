"""CAT, curriculum adversarial training (Cai, Liu & Song, IJCAI 2018), as `advtrain_all.py`'s `advtrain_CAT` runs it.

Batch mixing (`regularLoss`): at curriculum level k each batch is cut into k + 1 parts, part j attacked with PGD-j
(part 0 natural, the last part taking the remainder), then one cross-entropy step on the mixed batch. Each part's
PGD (`PGDAttack.perturb_true`) starts at x + U(-eps, eps), unclipped (`attack.init`, `attack.clip_init`), and
draws its step size once: `attack.step_size` / j * U(1, 10 / j) (`cat.step_rule='random'`; 'fixed' keeps
`attack.step_size`). The attack sees the model in `attack.model_mode` ('train' as the official code: each of a
part's forwards normalises by that part's statistics and updates BatchNorm). `cat.batch_mixing=False` attacks every
example with PGD-k (FAT's Table 1 reading of CAT).

The parts have static sizes, so the step compiles one branch per level 0..`cat.max_k` and picks the epoch's k
(`hparams['steps']`, traced) with `lax.switch`. With several devices each device mixes its own shard.
"""
import functools

import jax
import jax.numpy as jnp

from advjax import attacks, schedules
from advjax import train_state as ts
from advjax.methods import search


def steps_hparams(config, epoch):
  """The epoch's curriculum level k, from `config.steps_schedule`."""
  return dict(steps=schedules.value_at(config.steps_schedule, epoch))


def parts(batch_size, k, batch_mixing=True):
  """[(start, stop, steps)] of the batch's parts at level k, as `regularLoss` slices them."""
  if not batch_mixing:
    return [(0, batch_size, k)]
  each = batch_size // (k + 1)
  return [(j * each, (j + 1) * each if j < k else batch_size, j) for j in range(k + 1)]


def step_size(config, steps, key):
  """The PGD step size of a part attacked with `steps` steps."""
  if config.cat.step_rule == 'fixed':
    return config.attack.step_size
  return config.attack.step_size / steps * step_factor(key, steps)


def step_factor(key, steps):
  """`perturb_true`'s U(1, 10 / k) for a part attacked with k steps."""
  return jax.random.uniform(key, (), jnp.float32, 1.0, 10.0 / steps)


def step_size_key(key, step, part):
  """The key of a part's step-size draw: one per batch (train step) and part, the same on every device."""
  return jax.random.fold_in(jax.random.fold_in(key, step), part)


def mixed_batch(k, config, model, state, x, y, keys, key):
  """Level k's mixed batch, each example's step count and the BatchNorm statistics after the attack."""
  a = config.attack
  train_mode = a.get('model_mode', 'eval') == 'train'
  batch_stats, pieces = state.batch_stats, []
  for start, stop, steps in parts(x.shape[0], k, config.cat.batch_mixing):
    x_part = x[start:stop]
    if steps:
      kwargs = dict(eps=a.eps, step_size=step_size(config, steps, step_size_key(key, state.step, steps)),
                    steps=steps, init=a.init, clip_init=a.clip_init)
      part_y, part_keys = y[start:stop], keys[start:stop]
      if train_mode:
        forward = lambda v, stats: ts.train_forward(model, state.params, stats, v)
        out = attacks.pgd(forward, x_part, part_y, part_keys, model_state=batch_stats, **kwargs)
        batch_stats = out.model_state
      else:
        logits_fn = lambda v: model.apply(state.variables, v, train=False)
        out = attacks.pgd(logits_fn, x_part, part_y, part_keys, **kwargs)
      x_part = out.x_adv
    pieces.append((x_part, jnp.full(x_part.shape[:1], steps, jnp.int32)))
  x_adv, steps = (jnp.concatenate(p) for p in zip(*pieces))
  return x_adv, steps, batch_stats


def cat_step(model, tx, config, key):
  """The per-device step: the level's mixed batch, then one optimiser step on its mean cross-entropy."""
  loss_of = search.madry_loss(config)
  levels = [functools.partial(mixed_batch, k, config, model) for k in range(config.cat.max_k + 1)]

  def step(state, batch, hparams):
    x, y = batch['image'], batch['label']
    keys = ts.example_keys(key, state.step, batch['index'])
    level = jnp.clip(hparams['steps'], 0, config.cat.max_k)
    x_adv, steps, batch_stats = jax.lax.switch(level, levels, state, x, y, keys, key)

    def loss_fn(params):
      forward = lambda v, stats: ts.train_forward(model, params, stats, v)
      return loss_of(forward, batch_stats, x, x_adv, y)

    (loss, (logits, batch_stats)), grads = ts.local_value_and_grad(loss_fn, state.params)
    state = ts.apply_gradients(state, tx, grads, batch_stats, config=config)
    metrics = dict(loss=loss * y.shape[0], adv_correct=(logits.argmax(-1) == y).sum(), attack_steps=steps.sum(),
                   examples=y.shape[0])
    return state, metrics

  return step
