"""The command line end to end: bad input is refused before compiling, and a killed run resumes exactly."""
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from advjax import checkpoint
from helpers import REPO, tensorboard_scalars

QUICKSTART = os.path.join(REPO, 'configs', 'quickstart.py')


def advjax(*args, cwd=REPO, env=None, **popen):
  command = [sys.executable, '-m', 'advjax.main', *args]
  env = dict(os.environ, PYTHONPATH=REPO, **(env or {}))
  return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **popen)


@pytest.mark.parametrize('args, message', [
    (['--config.method=bogus'], "unknown method 'bogus'; choose one of madry, fat"),
    (['--config.model.name=wrn-33-10'], "unknown model 'wrn-33-10'; choose one of tiny_cnn"),
    (['--config.data.source=lmdb'], "unknown config.data.source 'lmdb'; expected one of digits, idx, image_folder, tfds"),
    (['--config.attack.eps=-0.1'], 'attack.eps must be in [0, 1], got -0.1'),
    (['--config.eval.eps=2'], 'eval.eps must be in [0, 1], got 2.0'),
    (['--config.optimizer.momentum=1.5'], 'optimizer.momentum must be in [0, 1), got 1.5'),
    (['--config.data.crop_padding=-2'], 'data.crop_padding must be >= 0, got -2'),
    (['--config.tau_schedule=((1, 0), (3, 11))'], 'tau_schedule values must be <= 10, got 11'),
    (['--config.data.source=idx', '--config.data.name=mnist', '--config.data.data_dir=/nowhere'], '/nowhere/mnist'),
    (['--config.batch_size=3'], 'batch_size must be a positive multiple of the device count (2), got 3'),
    (['--config.attack.foo=1'], "unknown config field 'foo'"),
    (['--config.attack.steps=0.5'], "--config.attack.steps=0.5: expected an integer, got '0.5'"),
    (['--config=configs/fat.py:digits,bogus'], "unknown config variant 'bogus'; choose from digits, small, l2, eps16"),
    (['--config=configs/trades.py:digits', '--config.beta=-1'], 'beta must be >= 0, got -1.0'),
    (['--config=configs/dat.py:digits', '--config.fosc.reference=origin'],
     "fosc.reference must be 'clean' or 'start', got 'origin'"),
    (['--config=configs/cat.py:digits', '--config.steps_schedule=((1, 0), (2, 12))'],
     'steps_schedule values must be <= 7, got 12'),
    (['--config=configs/fgsm_pgi.py:digits', '--config.pgi.prior=last'],
     "pgi.prior must be one of bp, ep, mep; got 'last'"),
    (['--config=configs/las_at.py:digits', '--config.las.eps_choices=()'], 'las.eps_choices must be non-empty'),
    (['--config=configs/fgsm_sdi.py:digits', '--config.label_confidence=1.5'], 'label_confidence must be in (0, 1]'),
    (['--config=configs/fgsm_rs.py:digits', '--config.attack.steps=3'], 'fgsm_rs takes one attack step'),
    (['--config=configs/fgsm_ga.py:digits', '--config.attack.model_mode=test'],
     "attack.model_mode must be one of train, eval; got 'test'"),
    (['--config=configs/awp.py:digits', '--config.attack.model_mode=test'],
     "attack.model_mode must be one of eval, train, train_except_after_eval; got 'test'"),
    (['--config=configs/dat.py:digits', '--config.optimizer.weight_decay_on=biases'],
     "optimizer.weight_decay_on must be one of all, kernels; got 'biases'"),
    (['--config.num_epochs=abc'], "--config.num_epochs=abc: expected an integer, got 'abc'"),
    (['--config.attack.eps=big'], "--config.attack.eps=big: expected a number, got 'big'"),
    (['--config.num_epochs=0'], 'num_epochs must be >= 1, got 0'),
    (['--config.lr_schedule=((2, 0.1),)'], 'lr_schedule must start at epoch 1'),
    (['--config.model.dtype=float16'], "model.dtype must be float32 or bfloat16, got 'float16'"),
    (['--config.ema_decay=1.5'], 'ema_decay must be in [0, 1)'),
    (['--config.eval.steps=0'], 'eval.steps must be >= 1, got 0'),
    (['--config.attack.init=gauss'], "attack.init must be one of uniform, gaussian, none; got 'gauss'"),
    (['--config.data.source=image_folder', '--config.data.name=cifar', '--config.data.data_dir={empty}'],
     'must hold images of the same, non-empty set of classes'),
    (['--config=configs/fat.py:digits', '--config.data.num_train=100000'], 'exceeds the 1437 train examples'),
    (['--config.batch_size=2048'], 'batch_size 2048 exceeds the 1437 training examples'),
    (['--config=configs/fgsm_rs.py:digits', '--config.attack.norm=l2'], "attack.norm 'l2' trains madry, trades"),
])
def test_invalid_config_exits_2_with_one_line(args, message, tmp_path, tmp_path_factory):
  started = time.perf_counter()
  empty = tmp_path_factory.mktemp('images') / 'cifar'
  for split in ('train', 'test'):
    (empty / split).mkdir(parents=True)
  args = [arg.replace('{empty}', str(empty.parent)) for arg in args]
  if not args[0].startswith('--config='):
    args = [f'--config={QUICKSTART}', *args]
  run = advjax(*args, f'--workdir={tmp_path}')
  out, err = run.communicate(timeout=120)
  assert run.returncode == 2, err
  assert len(err.strip().splitlines()) == 1, err
  assert err.startswith('advjax: error: ') and message.lower() in err.lower(), err
  assert out == ''
  assert not os.listdir(tmp_path), 'nothing should be written for a rejected config'
  assert time.perf_counter() - started < 20


