"""Fast adversarial training: one gradient step per example for the attack, with a start that is random, learned
or carried over. Each method has its own per-device step:

- FGSM-RS (Wong, Rice & Kolter, ICLR 2020): FGSM from a uniform start.
- FGSM-GA (Andriushchenko & Flammarion, NeurIPS 2020): FGSM plus the GradAlign regulariser.
- Free-AT (Shafahi et al., NeurIPS 2019): each batch replayed m times, the perturbation carried across batches.
- FGSM-SDI (Jia et al., TIP 2022): the start proposed by a generator trained to maximise the loss.
- FGSM-PGI (Jia et al., ECCV 2022): the start taken from the previous batch (BP), the example's previous epoch (EP)
  or its momentum over epochs (MEP), with a regulariser tying the two forwards' logits.

Each `*_step(model, tx, config, key)` returns `step(state, batch, hparams) -> (state, metric sums)` for one device
(see `step.make_train_step`); methods with state also have `*_init(config, model, input_shape, num_rows)`.
All run the target in training mode throughout, as their official code does, so every forward updates BatchNorm;
`attack.model_mode='eval'` takes the attack's input gradients in eval mode instead, as the search-based methods do.
On 1/8- and 1/4-width SmallCNNs on CIFAR-10 the training-mode attack collapsed FGSM-GA, FGSM-SDI and FGSM-PGI to a
constant predictor and the eval-mode one did not (FGSM-PGI also collapses at lambda 10 in eval mode): the attack that
sees the batch's own normalisation is too strong for such small networks (docs/results/fast_methods.md).
"""

import jax
import jax.numpy as jnp
import optax

from advjax.methods import memory, search
from advjax import train_state as ts
from advjax.attacks import parts
from advjax.models import generator as generator_lib


def _attack_in_train_mode(config):
  return config.attack.get('model_mode', 'train') == 'train'


def project(delta, x, eps):
  """delta clipped to [-eps, eps], then so that x + delta stays in [0, 1]."""
  return jnp.clip(x + jnp.clip(delta, -eps, eps), 0.0, 1.0) - x


def input_gradient(model, params, batch_stats, x, y, confidence=1.0, train=True):
  """d mean-LS-CE(f(x), y) / dx with the model in training mode (or eval mode), and the BatchNorm statistics after."""
  def loss(v):
    if train:
      logits, new_stats = ts.train_forward(model, params, batch_stats, v)
    else:
      logits, new_stats = model.apply(dict(params=params, batch_stats=batch_stats), v, train=False), batch_stats
    return search.smoothed_cross_entropy(logits, y, confidence).mean(), new_stats
  (_, new_stats), grad = jax.value_and_grad(loss, has_aux=True)(x)
  return grad, new_stats


def _metrics(loss, logits, y, bp_per_example):
  return dict(loss=loss * y.shape[0], adv_correct=(logits.argmax(-1) == y).sum(),
              attack_steps=bp_per_example * y.shape[0], examples=y.shape[0])


# --- FGSM-RS -----------------------------------------------------------------------------------------------------------

def fgsm(model, params, batch_stats, x, y, delta, config, clamped_input=False):
  """One FGSM step from x + delta: (x + P(delta + step sign g), g, the BatchNorm statistics after its forward).

  g = d CE / d delta at x + delta or, with `clamped_input`, at clip01(x + delta) back-propagated as PyTorch 1.4 (the
  official FGSM-GA code's environment) does `torch.max(torch.min(v, 1), 0)`: zero where v is at a bound or beyond it.
  """
  a = config.attack
  v = x + delta
  grad, batch_stats = input_gradient(model, params, batch_stats, jnp.clip(v, 0.0, 1.0) if clamped_input else v, y,
                                     train=_attack_in_train_mode(config))
  if clamped_input:
    grad = jnp.where((v > 0) & (v < 1), grad, 0)
  return x + project(delta + a.step_size * jnp.sign(grad), x, a.eps), grad, batch_stats


def fgsm_rs_start(config, x, keys):
  """The official `train_fgsm.py`'s delta: U(-eps, eps), clipped so that x + delta is in [0, 1] (`attack.clip_init`)."""
  a = config.attack
  return parts.random_start(keys, x, a.eps, a.init, clip=a.clip_init) - x


