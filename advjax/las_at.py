"""LAS-AT: learnable attack strategy (Jia et al., CVPR 2022), with its LAS-TRADES and LAS-AWP variants.

A policy network (a classifier trunk on the clean image, one categorical head per attack parameter) samples a
strategy per example: eps, step size, number of steps (and TRADES' beta). The target trains on the PGD examples of
those strategies; every `las.policy_every` steps the policy is updated by REINFORCE on one scalar reward per batch:

  r = clip(R1) + clip(m2 * robust accuracy of a look-ahead copy) + clip(m3 * its clean accuracy),

R1 the target's loss on the policy's examples, the copy one SGD step (fresh momentum) of the target on them, its
robust accuracy under early-stopped PGD-10 with 2 restarts. As the official code: the reward's strategy sample is
drawn with the policy in training mode, and a fresh sample with the policy in eval mode trains the target.
"""
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from advjax import attacks, awp, models, objectives, schedules, strategy
from advjax import train_state as ts
from advjax.attacks import losses

_PIXEL = 1 / 255   # eps and step-size choices are written in /255 units, as in the official commands


def heads(config):
  """{head: choices}: the attack parameters the policy picks per example."""
  l = config.las
  choices = dict(eps=l.eps_choices, step_size=l.step_choices, steps=l.steps_choices)
  if config.method == 'las_trades':
    choices['beta'] = l.beta_choices
  return choices


def policy_network(config):
  """The policy: `las.policy_model` with one output per choice of every head (linear heads on a shared trunk)."""
  cfg = ml_collections.ConfigDict(dict(name=config.las.policy_model, mean=(), std=(), dtype=config.model.dtype))
  axis = ts.AXIS if config.bn_stats == 'global' else None
  return models.from_config(cfg, sum(len(c) for c in heads(config).values()), bn_axis_name=axis)


def split_heads(logits, choices):
  """{head: (B, len(choices[head])) logits} from the network's concatenated outputs, heads in name order."""
  names = sorted(choices)
  ends = list(itertools.accumulate(len(choices[n]) for n in names))[:-1]
  return dict(zip(names, jnp.split(logits, ends, axis=-1)))


def policy_optimizer(config):
  """Gradient-norm clip, then SGD (coupled weight decay, momentum where the variant has it) at `las.policy_lr`.

  Its LR never decays (the official scheduler counts policy updates only), except with
  `las.policy_lr_follows_target` (LAS-AWP), where the step is scaled by the target's LR over its initial LR.
  """
  l = config.las
  return optax.chain(optax.clip_by_global_norm(l.policy_clip), optax.add_decayed_weights(l.policy_weight_decay),
                     optax.sgd(l.policy_lr, momentum=l.policy_momentum or None))


def las_init(config, model, input_shape, num_rows):
  del model, num_rows
  policy, tx = policy_network(config), policy_optimizer(config)

  def init(key):
    variables = policy.init(key, jnp.zeros((1, *input_shape)), train=False)
    return dict(params=variables['params'], batch_stats=variables['batch_stats'],
                opt_state=tx.init(variables['params'])), None

  return init


def las_hparams(config, epoch):
  """The target's learning rate of the epoch, for the look-ahead copy's SGD step."""
  return dict(lookahead_lr=schedules.value_at(config.lr_schedule, epoch, config.lr_interpolation))