def test_missing_config_file_exits_2(tmp_path):
  run = advjax('--config=configs/nothere.py', f'--workdir={tmp_path}')
  _, err = run.communicate(timeout=60)
  assert run.returncode == 2 and err.count('\n') == 1 and 'nothere.py' in err, err


def metrics_of(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def kill_after_first_checkpoint(args, workdir, epochs, steps_per_epoch, cwd=REPO):
  """Starts `advjax *args` and SIGKILLs it as soon as its first checkpoint is in `workdir`, before the last."""
  killed = advjax(*args, cwd=cwd)
  deadline = time.time() + 300
  while not checkpoint.finished_steps(workdir):
    assert killed.poll() is None and time.time() < deadline, killed.stderr.read()
    time.sleep(0.02)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert max(checkpoint.finished_steps(workdir)) < epochs * steps_per_epoch, 'killed too late to test resuming'


def assert_same_run(workdir, reference, exact=True):
  """The same metrics every epoch and the same final checkpoint (every leaf of the state) as the reference run:
  bitwise on one machine and device count, else to float tolerance."""
  want, got = metrics_of(reference), metrics_of(workdir)
  assert [m['epoch'] for m in got] == [m['epoch'] for m in want]
  same = np.testing.assert_array_equal if exact else functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-7)
  for a, b in zip(got, want):
    for key in ('train_loss', 'bp_per_example', 'natural_acc', 'pgd_acc'):
      same(a[key], b[key])
  got, want = checkpoint.latest_state(workdir), checkpoint.latest_state(reference)   # weights, optimiser, memory...
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    same(a, b)


QUICKSTART_STEPS = 22   # 1437 training digits in batches of 64
QUICKSTART_3 = [f'--config={QUICKSTART}', '--config.num_epochs=3']


@pytest.fixture(scope='module')
def straight_quickstart(tmp_path_factory):
  """An uninterrupted 3-epoch quick start, the reference for the fault tests."""
  workdir = tmp_path_factory.mktemp('straight')
  run = advjax(*QUICKSTART_3, f'--workdir={workdir}')
  assert run.wait(timeout=300) == 0, run.stderr.read()
  return workdir