def fgsm_rs_step(model, tx, config, key):
  """FGSM from `fgsm_rs_start`, then the SGD step on CE(f(x_adv)), both forwards in training mode as the official
  `train_fgsm.py` (`model.train()` throughout)."""

  def step(state, batch, hparams):
    del hparams
    x, y = batch['image'], batch['label']
    delta = fgsm_rs_start(config, x, ts.example_keys(key, state.step, batch['index']))
    x_adv, _, batch_stats = fgsm(model, state.params, state.batch_stats, x, y, delta, config)

    def loss_fn(params):
      logits, stats = ts.train_forward(model, params, batch_stats, x_adv)
      return search.cross_entropy(logits, y).mean(), (logits, stats)

    (loss, (logits, batch_stats)), grads = ts.local_value_and_grad(loss_fn, state.params)
    state = ts.apply_gradients(state, tx, grads, batch_stats, config=config)
    return state, _metrics(loss, logits, y, 1)

  return step


# --- FGSM-GA -----------------------------------------------------------------------------------------------------------

def grad_align_draws(config, x, keys):
  """The FGSM start's delta (`attack.init`, unclipped, as the official `train.py`) and the regulariser's eta."""
  a = config.attack
  delta = parts.random_start(jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys), x, a.eps, a.init, clip=False) - x
  eta = parts.uniform_noise(jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys), x, -a.eps, a.eps)
  return delta, eta


def grad_align_step(model, tx, config, key):
  """FGSM (from `grad_align_draws`' delta, step `attack.step_size` clipped to eps) and CE + lambda (1 - mean
  cos(g, g(x + eta))), g the FGSM gradient, eta ~ U(-eps, eps) unclipped, the second gradient differentiated (double
  backprop), the first not.

  As the official `train.py`: the FGSM gradient is taken through clip01(x + delta) (`fgsm`'s `clamped_input`: zero
  at pixels 0 and 255 from the zero start), and the cosine is averaged over the examples whose two gradients are
  non-zero.
  """
  weight = config.grad_align.weight

  def step(state, batch, hparams):
    del hparams
    x, y = batch['image'], batch['label']
    delta, eta = grad_align_draws(config, x, ts.example_keys(key, state.step, batch['index']))
    x_adv, grad_start, batch_stats = fgsm(model, state.params, state.batch_stats, x, y, delta, config,
                                          clamped_input=True)

    def loss_fn(params):
      logits, stats = ts.train_forward(model, params, batch_stats, x_adv)
      ce = search.cross_entropy(logits, y).mean()
      grad_noisy, stats = input_gradient(model, params, stats, x + eta, y)
      flat = lambda g: g.reshape(g.shape[0], -1)
      nonzero = (jnp.linalg.norm(flat(grad_start), axis=1) > 0) & (jnp.linalg.norm(flat(grad_noisy), axis=1) > 0)
      cos = optax.cosine_similarity(flat(grad_start), flat(grad_noisy), epsilon=1e-12)
      # The global mean over non-zero examples, written so that pmean of the local gradients is its gradient.
      count = jnp.maximum(jax.lax.psum(nonzero.sum(), ts.AXIS), 1)
      devices = jax.lax.psum(1, ts.AXIS)
      align = weight * (1.0 / devices - jnp.where(nonzero, cos, 0).sum() / count) * devices
      return ce + align, (logits, stats)

    (loss, (logits, batch_stats)), grads = ts.local_value_and_grad(loss_fn, state.params)
    state = ts.apply_gradients(state, tx, grads, batch_stats, config=config)
    return state, _metrics(loss, logits, y, 2)   # BP: the FGSM gradient and the regulariser's input gradient

  return step


# --- Free-AT -----------------------------------------------------------------------------------------------------------

def free_init(config, model, input_shape, num_rows):
  """The perturbation carried across batches: one slot per example of the global batch, zeros at first."""
  del model, num_rows
  return lambda key: (None, dict(delta=jnp.zeros((config.batch_size, *input_shape), jnp.float32)))


def kernel_l2(params):
  """sum(w^2) / 2 over the convolution and dense kernels (the official model's `_decay`: its 'DW' variables, not
  BatchNorm's scale and offset nor the biases)."""
  kernels = [leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0] if path[-1].key == 'kernel']
  return sum(jnp.sum(jnp.square(kernel)) for kernel in kernels) / 2


