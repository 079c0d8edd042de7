"""The training loop: `train_and_evaluate(config, workdir)`.

Epoch by epoch: adversarial training with the method's attack, evaluation of natural and PGD accuracy on the test
split, a checkpoint, and one JSON line of metrics. Rerunning with the same workdir resumes after the last checkpoint.
"""
import signal
import threading
import time
from typing import Callable, NamedTuple

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P

from advjax import checkpoint, data, methods, metrics, models, schedules, validation
from advjax import train_state as ts
from advjax import step as step_lib
from advjax.data import pipeline


def build_model(config, num_classes):
  """The config's model, its BatchNorm averaged over the mesh axis unless `bn_stats='per_device'`."""
  axis = ts.AXIS if config.bn_stats == 'global' else None
  return models.from_config(config.model, num_classes, bn_axis_name=axis)


def create_state(config, model, tx, input_shape, num_train, key, mesh):
  """The initial train state, with the method's own state and per-example memory where it has them."""
  init = methods.METHODS[config.method].init
  extras = init and init(config, model, input_shape, ts.memory_rows(num_train, mesh))
  return ts.create_train_state(model, tx, input_shape, key, mesh, ema=config.ema_decay > 0, extras=extras)


def eval_subset(num_test, num_examples, seed):
  """The test examples evaluated every epoch: all, or a seeded random subset (not the first ones: a class-grouped
  split such as the CIFAR-10 JPEG folders would give a few classes only)."""
  if num_examples < 0 or num_examples >= num_test:
    return np.arange(num_test)
  return np.sort(np.random.RandomState(seed).choice(num_test, num_examples, replace=False))


def make_loaders(config, dataset, mesh):
  """The training loader (augmented) and the loader of the test examples evaluated every epoch."""
  train = pipeline.Loader(mesh, dataset.train_images, dataset.train_labels, config.batch_size,
                          crop_padding=config.data.crop_padding, flip=config.data.flip)
  rows = eval_subset(len(dataset.test_labels), config.eval.num_examples, config.data.seed)
  test = pipeline.Loader(mesh, dataset.test_images[rows], dataset.test_labels[rows], config.eval.batch_size)
  return train, test


def evaluate(eval_step, loader, variables, key):
  """Natural and PGD accuracy over a test set on the devices, the last batch padded and masked."""
  sums = {}
  for batch in loader.batches(loader.eval_positions(), key):   # fetched one by one: one program in flight
    m = jax.device_get(eval_step(variables, batch))
    sums = {k: sums.get(k, 0) + v for k, v in m.items()}
  return dict(natural_acc=sums['natural_correct'] / sums['examples'], pgd_acc=sums['pgd_correct'] / sums['examples'],
              eval_examples=int(sums['examples']))   # the padding of the last batch masked out: checked in the tests


def evaluate_all(eval_step, loader, state, key):
  """`evaluate` for the raw weights, and with an `ema_` prefix for their moving average where it is kept."""
  results = evaluate(eval_step, loader, state.variables, key)
  if state.ema is not None:
    results.update({f'ema_{k}': v for k, v in evaluate(eval_step, loader, state.ema, key).items()
                    if k != 'eval_examples'})
  return results


class NonFiniteError(FloatingPointError):
  """The loss or the weights stopped being finite; nothing was saved after the last good checkpoint."""


class Preemption:
  """SIGTERM or SIGINT during training: `reached(batches_done)` turns True, and the loop checkpoints and returns.

  With several processes, JAX's preemption sync manager (started by `jax.distributed.initialize`) catches SIGTERM
  and agrees on one step at which every process saves; signal handlers are set in the main thread only.
  """

  def __enter__(self):
    self.signal, self._previous = None, {}
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      for number in (signal.SIGTERM, signal.SIGINT):
        self._previous[number] = signal.signal(number, self._note)
    return self

  def __exit__(self, *exc_info):
    for number, handler in self._previous.items():
      signal.signal(number, handler)

  def _note(self, number, frame):
    del frame
    self.signal = signal.Signals(number).name

  def reached(self, batches_done):
    if jax.process_count() > 1:
      return multihost_utils.reached_preemption_sync_point(batches_done)
    return self.signal is not None


def check_finite(sums, ckpt, updates_per_batch):
  """Raises NonFiniteError naming the first bad step and the checkpoint to go back to."""
  step = float(sums['first_nonfinite_step'])
  if np.isfinite(step):
    last = ckpt.latest()
    good = f'the last good checkpoint is {ckpt.path(last)}' if last else 'there is no checkpoint yet'
    batch = int(step) // updates_per_batch + 1
    raise NonFiniteError(f'the training loss or the weights became non-finite at batch {batch} of the run; stopped '
                         f'without saving, {good}')