def test_a_workdir_of_another_model_exits_2_and_keeps_its_files(straight_quickstart, tmp_path):
  workdir = tmp_path / 'run'
  shutil.copytree(straight_quickstart, workdir)
  before = {path: path.read_bytes() for path in workdir.rglob('*') if path.is_file()}
  run = advjax(f'--config={QUICKSTART}', f'--workdir={workdir}', '--config.model.name=small_cnn')
  _, err = run.communicate(timeout=120)
  assert run.returncode == 2 and len(err.strip().splitlines()) == 1, err
  assert f"{workdir} holds checkpoints of a run with model.name 'tiny_cnn', not 'small_cnn'" in err, err
  assert {path: path.read_bytes() for path in workdir.rglob('*') if path.is_file()} == before

  # A config.json that does not describe its checkpoints: the restore finds the misfit, and still touches nothing.
  settings = workdir / 'config.json'
  settings.write_text(json.dumps(dict(json.loads(settings.read_text()), model=dict(name='small_cnn'))))
  before = {path: path.read_bytes() for path in workdir.rglob('*') if path.is_file()}
  run = advjax(f'--config={QUICKSTART}', f'--workdir={workdir}', '--config.model.name=small_cnn')
  _, err = run.communicate(timeout=120)
  assert run.returncode == 2 and len(err.strip().splitlines()) == 1, err
  assert re.search(r'checkpoint .*/checkpoints/66 does not fit this run \(batch_stats/bn0/mean is '
                   r'in the checkpoint, not in this run\)', err), err
  assert {path: path.read_bytes() for path in workdir.rglob('*') if path.is_file()} == before


@pytest.fixture
def small_disk(tmp_path):
  """A 800 kB tmpfs: two quick-start checkpoints fit (about 310 kB each), the third does not. Needs mount (root)."""
  disk = tmp_path / 'disk'
  disk.mkdir()
  mounted = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=800k', 'tmpfs', str(disk)], capture_output=True)
  if mounted.returncode:
    pytest.skip(f'cannot mount a small tmpfs here: {mounted.stderr.decode().strip()}')
  yield disk
  subprocess.run(['umount', str(disk)], check=True)


def test_a_full_disk_stops_in_one_line_and_the_run_resumes_once_there_is_room(small_disk):
  """Full while a checkpoint is written, then read-only: one line and exit 1 each time, the checkpoints complete."""
  workdir = small_disk / 'run'
  args = [f'--config={QUICKSTART}', '--config.num_epochs=4', f'--workdir={workdir}']
  full = advjax(*args)
  _, err = full.communicate(timeout=300)
  assert full.returncode == 1 and err.strip() == (
      f'advjax: error: cannot write a checkpoint in {workdir}/checkpoints (No space left on device); the last complete '
      f'one is {workdir}/checkpoints/44: free space or fix permissions and rerun to resume'), err
  assert checkpoint.finished_steps(workdir) == [22, 44]
  subprocess.run(['mount', '-o', 'remount,size=4m', str(small_disk)], check=True)
  run = advjax(*args)
  out, err = run.communicate(timeout=300)
  assert run.returncode == 0, err
  assert f'Resuming from the checkpoint of epoch 2 in {workdir}' in out, out
  assert [record['epoch'] for record in metrics_of(workdir)] == [1, 2, 3, 4]

  subprocess.run(['mount', '-o', 'remount,ro', str(small_disk)], check=True)   # unwritable: refused in one line
  readonly = advjax(*args[:-2], '--config.num_epochs=5', f'--workdir={workdir}')
  _, err = readonly.communicate(timeout=300)
  assert readonly.returncode == 1 and err.strip() == (
      f'advjax: error: cannot write in {workdir}: Read-only file system ({workdir}/config.json); free space or fix '
      'permissions and rerun to resume'), err
  assert checkpoint.finished_steps(workdir) == [44, 66, 88]


def test_a_run_with_per_example_memory_resumes_on_another_device_count(tmp_path):
  """FGSM-PGI's memory has 1438 rows on 2 devices, 1437 on 1: the run moves on, its checkpoints kept."""
  pgi = ['--config=configs/fgsm_pgi.py:digits,ep', f'--workdir={tmp_path}']
  first = advjax(*pgi, '--config.num_epochs=1')
  assert first.wait(timeout=300) == 0, first.stderr.read()
  moved = advjax(*pgi, '--config.num_epochs=2', env=dict(XLA_FLAGS='--xla_force_host_platform_device_count=1'))
  out, err = moved.communicate(timeout=300)
  assert moved.returncode == 0, err
  assert '1 device(s)' in out and f'Resuming from the checkpoint of epoch 1 in {tmp_path}' in out, out
  assert checkpoint.finished_steps(tmp_path) == [22, 44] and not (tmp_path / 'damaged_checkpoints').exists()
  assert [record['epoch'] for record in metrics_of(tmp_path)] == [1, 2]