@jax.custom_jvp
def clip01_tf(v):
  """clip(v, 0, 1) with the official TF `clip_by_value`'s gradient, which passes at the bounds too. The official
  sums x + delta exactly on [0, 255] pixels; here the float32 sum in [0, 1] units can land an ulp beyond a bound it
  reaches exactly (x = 247/255, delta = 8/255), so the gradient passes within 1e-6 (far under a pixel level) of it."""
  return jnp.clip(v, 0.0, 1.0)


@clip01_tf.defjvp
def _clip01_tf_jvp(primals, tangents):
  (v,), (tangent,) = primals, tangents
  return clip01_tf(v), jnp.where((v >= -1e-6) & (v <= 1 + 1e-6), tangent, 0)


def free_step(model, tx, config, key):
  """m replays of the batch; each is one forward-backward of CE + `free.weight_decay` * `kernel_l2` (the official
  loss) giving both the weight gradient (applied at once) and the perturbation's,
  delta <- clip(delta + step sign g, -eps, eps) (the official TF code; inputs clipped to [0, 1] by `clip01_tf`)."""
  del key
  a, replays, weight_decay = config.attack, config.free.replays, config.free.weight_decay

  def step(state, batch, hparams):
    del hparams
    x, y = batch['image'], batch['label']

    def replay(_, carry):
      state, delta, _, _ = carry

      def loss_fn(params, delta):
        logits, stats = ts.train_forward(model, params, state.batch_stats, clip01_tf(x + delta))
        ce = search.cross_entropy(logits, y).mean()
        return ce + weight_decay * kernel_l2(params), (ce, logits, stats)

      params = jax.lax.pcast(state.params, ts.AXIS, to='varying')
      (_, (loss, logits, stats)), (grads, grad_delta) = jax.value_and_grad(
          loss_fn, argnums=(0, 1), has_aux=True)(params, delta)
      state = ts.apply_gradients(state, tx, grads, stats, config=config)
      delta = jnp.clip(delta + a.step_size * jnp.sign(grad_delta), -a.eps, a.eps)
      return state, delta, loss.astype(jnp.float32), jnp.sum(logits.argmax(-1) == y, dtype=jnp.int32)

    zero = lambda dtype: jax.lax.pcast(jnp.zeros((), dtype), ts.AXIS, to='varying')   # per device, as the loop's
    state, delta, loss, correct = jax.lax.fori_loop(
        0, replays, replay, (state, state.memory['delta'], zero(jnp.float32), zero(jnp.int32)))
    metrics = dict(loss=loss * y.shape[0], adv_correct=correct, attack_steps=replays * y.shape[0],
                   examples=y.shape[0])
    return state.replace(memory=dict(delta=delta)), metrics   # CE of the last replay; BP: m per example

  return step


def free_updates_per_batch(config):
  return config.free.replays


# --- FGSM-SDI ----------------------------------------------------------------------------------------------------------

def _generator(config):
  axis = ts.AXIS if config.bn_stats == 'global' else None
  return generator_lib.SDIGenerator(eps=config.attack.eps, bn_axis_name=axis, dtype=jnp.dtype(config.model.dtype))


def _generator_optimizer(config):
  """Adam with PyTorch's coupled weight decay; its scheduler steps only at generator updates, so the LR is fixed."""
  s = config.sdi
  return optax.chain(optax.add_decayed_weights(s.weight_decay), optax.adam(s.learning_rate))


def sdi_init(config, model, input_shape, num_rows):
  del model, num_rows
  generator, tx = _generator(config), _generator_optimizer(config)

  def init(key):
    image = jnp.zeros((1, *input_shape))
    variables = generator.init(key, image, image, train=False)
    return dict(params=variables['params'], batch_stats=variables['batch_stats'],
                opt_state=tx.init(variables['params'])), None

  return init