def train_epoch(train_step, loader, state, sums, hparams, *, epoch, skip, key, config, progress, preemption, ckpt):
  """Batches `skip`, `skip + 1`, ... of the epoch's shuffled order, stopping early on preemption; returns the state,
  the epoch's metric sums (on the host) and the number of the epoch's batches done."""
  steps_per_epoch = loader.batches_per_epoch
  updates_per_batch = methods.METHODS[config.method].updates_per_batch(config)
  positions = loader.train_positions(key, epoch)[skip * loader.local_batch_size:]
  batches = steps_per_epoch
  for i, batch in enumerate(loader.batches(positions, jax.random.fold_in(key, epoch)), start=skip):
    state, sums = train_step(state, batch, hparams, sums)
    done = (epoch - 1) * steps_per_epoch + i + 1
    if not progress.started:   # time from here, once the step has compiled and run
      jax.block_until_ready(sums)
      progress.start(done, done * config.batch_size)
    if config.log_every_steps and done % config.log_every_steps == 0:
      s = jax.device_get(sums)
      check_finite(s, ckpt, updates_per_batch)
      metrics.log(f'epoch {epoch} step {i + 1}/{steps_per_epoch}: loss {s["loss"] / s["examples"]:.4f}, '
                  f'{progress.examples_per_second(done * config.batch_size):.1f} examples/s, '
                  f'ETA {progress.eta(done)}')
    if preemption.reached(done):
      batches = i + 1
      break
  sums = jax.device_get(sums)
  check_finite(sums, ckpt, updates_per_batch)
  return state, sums, batches


def train_and_evaluate(config, workdir):
  """Trains `config` in `workdir`, resuming from its last checkpoint; returns the final state and evaluation (None
  when preempted: the state is checkpointed and rerunning the same command resumes)."""
  with Preemption() as preemption:   # from the start: a signal while loading or compiling stops after the first batch
    return _train_and_evaluate(config, workdir, preemption)


class Run(NamedTuple):
  """What a run builds from its config before reading its checkpoints."""
  mesh: jax.sharding.Mesh
  train_loader: pipeline.Loader
  test_loader: pipeline.Loader
  state: ts.TrainState
  train_step: Callable
  eval_step: Callable
  data_key: jax.Array
  eval_key: jax.Array


def build(config):
  """The loaders, initial state and jitted steps of `config`; data.DataError or validation.ConfigError (before
  anything is compiled or written) when the data cannot be read or does not fit the config."""
  dataset = data.load(config.data)
  validation.check_against_data(config, len(dataset.train_labels),
                                len(eval_subset(len(dataset.test_labels), config.eval.num_examples, config.data.seed)),
                                dataset.train_images.shape[1:])
  mesh = ts.make_mesh()
  train_loader, test_loader = make_loaders(config, dataset, mesh)
  init_key, attack_key, data_key, eval_key = jax.random.split(jax.random.key(config.seed), 4)
  model = build_model(config, dataset.num_classes)
  tx = step_lib.make_optimizer(config, train_loader.batches_per_epoch)
  state = create_state(config, model, tx, dataset.train_images.shape[1:], len(dataset.train_labels), init_key, mesh)
  metrics.log(f'{config.method} on {dataset.name}: {train_loader.num_examples} train / {test_loader.num_examples} test '
              f'examples, {config.model.name} ({config.model.dtype}), {jax.device_count()} device(s) in '
              f'{jax.process_count()} process(es), {train_loader.batches_per_epoch} steps per epoch.')
  return Run(mesh, train_loader, test_loader, state, step_lib.make_train_step(model, tx, config, mesh, attack_key),
             step_lib.make_eval_step(model, config, mesh, eval_key), data_key, eval_key)