def test_killed_run_resumes_and_matches_an_uninterrupted_run(straight_quickstart, tmp_path):
  # No --workdir: the run goes to ./runs/quickstart, and the same command resumes there.
  workdir = tmp_path / 'runs' / 'quickstart'
  kill_after_first_checkpoint(QUICKSTART_3, workdir, 3, QUICKSTART_STEPS, cwd=tmp_path)
  resumed = advjax(*QUICKSTART_3, cwd=tmp_path)
  out, err = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, err
  assert 'Resuming from the checkpoint of epoch' in out, out
  assert 'Final: natural accuracy' in out
  assert_same_run(workdir, straight_quickstart)


def signal_at(args, line_start, signal_number):
  """Runs advjax, sends it `signal_number` once it prints a line starting with `line_start`; its stdout after."""
  run = advjax(*args, '--config.log_every_steps=1')
  for line in run.stdout:
    if line.startswith(line_start):
      break
  started = time.time()
  run.send_signal(signal_number)
  out, err = run.communicate(timeout=60)
  assert run.returncode == 0 and time.time() - started < 60, err
  return out


def test_preemption_checkpoints_mid_epoch_and_the_rerun_matches(straight_quickstart, tmp_path):
  args = [*QUICKSTART_3, f'--workdir={tmp_path}']
  out = signal_at(args, 'epoch 2 step 5/', signal.SIGTERM)   # a few batches into epoch 2
  assert 'Preempted (SIGTERM) after batch' in out, out
  (mid_epoch,) = [n for n in checkpoint.finished_steps(tmp_path) if n % QUICKSTART_STEPS]
  assert QUICKSTART_STEPS + 5 <= mid_epoch < 2 * QUICKSTART_STEPS
  out, err = advjax(*args, '--config.log_every_steps=1').communicate(timeout=300)
  assert f'Resuming from the checkpoint of epoch 1 and {mid_epoch - QUICKSTART_STEPS} batches of epoch 2' in out, err
  assert_same_run(tmp_path, straight_quickstart)


def test_preemption_during_the_first_compile_and_during_the_evaluation(straight_quickstart, tmp_path):
  """A signal before the first step has compiled is honoured after that step; one during the per-epoch evaluation
  once the epoch is saved. Both exit 0, and the reruns end as the uninterrupted run."""
  args = [*QUICKSTART_3, f'--workdir={tmp_path}']
  out = signal_at(args, 'fat on digits:', signal.SIGTERM)   # logged before the restore and the first compile
  assert 'Preempted (SIGTERM) after batch 1 of epoch 1' in out, out
  assert checkpoint.finished_steps(tmp_path) == [1]
  out = signal_at(args, f'epoch 1 step {QUICKSTART_STEPS}/', signal.SIGINT)   # the epoch's evaluation follows
  assert 'Preempted (SIGINT) at the end of epoch 1' in out, out
  assert max(checkpoint.finished_steps(tmp_path)) == QUICKSTART_STEPS
  out, err = advjax(*args).communicate(timeout=300)
  assert 'Resuming from the checkpoint of epoch 1 in' in out, err
  assert_same_run(tmp_path, straight_quickstart)


def test_damaged_and_unfinished_checkpoints_are_skipped(straight_quickstart, tmp_path):
  args = [*QUICKSTART_3, f'--workdir={tmp_path}']
  first = advjax(*args[:-1], '--config.num_epochs=2', args[-1])
  assert first.wait(timeout=300) == 0, first.stderr.read()
  latest = tmp_path / 'checkpoints' / str(2 * QUICKSTART_STEPS)
  unfinished = tmp_path / 'checkpoints' / f'{3 * QUICKSTART_STEPS}.orbax-checkpoint-tmp-1700000000'
  shutil.copytree(latest, unfinished)   # and what a kill while writing the next one leaves
  for path in [*latest.rglob('*'), *unfinished.rglob('*')]:   # a disk that lost the data: every file truncated
    if path.is_file():
      path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  out, err = advjax(*args).communicate(timeout=300)
  assert f'warning: checkpoint {latest} cannot be read' in err, err
  assert not unfinished.exists()
  assert 'Resuming from the checkpoint of epoch 1 in' in out, out
  assert (tmp_path / 'damaged_checkpoints' / str(2 * QUICKSTART_STEPS)).is_dir()   # kept, out of the way
  assert_same_run(tmp_path, straight_quickstart)