def sdi_perturbation(model, config):
  """FGSM-SDI's attack for one device, `perturb(state, x, y, hparams) -> (delta, generator state, BatchNorm
  statistics)`: clean CE input gradient g0; every `sdi.generator_every` batches of an epoch (from its first, as the
  official loop's `i % attack_iters == 0`; `hparams['epoch_first_step']`) one generator update on -LS-CE at the final example
  (the generator and the target in training mode); then delta_init = G([x, sign g0]) (the generator in eval mode)
  and one FGSM step, delta = clip(delta_init + clip(alpha sign g, -eps, eps), -eps, eps), g the CE input gradient at
  x + delta_init, unclipped as in the official code (so is x + delta)."""
  a, s, confidence = config.attack, config.sdi, config.label_confidence
  generator, generator_tx = _generator(config), _generator_optimizer(config)
  attack_train = _attack_in_train_mode(config)

  def final_perturbation(params, batch_stats, x, y, delta_init):
    grad, batch_stats = input_gradient(model, params, batch_stats, x + jax.lax.stop_gradient(delta_init), y,
                                       train=attack_train)
    step = jnp.clip(a.step_size * jnp.sign(grad), -a.eps, a.eps)
    return jnp.clip(delta_init + step, -a.eps, a.eps), batch_stats

  def update_generator(gen, params, batch_stats, x, y, grad_sign):
    def loss_fn(gen_params):
      delta_init, updates = generator.apply(dict(params=gen_params, batch_stats=gen['batch_stats']), x, grad_sign,
                                            train=True, mutable=['batch_stats'])
      delta, stats = final_perturbation(params, batch_stats, x, y, delta_init)
      logits, stats = ts.train_forward(model, params, stats, x + delta)
      return -search.smoothed_cross_entropy(logits, y, confidence).mean(), (updates['batch_stats'], stats)
    (_, (gen_stats, batch_stats)), grads = ts.local_value_and_grad(loss_fn, gen['params'])
    updates, opt_state = generator_tx.update(jax.lax.pmean(grads, ts.AXIS), gen['opt_state'], gen['params'])
    return dict(params=optax.apply_updates(gen['params'], updates), batch_stats=gen_stats,
                opt_state=opt_state), batch_stats

  def perturb(state, x, y, hparams):
    grad, batch_stats = input_gradient(model, state.params, state.batch_stats, x, y, train=attack_train)
    grad_sign = jnp.sign(grad)
    gen, batch_stats = jax.lax.cond(
        (state.step - hparams['epoch_first_step']) % s.generator_every == 0, update_generator, lambda gen, params, stats, *_: (gen, stats),
        state.method, state.params, batch_stats, x, y, grad_sign)
    delta_init = generator.apply(dict(params=gen['params'], batch_stats=gen['batch_stats']), x, grad_sign,
                                 train=False)
    delta, batch_stats = final_perturbation(state.params, batch_stats, x, y, delta_init)
    return delta, gen, batch_stats

  return perturb


def sdi_step(model, tx, config, key):
  """`sdi_perturbation`'s delta, then the SGD step on LS-CE(f(x + delta)), the target in training mode."""
  del key
  perturb, confidence = sdi_perturbation(model, config), config.label_confidence

  def step(state, batch, hparams):
    x, y = batch['image'], batch['label']
    delta, gen, batch_stats = perturb(state, x, y, hparams)

    def loss_fn(params):
      logits, stats = ts.train_forward(model, params, batch_stats, x + delta)
      return search.smoothed_cross_entropy(logits, y, confidence).mean(), (logits, stats)

    (loss, (logits, batch_stats)), grads = ts.local_value_and_grad(loss_fn, state.params)
    state = ts.apply_gradients(state.replace(method=gen), tx, grads, batch_stats, config=config)
    return state, _metrics(loss, logits, y, 2)   # BP: clean gradient and FGSM gradient (+2 every generator update)

  return step


# --- FGSM-PGI ----------------------------------------------------------------------------------------------------------

def pgi_start(config, keys, shape):
  """One start per key, what the memory holds at first and after each reset: the official code's random vertex
  clip(alpha sign u, -eps, eps), u ~ U(-eps, eps) (`pgi.start='vertex'`), or u itself (`'uniform'`, the paper's)."""
  a = config.attack
  u = jax.vmap(lambda k: jax.random.uniform(k, shape, jnp.float32, -a.eps, a.eps))(keys)
  return u if config.pgi.start == 'uniform' else jnp.clip(a.step_size * jnp.sign(u), -a.eps, a.eps)


def pgi_init(config, model, input_shape, num_rows):
  """EP and MEP: one perturbation (and MEP's momentum) per training example; BP: one per slot of the global batch,
  the previous batch's. Perturbations start at `pgi_start`'s draws, the momentum at 0."""
  del model
  rows = config.batch_size if config.pgi.prior == 'bp' else num_rows

  def init(key):
    delta = pgi_start(config, jax.random.split(key, rows), input_shape)
    state = dict(delta=delta)
    if config.pgi.prior == 'mep':
      state['momentum'] = jnp.zeros_like(delta)
    return None, state

  return init


