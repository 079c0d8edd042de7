"""LAS-AT: learnable attack strategy (Jia et al., CVPR 2022), with its LAS-TRADES and LAS-AWP variants.

A policy network (a classifier trunk on the clean image, one categorical head per attack parameter) samples a
strategy per example: eps, step size, number of steps (and TRADES' beta). The target trains on the PGD examples of
those strategies; at the 1-based iterations `las.policy_every`, 2 `las.policy_every`, ... the policy is updated
by REINFORCE on one scalar reward per batch:

  r = clip(R1) + clip(m2 * robust accuracy of a look-ahead copy) + clip(m3 * its clean accuracy),

R1 the target's loss on the policy's examples, the copy one SGD step (fresh momentum) of the target on them, its
robust accuracy under PGD-10 with 2 restarts run on the copy in training mode. As the official code: the reward's
strategy sample is drawn with the policy in training mode, and a fresh sample with the policy in eval mode trains
the target.
"""
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import optax

from advjax import attacks, models, schedules
from advjax.methods import awp, search, strategy
from advjax import train_state as ts
from advjax.attacks import losses, parts

_PIXEL = 1 / 255   # eps and step-size choices are written in /255 units, as in the official commands
_DRAWS = ('reward_sample', 'reward_start', 'reward_restarts', 'sample', 'start')


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


def step_keys(key, step):
  """{draw: key} for one train step: the reward's strategy sample, attack start and restarts; the target's sample
  and attack start. Each is folded with the dataset index per example (`ts.example_keys(k, 0, index)`)."""
  return dict(zip(_DRAWS, jax.random.split(jax.random.fold_in(key, step), len(_DRAWS))))