def las_step(model, tx, config, key):
  l, choices = config.las, heads(config)
  trades = config.method == 'las_trades'
  policy, policy_tx = policy_network(config), policy_optimizer(config)
  max_steps = max(l.steps_choices)

  def strategy_values(actions):
    values = strategy.values(actions, choices)
    return dict(values, eps=values['eps'] * _PIXEL, step_size=values['step_size'] * _PIXEL)

  def attack(variables, x, y, key, values):
    """PGD with each example's strategy: TRADES' start and KL loss for LAS-TRADES, else a U(-8/255, 8/255) start."""
    logits_fn = lambda v: model.apply(variables, v, train=False)
    start = dict(init='gaussian', clip_init=False, loss=losses.kl_to_clean) if trades else dict(
        init='uniform', start_eps=l.start_eps, loss=losses.cross_entropy)
    return attacks.per_example_pgd(logits_fn, x, y, key, eps=values['eps'], step_size=values['step_size'],
                                   budget=values['steps'], steps=max_steps,
                                   compact_min_size=config.attack.compact_min_size, **start)

  def target_loss(params, batch_stats, x, x_adv, y, values):
    """LS-CE (LAS-AT; plain CE with label_confidence 1, LAS-AWP) or TRADES with the per-example beta."""
    if trades:
      natural, batch_stats = ts.train_forward(model, params, batch_stats, x)
      adv, batch_stats = ts.train_forward(model, params, batch_stats, x_adv)
      kl = objectives.kl_divergence(natural, adv)
      return objectives.cross_entropy(natural, y).mean() + (values['beta'] * kl).mean(), (adv, batch_stats)
    adv, batch_stats = ts.train_forward(model, params, batch_stats, x_adv)
    return objectives.smoothed_cross_entropy(adv, y, config.label_confidence).mean(), (adv, batch_stats)

  def global_mean(v):
    return jax.lax.pmean(jnp.mean(v), ts.AXIS)

  def reward(state, x, x_adv, y, index, values, lr, key):
    """r = R1 + R2 + R3, one scalar for the global batch."""
    logits_fn = lambda variables: lambda v: model.apply(variables, v, train=False)
    adv_logits = logits_fn(state.variables)(x_adv)
    if trades:
      natural = logits_fn(state.variables)(x)
      r1 = global_mean(objectives.cross_entropy(natural, y) + values['beta'] * objectives.kl_divergence(
          natural, adv_logits))
    else:
      r1 = global_mean(objectives.cross_entropy(adv_logits, y))
    r1 = jnp.clip(r1, 0.0, l.loss_reward_clip)
    # The look-ahead copy: one SGD step from fresh momentum, lr * (g + wd * w), in training mode.
    (_, (_, stats)), grads = ts.local_value_and_grad(
        lambda p: target_loss(p, state.batch_stats, x, x_adv, y, values), state.params)
    grads = jax.lax.pmean(grads, ts.AXIS)
    wd = config.optimizer.weight_decay
    copy = dict(params=jax.tree.map(lambda w, g: w - lr * (g + wd * w), state.params, grads), batch_stats=stats)
    copy_fn = logits_fn(copy)
    correct = lambda v: (copy_fn(v).argmax(-1) == y)
    clean = robust = correct(x)
    for restart in range(l.reward_restarts):   # early-stopped PGD: an example is robust if no restart breaks it
      adv = attacks.pgd_k_tau(copy_fn, x, y, ts.example_keys(key, restart, index), eps=l.reward_eps,
                              step_size=l.reward_step_size, steps=l.reward_steps, tau=0,
                              compact_min_size=config.attack.compact_min_size)
      robust = robust & correct(adv.x_adv)
    clip = lambda v: jnp.clip(v, -l.accuracy_reward_clip, l.accuracy_reward_clip)
    return r1 + clip(l.robust_reward * global_mean(robust)) + clip(l.clean_reward * global_mean(clean))

  def update_policy(state, x, y, index, lr, key):
    sample_key, attack_key, reward_key = jax.random.split(key, 3)
    pol = state.method

    def loss_fn(params):
      logits, updates = policy.apply(dict(params=params, batch_stats=pol['batch_stats']), x, train=True,
                                     mutable=['batch_stats'])
      head_logits = split_heads(logits, choices)
      actions = strategy.sample(jax.lax.stop_gradient(head_logits), ts.example_keys(sample_key, 0, index))
      values = strategy_values(actions)
      x_adv = attack(state.variables, x, y, ts.example_keys(attack_key, 0, index), values).x_adv
      r = reward(state, x, x_adv, y, index, values, lr, reward_key)
      return strategy.reinforce_loss(head_logits, actions, r), (updates['batch_stats'], r)

    (_, (batch_stats, r)), grads = ts.local_value_and_grad(loss_fn, pol['params'])
    updates, opt_state = policy_tx.update(jax.lax.pmean(grads, ts.AXIS), pol['opt_state'], pol['params'])
    if l.policy_lr_follows_target:
      updates = jax.tree.map(lambda u: u * lr / config.lr_schedule[0][1], updates)
    return dict(params=optax.apply_updates(pol['params'], updates), batch_stats=batch_stats,
                opt_state=opt_state), r

  def step(state, batch, hparams):
    x, y, index = batch['image'], batch['label'], batch['index']
    update_key, sample_key, attack_key = jax.random.split(jax.random.fold_in(key, state.step), 3)
    is_update = state.step % l.policy_every == 0
    pol, r = jax.lax.cond(is_update, update_policy, lambda state, *_: (state.method, jnp.zeros(())),
                          state, x, y, index, hparams['lookahead_lr'], update_key)
    # A fresh sample, the policy in eval mode; keys by dataset index, so draws do not depend on the device split.
    logits = policy.apply(dict(params=pol['params'], batch_stats=pol['batch_stats']), x, train=False)
    values = strategy_values(strategy.sample(split_heads(logits, choices), ts.example_keys(sample_key, 0, index)))
    attack_keys = ts.example_keys(attack_key, 0, index)
    adv = attack(state.variables, x, y, attack_keys, values)

    loss_fn = lambda params: target_loss(params, state.batch_stats, x, adv.x_adv, y, values)
    perturbed = awp.perturb(loss_fn, state.params, hparams.get('awp_gamma', 0.0))
    (loss, (adv_logits, batch_stats)), grads = ts.local_value_and_grad(loss_fn, perturbed)
    state = ts.apply_gradients(state.replace(method=pol), tx, grads, batch_stats, config=config, at_params=perturbed)
    devices = jax.lax.psum(1, ts.AXIS)
    metrics = dict(loss=loss * y.shape[0], adv_correct=(adv_logits.argmax(-1) == y).sum(),
                   attack_steps=adv.steps.sum(), examples=y.shape[0], sampled_eps=values['eps'].sum(),
                   reward=r / devices, policy_updates=is_update / devices)
    return state, metrics

  return step