def pgi_hparams(config, epoch):
  """`reset_prior` 1 in the epochs whose examples restart from fresh `pgi_start` draws (momentum 0), as the official
  code's reset of the whole memory every `pgi.reset_every` epochs (1-based epochs 41, 81, ...; the first epoch's start
  is the memory's init); never for BP."""
  every = config.pgi.reset_every
  if config.pgi.prior == 'bp' or not every:
    return {}
  return dict(reset_prior=float(epoch > 1 and (epoch - 1) % every == 0))


def pgi_step(model, tx, config, key):
  """FGSM from the prior delta_0: delta = P(delta_0 + alpha sign g), g = grad LS-CE(f(x + delta_0)), and
  L = LS-CE(f(x + delta)) + lambda * reg(f(x + delta) - f(x + delta_0)), both forwards in training mode and both
  differentiated (z_0 not detached). The memory then keeps delta (BP, EP) or, for MEP,
  m <- mu m + g / ||g||_1 and eta <- P(delta_0 + alpha sign m), one L1 norm over the whole batch (`FGSM_MEP.py`).

  `pgi.momentum_input='sign'`: m <- mu m + sign(g), the paper's. `pgi.reg_reduction`: 'mean_classes', the code's MSE
  over logits, or 'sum_classes', the paper's squared L2 norm read literally (10x stronger for 10 classes at the same
  lambda). In a reset epoch (`pgi_hparams`) an example's delta_0 is a fresh `pgi_start` draw and its momentum 0.
  """
  a, p, confidence = config.attack, config.pgi, config.label_confidence
  by_index, attack_train = p.prior != 'bp', _attack_in_train_mode(config)

  def prior(state, x, index, hparams):
    """delta_0, and MEP's momentum."""
    if not by_index:
      return state.memory['delta'], None
    delta0 = memory.read(state.memory['delta'], index)
    momentum = memory.read(state.memory['momentum'], index) if p.prior == 'mep' else None
    if 'reset_prior' in hparams:
      reset = hparams['reset_prior'] > 0
      delta0 = jnp.where(reset, pgi_start(config, ts.example_keys(key, state.step, index), x.shape[1:]), delta0)
      momentum = None if momentum is None else jnp.where(reset, 0.0, momentum)
    return delta0, momentum

  def step(state, batch, hparams):
    x, y, index = batch['image'], batch['label'], batch['index']
    delta0, momentum = prior(state, x, index, hparams)

    eval_grad = None if attack_train else input_gradient(model, state.params, state.batch_stats, x + delta0, y,
                                                         confidence, train=False)[0]

    def loss_fn(params):
      forward = lambda v: ts.train_forward(model, params, state.batch_stats, v)
      logits0, vjp, stats = jax.vjp(forward, x + delta0, has_aux=True)   # one forward: the attack and the regulariser
      ce_grad = jax.grad(lambda z: search.smoothed_cross_entropy(z, y, confidence).mean())(logits0)
      grad = jax.lax.stop_gradient(vjp(ce_grad)[0]) if attack_train else eval_grad
      delta = project(delta0 + a.step_size * jnp.sign(grad), x, a.eps)
      logits, stats = ts.train_forward(model, params, stats, x + delta)
      squared = jnp.square(logits - logits0)
      reg = squared.mean(-1) if p.reg_reduction == 'mean_classes' else squared.sum(-1)
      loss = search.smoothed_cross_entropy(logits, y, confidence).mean() + p.reg_weight * reg.mean()
      return loss, (logits, stats, grad, delta)

    (loss, (logits, batch_stats, grad, delta)), grads = ts.local_value_and_grad(loss_fn, state.params)
    new_memory = dict(delta=delta)
    if p.prior == 'mep':
      if p.momentum_input == 'l1':
        step_input = grad / jax.lax.psum(jnp.abs(grad).sum(), ts.AXIS)
      else:
        step_input = jnp.sign(grad)
      momentum = p.momentum * momentum + step_input
      new_memory = dict(delta=project(delta0 + a.step_size * jnp.sign(momentum), x, a.eps), momentum=momentum)
    if by_index:
      new_memory = {name: memory.write(state.memory[name], index, value) for name, value in new_memory.items()}
    state = ts.apply_gradients(state.replace(memory=new_memory), tx, grads, batch_stats, config=config)
    return state, _metrics(loss, logits, y, 1)

  return step