def test_non_finite_training_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  args = [f'--config={QUICKSTART}', f'--workdir={tmp_path}', '--config.num_epochs=3',
          '--config.lr_schedule=((1, 0.1), (3, 1e30))']   # epoch 3 blows up
  run = advjax(*args)
  out, err = run.communicate(timeout=300)
  assert run.returncode == 1 and len(err.strip().splitlines()) == 1, err
  last_good = tmp_path / 'checkpoints' / str(2 * QUICKSTART_STEPS)
  batch = int(re.search(r'non-finite at batch (\d+) of the run', err).group(1))
  assert 2 * QUICKSTART_STEPS < batch <= 3 * QUICKSTART_STEPS, err
  assert f'the last good checkpoint is {last_good}' in err, err
  assert checkpoint.finished_steps(tmp_path) == [QUICKSTART_STEPS, 2 * QUICKSTART_STEPS]
  assert [m['epoch'] for m in metrics_of(tmp_path)] == [1, 2]


@pytest.mark.parametrize('config, state', [
    ('configs/fgsm_pgi.py:digits,ep', 'memory'),   # per-example perturbations, rows sharded over the devices
    ('configs/las_at.py:digits', 'method'),        # the policy network and its optimiser
])
def test_killed_stateful_run_resumes_exactly(config, state, tmp_path):
  args = [f'--config={config}', '--config.num_epochs=3', '--config.data.num_train=640']
  straight = advjax(*args, f'--workdir={tmp_path / "straight"}')
  assert straight.wait(timeout=300) == 0, straight.stderr.read()
  assert jax.tree.leaves(checkpoint.latest_state(tmp_path / 'straight')[state])

  workdir = tmp_path / 'resumed'
  kill_after_first_checkpoint([*args, f'--workdir={workdir}'], workdir, 3, 10)
  out, err = advjax(*args, f'--workdir={workdir}').communicate(timeout=300)
  assert 'Resuming from the checkpoint of epoch' in out, out + err
  assert_same_run(workdir, tmp_path / 'straight')