def _train_and_evaluate(config, workdir, preemption):
  run = build(config)   # each process keeps only its shards of the data, in the loaders
  train_loader, test_loader, train_step, eval_step = run.train_loader, run.test_loader, run.train_step, run.eval_step
  steps_per_epoch = train_loader.batches_per_epoch
  ckpt = checkpoint.Checkpointer(workdir, config.checkpoint_keep)
  state, sums, first_epoch, skip = resume(ckpt, run.state, config, steps_per_epoch, workdir)   # or StateMismatch
  if jax.process_index() == 0:   # once the checkpoints are known to fit: they keep the config they were written with
    (epath.Path(workdir) / 'config.json').write_text(config.to_json(indent=2))
  replicated = NamedSharding(run.mesh, P())   # the metric sums, placed as the step returns them: it compiles once
  sums = jax.device_put(sums, replicated)
  writer = metrics.Writer(workdir, last_epoch=first_epoch - 1)
  progress = metrics.Progress(config.num_epochs * steps_per_epoch)

  evaluation, preempted = None, None
  try:
    for epoch in range(first_epoch, config.num_epochs + 1):
      hparams = methods.hparams(config, epoch, first_step=(epoch - 1) * steps_per_epoch)
      epoch_start = time.perf_counter()
      state, sums, batches = train_epoch(train_step, train_loader, state, sums, hparams, epoch=epoch, skip=skip,
                                         key=run.data_key, config=config, progress=progress, preemption=preemption,
                                         ckpt=ckpt)
      train_seconds = time.perf_counter() - epoch_start
      done = (epoch - 1) * steps_per_epoch + batches
      if batches < steps_per_epoch:   # preempted mid-epoch: saved where it is, with the epoch's sums so far
        ckpt.save(done, state, sums)
        preempted = f'after batch {batches} of epoch {epoch}'
        break
      evaluation = evaluate_all(eval_step, test_loader, state, run.eval_key)
      record = epoch_record(config, epoch, done, hparams, sums, evaluation,
                            train_seconds=train_seconds, epoch_seconds=time.perf_counter() - epoch_start)
      writer.write(record)
      sums = jax.device_put(step_lib.zero_metrics(config), replicated)
      ckpt.save(done, state, sums)   # after the metrics line: a run killed in between redoes the epoch, once
      log_epoch(config, hparams, record, eta=progress.eta(done),
                examples_per_second=(batches - skip) * config.batch_size / train_seconds)
      skip = 0
      if preemption.reached(done) and epoch < config.num_epochs:   # the signal came during the evaluation
        preempted = f'at the end of epoch {epoch}'
        break
  finally:   # on errors too: the last good checkpoint is complete on disk
    try:
      ckpt.close()
    finally:
      writer.close()
  if preempted:
    metrics.log(f'Preempted ({preemption.signal or "sync point"}) {preempted}: checkpoint {ckpt.path(done)} '
                'written; rerun the same command to resume.')
    return state, None
  if evaluation is None:   # nothing left to train: report the restored state
    evaluation = evaluate_all(eval_step, test_loader, state, run.eval_key)
  log_final(config, evaluation, test_loader.num_examples)
  return state, evaluation


def resume(ckpt, state, config, steps_per_epoch, workdir):
  """The state and metric sums of the latest checkpoint (else the initial ones), the epoch to go on with and the
  batches of it already done."""
  state, sums, batches_done = ckpt.restore(state, step_lib.zero_metrics(config))
  epoch, skip = batches_done // steps_per_epoch + 1, batches_done % steps_per_epoch
  if batches_done:
    metrics.log(f'Resuming from the checkpoint of epoch {epoch - 1}'
                + (f' and {skip} batches of epoch {epoch}' if skip else '') + f' in {workdir}.')
  return state, sums, epoch, skip


def epoch_record(config, epoch, step, hparams, sums, evaluation, **timings):
  """The JSON line of a finished epoch: its hyperparameters, training means (from the epoch's metric sums),
  evaluation and timings."""
  record = dict(
      epoch=epoch, step=step, **hparams, lr=schedules.value_at(config.lr_schedule, epoch, config.lr_interpolation),
      train_loss=sums['loss'] / sums['examples'], train_adv_acc=sums['adv_correct'] / sums['examples'],
      bp_per_example=sums['attack_steps'] / sums['examples'], **_method_metrics(sums), **evaluation, **timings)
  return {k: float(v) if isinstance(v, (np.floating, np.integer)) else v for k, v in record.items()}


def log_epoch(config, hparams, record, *, examples_per_second, eta):
  settings = ''.join(f'{name} {value:g}, ' for name, value in hparams.items())
  metrics.log(f'epoch {record["epoch"]}/{config.num_epochs}: {settings}loss {record["train_loss"]:.4f}, '
              f'BP/example {record["bp_per_example"]:.2f}, {_accuracies(record, config.eval.steps)}; '
              f'{examples_per_second:.1f} train examples/s, ETA {eta}')


def log_final(config, evaluation, num_test):
  metrics.log(f'Final: natural accuracy {100 * evaluation["natural_acc"]:.2f}%, PGD-{config.eval.steps} accuracy '
              f'{100 * evaluation["pgd_acc"]:.2f}% ({num_test} test examples)'
              + (f'; EMA weights {100 * evaluation["ema_natural_acc"]:.2f}% / {100 * evaluation["ema_pgd_acc"]:.2f}%.'
                 if 'ema_pgd_acc' in evaluation else '.'))


def _method_metrics(sums):
  """Per-epoch means of what some methods report beyond the loss and the BP count."""
  record = {}
  if 'fosc' in sums:
    record['fosc_at_stop'] = sums['fosc'] / sums['examples']
  if 'sampled_eps' in sums:   # LAS-AT's policy
    record['mean_sampled_eps'] = sums['sampled_eps'] / sums['examples']
    record['policy_reward'] = sums['reward'] / max(sums['policy_updates'], 1)
  return record


def _accuracies(evaluation, pgd_steps):
  text = f'natural {100 * evaluation["natural_acc"]:.2f}%, PGD-{pgd_steps} {100 * evaluation["pgd_acc"]:.2f}%'
  if 'ema_pgd_acc' in evaluation:
    text += f' (EMA {100 * evaluation["ema_natural_acc"]:.2f}%, {100 * evaluation["ema_pgd_acc"]:.2f}%)'
  return text