def policy_optimizer(config):
  """Gradient-norm clip, then SGD (coupled weight decay, momentum where the variant has it) at `las.policy_lr`.

  With `las.policy_lr_follows_target` the step is scaled by the target's LR over its initial LR: the official
  LAS-TRADES scheduler, which steps at every policy update (every iteration) with the target's milestones, and
  LAS-AWP's piecewise schedule. LAS-AT's scheduler steps at policy updates only, so its LR never decays.
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

  # The official LAS-AWP reward forwards (R1, R2, R3 and the copy's AWP proxy) feed the network the image without
  # `normalize()`: the same network without its normalisation (`las.reward_skips_normalisation`).
  reward_model = model.clone(mean=None, std=None) if l.reward_skips_normalisation else model
  eval_fn = lambda variables, net=model: lambda v: net.apply(variables, v, train=False)

  def strategy_values(actions):
    values = strategy.values(actions, choices)
    return dict(values, eps=values['eps'] * _PIXEL, step_size=values['step_size'] * _PIXEL)

  def attack(variables, x, y, key, values):
    """PGD with each example's strategy: TRADES' start and KL loss for LAS-TRADES, else a U(-8/255, 8/255) start."""
    start = dict(init='gaussian', clip_init=False, loss=losses.kl_to_clean) if trades else dict(
        init='uniform', start_eps=l.start_eps, loss=losses.cross_entropy)
    return attacks.per_example_pgd(eval_fn(variables), x, y, key, eps=values['eps'], step_size=values['step_size'],
                                   budget=values['steps'], steps=max_steps,
                                   compact_min_size=config.attack.compact_min_size, **start)

  def target_loss(params, batch_stats, x, x_adv, y, values, confidence):
    """LS-CE at `confidence` (LAS-AT 0.7; LAS-AWP's target 1: CE) or TRADES with the per-example beta."""
    if trades:
      natural, batch_stats = ts.train_forward(model, params, batch_stats, x)
      adv, batch_stats = ts.train_forward(model, params, batch_stats, x_adv)
      kl = search.kl_divergence(natural, adv)
      return search.cross_entropy(natural, y).mean() + (values['beta'] * kl).mean(), (adv, batch_stats)
    adv, batch_stats = ts.train_forward(model, params, batch_stats, x_adv)
    return search.smoothed_cross_entropy(adv, y, confidence).mean(), (adv, batch_stats)

  def lookahead_loss(params, batch_stats, x, x_adv, y, values):
    """The copy's loss (`train_target_model`): LS-CE at `las.lookahead_label_confidence`, or TRADES whose KL takes
    a third forward of the clean batch (same logits; the running statistics see it)."""
    if not trades:
      return target_loss(params, batch_stats, x, x_adv, y, values, l.lookahead_label_confidence)
    natural, batch_stats = ts.train_forward(model, params, batch_stats, x)
    adv, batch_stats = ts.train_forward(model, params, batch_stats, x_adv)
    natural_again, batch_stats = ts.train_forward(model, params, batch_stats, x)
    kl = search.kl_divergence(natural_again, adv)
    return search.cross_entropy(natural, y).mean() + (values['beta'] * kl).mean(), (adv, batch_stats)

  def global_mean(v):
    return jax.lax.pmean(jnp.mean(v), ts.AXIS)

  def lookahead(state, x, x_adv, y, values, lr, gamma):
    """The copy: one SGD step of the target from fresh momentum, lr * (g + wd * w), in training mode; with
    `las.lookahead_awp` at AWP-perturbed weights (LAS-AWP: the proxy's CE through `reward_model`), the update
    applied to the unperturbed ones as AWP's restore does."""
    loss_fn = lambda p: lookahead_loss(p, state.batch_stats, x, x_adv, y, values)
    at = state.params
    if l.lookahead_awp:
      proxy_loss = lambda p: (search.cross_entropy(
          ts.train_forward(reward_model, p, state.batch_stats, x_adv)[0], y).mean(), None)
      at = awp.perturb(proxy_loss, state.params, gamma)
    (_, (_, stats)), grads = ts.local_value_and_grad(loss_fn, at)
    grads = jax.lax.pmean(grads, ts.AXIS)
    wd = config.optimizer.weight_decay
    return dict(params=jax.tree.map(lambda w, w_at, g: w - lr * (g + wd * w_at), state.params, at, grads),
                batch_stats=stats)

  def train_mode_pgd(copy, x, y, keys):
    """The reward's PGD as the official `attack_pgd` runs it on the copy, in training mode: batch statistics, and
    every forward updates the running ones. U(-eps, eps) starts; with `las.reward_early_stop` only the examples
    still classified correctly step and the loop ends when none is (LAS-AT, LAS-TRADES), else plain PGD (LAS-AWP).
    Of the restarts each example keeps the point of highest loss (ties: the later). Returns (points, statistics)."""
    def forward(stats, v):
      return ts.train_forward(model, copy['params'], stats, v)

    def body(s):
      k, x_adv, stats, _ = s
      def total(v):
        logits, new_stats = forward(stats, v)
        return search.cross_entropy(logits, y).sum(), (logits, new_stats)
      (_, (logits, stats)), grad = jax.value_and_grad(total, has_aux=True)(x_adv)
      stepping = (logits.argmax(-1) == y) if l.reward_early_stop else jnp.ones_like(y, bool)
      done = jax.lax.psum(stepping.sum(), ts.AXIS) == 0
      stepped = parts.ascent_step(x_adv, x, grad, eps=l.reward_eps, step_size=l.reward_step_size)
      return k + 1, jnp.where(parts.per_example(stepping, x), stepped, x_adv), stats, done

    def run(r, stats):
      start = parts.random_start(parts.fold_in(keys, r), x, l.reward_eps, 'uniform')
      _, x_adv, stats, _ = jax.lax.while_loop(lambda s: (s[0] < l.reward_steps) & ~s[3], body,
                                              (0, start, stats, jnp.zeros((), bool)))
      logits, stats = forward(stats, x_adv)
      return x_adv, search.cross_entropy(logits, y), stats

    def restart(r, best):
      best_x, best_loss, stats = best
      x_adv, loss, stats = run(r, stats)
      better = loss >= best_loss
      return jnp.where(parts.per_example(better, x), x_adv, best_x), jnp.maximum(loss, best_loss), stats

    best_x, _, stats = jax.lax.fori_loop(1, l.reward_restarts, restart, run(0, copy['batch_stats']))
    return jax.lax.stop_gradient(best_x), stats

  def reward(state, x, x_adv, y, values, hparams, restart_keys):
    """r = R1 + R2 + R3, one scalar for the global batch; and the target's statistics (LAS-TRADES' R1 forwards
    run in training mode and update them)."""
    batch_stats = state.batch_stats
    if trades:
      natural, batch_stats = ts.train_forward(model, state.params, batch_stats, x)
      adv_logits, batch_stats = ts.train_forward(model, state.params, batch_stats, x_adv)
      r1 = search.cross_entropy(natural, y) + values['beta'] * search.kl_divergence(natural, adv_logits)
    else:
      r1 = search.cross_entropy(eval_fn(state.variables, reward_model)(x_adv), y)
    r1 = jnp.clip(global_mean(r1), 0.0, l.loss_reward_clip)
    copy = lookahead(state.replace(batch_stats=batch_stats), x, x_adv, y, values, hparams['lookahead_lr'],
                     hparams.get('awp_gamma', 0.0))
    robust_x, copy['batch_stats'] = train_mode_pgd(copy, x, y, restart_keys)
    accuracy = lambda v: global_mean(eval_fn(copy, reward_model)(v).argmax(-1) == y)
    clip = lambda v: jnp.clip(v, -l.accuracy_reward_clip, l.accuracy_reward_clip)
    r = r1 + clip(l.robust_reward * accuracy(robust_x)) + clip(l.clean_reward * accuracy(x))
    return r, batch_stats

  def update_policy(state, x, y, index, hparams, keys):
    pol = state.method

    def loss_fn(params):
      logits, updates = policy.apply(dict(params=params, batch_stats=pol['batch_stats']), x, train=True,
                                     mutable=['batch_stats'])
      head_logits = split_heads(logits, choices)
      actions = strategy.sample(jax.lax.stop_gradient(head_logits), keys['reward_sample'])
      values = strategy_values(actions)
      x_adv = attack(state.variables, x, y, keys['reward_start'], values).x_adv
      r, batch_stats = reward(state, x, x_adv, y, values, hparams, keys['reward_restarts'])
      return strategy.reinforce_loss(head_logits, actions, r), (updates['batch_stats'], r, batch_stats)

    (_, (policy_stats, r, batch_stats)), grads = ts.local_value_and_grad(loss_fn, pol['params'])
    updates, opt_state = policy_tx.update(jax.lax.pmean(grads, ts.AXIS), pol['opt_state'], pol['params'])
    if l.policy_lr_follows_target:
      updates = jax.tree.map(lambda u: u * hparams['lookahead_lr'] / config.lr_schedule[0][1], updates)
    pol = dict(params=optax.apply_updates(pol['params'], updates), batch_stats=policy_stats, opt_state=opt_state)
    return pol, r, batch_stats

  def no_update(state, *_):
    return state.method, jnp.zeros(()), state.batch_stats

  def step(state, batch, hparams):
    x, y, index = batch['image'], batch['label'], batch['index']
    # Keys by dataset index, so draws do not depend on the device split.
    keys = {name: ts.example_keys(k, 0, index) for name, k in step_keys(key, state.step).items()}
    is_update = (state.step + 1) % l.policy_every == 0
    pol, r, batch_stats = jax.lax.cond(is_update, update_policy, no_update, state, x, y, index, hparams, keys)
    state = state.replace(method=pol, batch_stats=batch_stats)
    # A fresh sample, the policy in eval mode.
    logits = policy.apply(dict(params=pol['params'], batch_stats=pol['batch_stats']), x, train=False)
    values = strategy_values(strategy.sample(split_heads(logits, choices), keys['sample']))
    adv = attack(state.variables, x, y, keys['start'], values)
    x_train = adv.x_adv
    if l.train_eps_clip:   # LAS-AWP trains on the perturbation clipped to its --epsilon, whatever eps was sampled
      x_train = jnp.clip(x + jnp.clip(x_train - x, -l.train_eps_clip, l.train_eps_clip), 0.0, 1.0)

    loss_fn = lambda params: target_loss(params, state.batch_stats, x, x_train, y, values, config.label_confidence)
    perturbed = awp.perturb(loss_fn, state.params, hparams.get('awp_gamma', 0.0))
    (loss, (adv_logits, batch_stats)), grads = ts.local_value_and_grad(loss_fn, perturbed)
    state = ts.apply_gradients(state, tx, grads, batch_stats, config=config, at_params=perturbed)
    if l.clean_forward_after_step:   # LAS-AWP's clean training-mode forward after the update (its logged loss)
      state = state.replace(batch_stats=ts.train_forward(model, state.params, state.batch_stats, x)[1])
    devices = jax.lax.psum(1, ts.AXIS)
    metrics = dict(loss=loss * y.shape[0], adv_correct=(adv_logits.argmax(-1) == y).sum(),
                   attack_steps=adv.steps.sum(), examples=y.shape[0], sampled_eps=values['eps'].sum(),
                   reward=r / devices, policy_updates=is_update / devices)
    return state, metrics

  return step