def two_processes(*args, log_dir, devices=1, wait=True):
  """launch/multi_process_cpu.sh: two JAX processes of `devices` CPU devices each, with a localhost coordinator,
  each with its shard of the data."""
  env = dict(os.environ, PYTHONPATH=REPO, ADVJAX_PYTHON=sys.executable, ADVJAX_LOG_DIR=str(log_dir))
  env.pop('XLA_FLAGS', None)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)   # two processes sharing one cache folder crashed one in a trial run
  launch = subprocess.Popen([os.path.join(REPO, 'launch', 'multi_process_cpu.sh'), '2', str(devices), *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  if not wait:
    return launch
  out, err = launch.communicate(timeout=300)
  assert launch.returncode == 0, out + err
  return out


def test_two_processes_are_preempted_together_and_resume_exactly(tmp_path):
  """FGSM-PGI EP over two JAX processes of two devices each (the README's example), its per-example memory split
  between the four. SIGTERM to the launcher: JAX's preemption sync manager picks one step, both processes checkpoint
  it and stop; the rerun resumes there and ends as an uninterrupted run does (metrics, weights, optimiser, memory)."""
  args = ['--config=configs/fgsm_pgi.py:digits,ep', '--config.num_epochs=2', '--config.log_every_steps=1',
          '--config.data.num_train=640']   # 10 steps per epoch
  steps = 10
  run = functools.partial(two_processes, *args, log_dir=tmp_path / 'logs', devices=2)
  straight = run(f'--workdir={tmp_path / "straight"}')
  assert f'4 device(s) in 2 process(es), {steps} steps per epoch' in straight, straight

  workdir = tmp_path / 'run'
  launch = run(f'--workdir={workdir}', wait=False)
  for line in launch.stdout:   # signal it early in epoch 2, so that the agreed step is still in that epoch
    if line.startswith('epoch 2 step 2/'):
      break
  started = time.time()
  launch.send_signal(signal.SIGTERM)
  out, err = launch.communicate(timeout=90)
  assert time.time() - started < 60, err   # the launcher itself exits 143, as a TERMed script does
  assert 'Preempted (sync point) after batch' in out, out + err
  (mid_epoch,) = [n for n in checkpoint.finished_steps(workdir) if n % steps]
  resumed = run(f'--workdir={workdir}')
  assert (f'Resuming from the checkpoint of epoch 1 and {mid_epoch - steps} batches of epoch 2'
          in resumed), resumed
  assert [m['epoch'] for m in metrics_of(workdir)] == [1, 2]   # written once, by process 0
  assert 'epoch 1/' not in (tmp_path / 'logs' / 'process_1.log').read_text()
  assert metrics_of(workdir)[-1]['eval_examples'] == 360   # all 360 test digits, once, over the two processes
  assert_same_run(workdir, tmp_path / 'straight')


def test_fault_injection_short_form():
  """benchmarks/fault_injection.py for one case (augmentation, EMA, bf16) and two random SIGKILLs: bitwise equal."""
  done = subprocess.run([sys.executable, os.path.join(REPO, 'benchmarks', 'fault_injection.py'), '--cases',
                         'quickstart_aug_ema_bf16', '--kills', '2', '--seed', '3'], cwd=REPO,
                        env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=400)
  assert done.returncode == 0, done.stdout + done.stderr
  assert '1 of 1 cases ended bitwise equal to their uninterrupted run' in done.stdout, done.stdout


def test_the_launcher_stops_the_others_and_exits_with_the_code_of_the_process_that_failed(tmp_path):
  """Process 1 exits 3 at once; process 0, left waiting for it at the coordinator, is stopped."""
  failing = tmp_path / 'python'
  failing.write_text('#!/usr/bin/env bash\n'
                     'for a in "$@"; do\n'
                     '  [[ $a == --process_id=1 ]] && { echo "process 1 gives up" >&2; exit 3; }\n'
                     'done\n'
                     f'exec {sys.executable} "$@"\n')
  failing.chmod(0o755)
  env = dict(os.environ, PYTHONPATH=REPO, ADVJAX_PYTHON=str(failing))
  started = time.time()
  launch = subprocess.run([os.path.join(REPO, 'launch', 'multi_process_cpu.sh'), '2', f'--config={QUICKSTART}',
                           f'--workdir={tmp_path / "run"}'], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
  assert launch.returncode == 3, launch.stderr
  assert 'launch: process 1 exited with code 3; stopping the other processes' in launch.stderr, launch.stderr
  assert '[p1] process 1 gives up' in launch.stderr and time.time() - started < 60


needs_data = pytest.mark.skipif(not os.environ.get('ADVJAX_DATA_DIR'),
                                reason='set ADVJAX_DATA_DIR to the shared data folder (CI does)')


@needs_data
@pytest.mark.parametrize('name', ['fat', 'madry', 'fgsm_rs', 'fgsm_ga', 'free_at', 'fgsm_sdi', 'fgsm_pgi',
                                  'las_at', 'las_trades', 'las_awp', 'awp'])
def test_paper_configs_pass_validation(name):
  from advjax import validation
  from helpers import load_config
  validation.check(load_config(name))


@needs_data
def test_fat_config_trains_on_a_cifar10_subset(tmp_path):
  run = advjax('--config=configs/fat.py', f'--workdir={tmp_path}', '--config.model.name=tiny_cnn',   # compiles fast
               '--config.data.num_train=128', '--config.data.num_test=64', '--config.batch_size=64',
               '--config.eval.batch_size=64', '--config.num_epochs=1', '--config.log_every_steps=1')
  out, err = run.communicate(timeout=600)
  assert run.returncode == 0, err
  assert 'examples/s, ETA' in out and 'Final: natural accuracy' in out, out
  (record,) = metrics_of(tmp_path)
  assert record['tau'] == 0 and record['lr'] == 0.1
  assert 0 < record['bp_per_example'] <= 10   # tau 0: an example stops at its first misclassification
  assert 0 <= record['pgd_acc'] <= record['natural_acc'] <= 1


def test_eval_command_on_a_trained_checkpoint(tmp_path):
  train = advjax(f'--config={QUICKSTART}', f'--workdir={tmp_path}', '--config.num_epochs=1',
                 '--config.ema_decay=0.9')
  assert train.wait(timeout=300) == 0, train.stderr.read()
  record = metrics_of(tmp_path)[-1]
  assert 0 < record['ema_natural_acc'] <= 1 and 0 <= record['ema_pgd_acc'] <= 1
  run = advjax('--config=configs/eval.py', f'--config.checkpoint={tmp_path}', '--config.protocol=trades_rs',
               '--config.eps=0.2', '--config.num_examples=60', '--config.batch_size=30', '--config.weights=ema')
  out, err = run.communicate(timeout=300)
  assert run.returncode == 0, err
  with open(tmp_path / 'eval_trades_rs.json') as f:
    result = json.load(f)
  assert [r['attack'] for r in result['rows']] == ['natural', 'FGSM', 'PGD-20', 'CW-30']
  assert result['examples'] == 60 and result['eps'] == 0.2
  assert '| PGD-20 |' in out and '(ema weights)' in (tmp_path / 'eval_trades_rs.md').read_text()


def test_l2_training_and_an_l2_cascade_on_its_checkpoint(tmp_path):
  """FAT under L2 (`:digits,l2`) for two epochs, then APGD-CE and FAB-T under L2 as a cascade on its checkpoint."""
  train = advjax('--config=configs/fat.py:digits,l2', f'--workdir={tmp_path}', '--config.num_epochs=2')
  assert train.wait(timeout=300) == 0, train.stderr.read()
  record = metrics_of(tmp_path)[-1]
  assert 0 < record['pgd_acc'] < record['natural_acc'] and 0 < record['bp_per_example'] <= 10
  run = advjax('--config=configs/eval.py', f'--config.checkpoint={tmp_path}', '--config.protocol=custom',
               '--config.attacks=apgd-ce,fab-t', '--config.mode=cascade', '--config.norm=l2', '--config.eps=1.0',
               '--config.num_examples=60', '--config.batch_size=30')
  out, err = run.communicate(timeout=300)
  assert run.returncode == 0, err
  with open(tmp_path / 'eval_custom.json') as f:
    result = json.load(f)
  assert result['norm'] == 'l2' and result['mode'] == 'cascade' and result['invalid_points'] == 0
  assert 0 < result['max_perturbation'] <= 1.0 + 1e-5
  attacked = [r['attacked'] for r in result['rows']]
  assert attacked[0] == 60 and attacked[2] < attacked[1]   # FAB-T only on what APGD-CE left
  assert 'Largest l2 perturbation' in out and not (tmp_path / 'eval_custom_state.json').exists()


def test_the_l1_standard_autoattack_on_a_run(straight_quickstart, tmp_path):
  """`--config.norm=l1`: the official L1 cascade (APGD-CE x 5 and APGD-T x 5 with the large-radius schedule, FAB-T,
  Square) on a checkpoint, its table and RobustBench-style entry."""
  run = advjax('--config=configs/eval.py', f'--config.checkpoint={straight_quickstart}', '--config.norm=l1',
               '--config.eps=1.0', '--config.num_examples=30', '--config.batch_size=30',
               f'--config.output={tmp_path / "l1"}')
  out, err = run.communicate(timeout=300)
  assert run.returncode == 0, err
  result = json.loads((tmp_path / 'l1.json').read_text())
  assert [r['attack'] for r in result['rows']] == ['natural', 'APGD-CE', 'APGD-T', 'FAB-T', 'Square']
  assert result['norm'] == 'l1' and result['invalid_points'] == 0 and 0 < result['max_perturbation'] <= 1.0 + 1e-4
  attacked = [r['attacked'] for r in result['rows']]
  assert attacked[1] > attacked[2] > 0   # APGD-T only on what APGD-CE left, and something is left
  entry = json.loads((tmp_path / 'l1_entry.json').read_text())
  assert (entry['threat_model'], entry['eps'], entry['n_examples']) == ('L1', '1', 30)
  assert 'Largest l1 perturbation' in out


def test_a_killed_evaluation_resumes_after_its_last_batch(straight_quickstart, tmp_path):
  """SIGKILL once APGD-CE has finished a batch; the rerun goes on from the state file and ends as a straight run."""
  args = ['--config=configs/eval.py', f'--config.checkpoint={straight_quickstart}', '--config.protocol=custom',
          '--config.attacks=apgd-ce,fab-t', '--config.mode=cascade', '--config.eps=0.2', '--config.num_examples=120',
          '--config.batch_size=20']
  straight = advjax(*args, f'--config.output={tmp_path / "straight"}')
  assert straight.wait(timeout=300) == 0, straight.stderr.read()
  state = tmp_path / 'killed_state.json'
  killed = advjax(*args, f'--config.output={tmp_path / "killed"}')
  deadline = time.time() + 300
  while not (state.exists() and json.loads(state.read_text())['stages'].get('APGD-CE', {}).get('correct')):
    assert killed.poll() is None and time.time() < deadline, killed.stderr.read()
    time.sleep(0.05)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  out, err = advjax(*args, f'--config.output={tmp_path / "killed"}').communicate(timeout=300)
  assert 'Resuming the evaluation from' in out, out + err
  want, got = (json.loads((tmp_path / f'{name}.json').read_text()) for name in ('straight', 'killed'))
  assert got['robust'] == want['robust'] and got['broken_by'] == want['broken_by']
  assert [r['cumulative'] for r in got['rows']] == [r['cumulative'] for r in want['rows']]
  assert not state.exists()


@pytest.mark.parametrize('args, message', [
    ([], '--config.checkpoint is required'),
    (['--config.checkpoint=/nowhere'], '/nowhere/config.json not found'),
    (['--config.checkpoint=.', '--config.protocol=pgd'], 'not found'),
    (['--config.checkpoint=/nowhere/model.pt', '--config.model.name=wrn-34-10'], '/nowhere/model.pt not found'),
])
def test_invalid_eval_config_exits_2(args, message):
  run = advjax('--config=configs/eval.py', *args)
  _, err = run.communicate(timeout=60)
  assert run.returncode == 2 and len(err.strip().splitlines()) == 1 and message in err, err


@pytest.mark.parametrize('args, message', [
    (['--config.protocol=dat', '--config.norm=l2'], "protocol 'dat' is L-inf only; under l2 use aa_standard"),
    (['--config.norm=l3'], 'norm must be one of linf, l2, l1'),
    (['--config.norm=l1', '--config.protocol=custom', '--config.attacks=pgd-10', '--config.eps=5'],
     "unknown attack 'pgd-10' under l1; use apgd-ce, apgd-t, fab-t, square"),
    (['--config.mode=alone'], "mode must be '' (the protocol's), 'cascade' or 'individual'"),
])
def test_invalid_eval_settings_on_a_run_exit_2(args, message, straight_quickstart):
  run = advjax('--config=configs/eval.py', f'--config.checkpoint={straight_quickstart}', *args)
  _, err = run.communicate(timeout=60)
  assert run.returncode == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_tensorboard_events_and_the_report_of_runs(straight_quickstart, tmp_path):
  records = metrics_of(straight_quickstart)
  scalars = tensorboard_scalars(straight_quickstart / 'tensorboard')
  for tag in ('train_loss', 'natural_acc', 'pgd_acc', 'bp_per_example'):
    assert [step for step, _ in scalars[tag]] == [1, 2, 3]
    np.testing.assert_allclose([v for _, v in scalars[tag]], [r[tag] for r in records], rtol=1e-6)

  other = tmp_path / 'eps_0.1'   # a second run, at another training eps, evaluated with the eval command's format
  other.mkdir()
  config = json.loads((straight_quickstart / 'config.json').read_text())
  config['attack']['eps'] = 0.1
  (other / 'config.json').write_text(json.dumps(config))
  (other / 'metrics.jsonl').write_text(''.join(json.dumps(dict(r, pgd_acc=r['pgd_acc'] / 2)) + '\n' for r in records))
  rows = [dict(attack=a, accuracy=v, cumulative=v, seconds=1.0) for a, v in (('natural', 97.5), ('PGD-20', 61.25))]
  (other / 'eval_dat.json').write_text(json.dumps(dict(eps=0.2, examples=360, rows=rows)))

  out = tmp_path / 'report'
  done = subprocess.run([sys.executable, '-m', 'advjax.report', str(straight_quickstart), str(other), f'--out={out}'],
                        cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  table = (out / 'report.md').read_text()
  assert table.splitlines()[0] == '| run | method | natural | PGD-20 | BP/example/epoch | training (s) |'
  last = records[-1]
  natural, pgd = 100 * last['natural_acc'], 100 * last['pgd_acc']
  assert f'| {straight_quickstart.name} | fat | {natural:.2f}* | {pgd:.2f}* |' in table
  assert '| eps_0.1 | fat | 97.50 | 61.25 |' in table
  for plot in ('accuracy_per_epoch.png', 'bp_per_epoch.png', 'eps_sweep.png'):
    assert (out / plot).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'

  done = subprocess.run([sys.executable, '-m', 'advjax.report', str(tmp_path / 'nowhere')], cwd=REPO,
                        env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True, timeout=60)
  assert done.returncode == 2 and done.stderr.count('\n') == 1 and 'nowhere/config.json not found' in done.stderr
