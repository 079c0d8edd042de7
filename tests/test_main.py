"""The command line end to end: bad input is refused before compiling, and a killed run resumes exactly."""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from helpers import REPO

QUICKSTART = os.path.join(REPO, 'configs', 'quickstart.py')


def advjax(*args, cwd=REPO, **popen):
  command = [sys.executable, '-m', 'advjax.main', *args]
  env = dict(os.environ, PYTHONPATH=REPO)
  return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          **popen)


@pytest.mark.parametrize('args, message', [
    (['--config.method=bogus'], "unknown method 'bogus'; choose one of madry, fat"),
    (['--config.model.name=wrn-33-10'], "unknown model 'wrn-33-10'; choose one of tiny_cnn"),
    (['--config.data.source=lmdb'], "unknown config.data.source 'lmdb'; expected one of digits, idx, image_folder, tfds"),
    (['--config.attack.eps=-0.1'], 'attack.eps must be >= 0, got -0.1'),
    (['--config.tau_schedule=((1, 0), (3, 11))'], 'tau_schedule values must be <= 10, got 11'),
    (['--config.data.source=idx', '--config.data.name=mnist', '--config.data.data_dir=/nowhere'], '/nowhere/mnist'),
    (['--config.batch_size=3'], 'batch_size must be a positive multiple of the device count (2), got 3'),
    (['--config.attack.foo=1'], "unknown config field 'foo'"),
    (['--config.attack.steps=0.5'], "invalid literal for int() with base 10: '0.5'"),
    (['--config=configs/fat.py:digits,bogus'], "unknown config variant 'bogus'; choose from digits, small, eps16"),
    (['--config=configs/trades.py:digits', '--config.beta=-1'], 'beta must be >= 0, got -1.0'),
    (['--config=configs/dat.py:digits', '--config.fosc.reference=origin'],
     "fosc.reference must be 'clean' or 'start', got 'origin'"),
    (['--config=configs/cat.py:digits', '--config.steps_schedule=((1, 0), (2, 12))'],
     'steps_schedule values must be <= 10, got 12'),
    (['--config=configs/fgsm_pgi.py:digits', '--config.pgi.prior=last'],
     "pgi.prior must be one of bp, ep, mep; got 'last'"),
    (['--config=configs/las_at.py:digits', '--config.las.eps_choices=()'], 'las.eps_choices must be non-empty'),
    (['--config=configs/fgsm_sdi.py:digits', '--config.label_confidence=1.5'], 'label_confidence must be in (0, 1]'),
    (['--config=configs/fgsm_rs.py:digits', '--config.attack.steps=3'], 'fgsm_rs takes one attack step'),
    (['--config=configs/fgsm_ga.py:digits', '--config.attack.model_mode=test'],
     "attack.model_mode must be one of train, eval; got 'test'"),
])
def test_invalid_config_exits_2_with_one_line(args, message, tmp_path):
  started = time.perf_counter()
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


def checkpoint_of(workdir):
  """The latest checkpoint, as a tree of numpy arrays: parameters, optimiser and the method's state and memory."""
  with ocp.CheckpointManager(os.path.join(workdir, 'checkpoints')) as manager:
    return manager.restore(manager.latest_step())


def metrics_of(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def kill_after_first_checkpoint(args, workdir, epochs, cwd=REPO):
  """Starts `advjax *args` and SIGKILLs it as soon as its epoch-1 checkpoint is in `workdir`, before the last."""
  killed = advjax(*args, cwd=cwd)
  deadline = time.time() + 300
  while not (workdir / 'checkpoints' / '1').is_dir():
    assert killed.poll() is None and time.time() < deadline, killed.stderr.read()
    time.sleep(0.02)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert not (workdir / 'checkpoints' / str(epochs)).exists(), 'killed too late to test resuming'


def assert_same_run(workdir, reference):
  """Same metrics every epoch and the same final checkpoint (every leaf of the state) as the reference run."""
  want, got = metrics_of(reference), metrics_of(workdir)
  assert [m['epoch'] for m in got] == [m['epoch'] for m in want]
  for a, b in zip(got, want):
    for key in ('train_loss', 'bp_per_example', 'natural_acc', 'pgd_acc'):
      np.testing.assert_allclose(a[key], b[key], rtol=1e-6)
  got, want = checkpoint_of(workdir), checkpoint_of(reference)
  assert jax.tree.structure(got) == jax.tree.structure(want)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path):
  overrides = ['--config.num_epochs=3', '--config.log_every_steps=5']
  straight = advjax(f'--config={QUICKSTART}', f'--workdir={tmp_path / "straight"}', *overrides)
  assert straight.wait(timeout=300) == 0, straight.stderr.read()

  # No --workdir: the run goes to ./runs/quickstart, and the same command resumes there.
  workdir = tmp_path / 'runs' / 'quickstart'
  kill_after_first_checkpoint([f'--config={QUICKSTART}', *overrides], workdir, 3, cwd=tmp_path)
  resumed = advjax(f'--config={QUICKSTART}', *overrides, cwd=tmp_path)
  out, err = resumed.communicate(timeout=300)
  assert resumed.returncode == 0, err
  assert 'Resuming from the checkpoint of epoch' in out, out
  assert 'Final: natural accuracy' in out
  assert_same_run(workdir, tmp_path / 'straight')


@pytest.mark.parametrize('config, state', [
    ('configs/fgsm_pgi.py:digits,ep', 'memory'),   # per-example perturbations, rows sharded over the devices
    ('configs/las_at.py:digits', 'method'),        # the policy network and its optimiser
])
def test_killed_stateful_run_resumes_exactly(config, state, tmp_path):
  args = [f'--config={config}', '--config.num_epochs=3', '--config.data.num_train=640']
  straight = advjax(*args, f'--workdir={tmp_path / "straight"}')
  assert straight.wait(timeout=300) == 0, straight.stderr.read()
  assert jax.tree.leaves(checkpoint_of(tmp_path / 'straight')[state])

  workdir = tmp_path / 'resumed'
  kill_after_first_checkpoint([*args, f'--workdir={workdir}'], workdir, 3)
  out, err = advjax(*args, f'--workdir={workdir}').communicate(timeout=300)
  assert 'Resuming from the checkpoint of epoch' in out, out + err
  assert_same_run(workdir, tmp_path / 'straight')


def two_processes(*args, log_dir):
  """launch/multi_process_cpu.sh: two JAX processes with a localhost coordinator, each with its shard of the data."""
  env = dict(os.environ, PYTHONPATH=REPO, ADVJAX_PYTHON=sys.executable, ADVJAX_LOG_DIR=str(log_dir))
  env.pop('XLA_FLAGS', None)
  done = subprocess.run([os.path.join(REPO, 'launch', 'multi_process_cpu.sh'), '2', *args],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stdout + done.stderr
  return done.stdout


def test_two_processes_train_and_resume(tmp_path):
  run = lambda epochs: two_processes(f'--config={QUICKSTART}', f'--workdir={tmp_path / "run"}',
                                     f'--config.num_epochs={epochs}', '--config.data.num_train=512',
                                     log_dir=tmp_path / 'logs')
  first = run(2)
  assert '2 device(s) in 2 process(es), 8 steps per epoch' in first, first
  resumed = run(3)
  assert 'Resuming from the checkpoint of epoch 2' in resumed and resumed.count('Final:') == 1, resumed
  assert [m['epoch'] for m in metrics_of(tmp_path / 'run')] == [1, 2, 3]   # written once, by process 0
  assert 'epoch 1/' not in (tmp_path / 'logs' / 'process_1.log').read_text()
  last = metrics_of(tmp_path / 'run')[-1]
  assert last['natural_acc'] > 0.5 and (last['natural_acc'] * 360) % 1 < 1e-6   # all 360 test digits, once


def test_per_example_memory_across_two_processes(tmp_path):
  """FGSM-PGI EP's memory, its rows split between two processes, checkpointed by both and resumed: the same run as
  one process with two devices."""
  args = ['--config=configs/fgsm_pgi.py:digits,ep', '--config.data.num_train=512']
  two_processes(*args, f'--workdir={tmp_path / "two"}', '--config.num_epochs=1', log_dir=tmp_path / 'logs')
  resumed = two_processes(*args, f'--workdir={tmp_path / "two"}', '--config.num_epochs=2', log_dir=tmp_path / 'logs')
  assert 'Resuming from the checkpoint of epoch 1' in resumed, resumed
  one = advjax(*args, f'--workdir={tmp_path / "one"}', '--config.num_epochs=2')   # XLA_FLAGS: 2 devices
  assert one.wait(timeout=300) == 0, one.stderr.read()
  assert_same_run(tmp_path / 'two', tmp_path / 'one')


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
  run = advjax('--config=configs/fat.py', f'--workdir={tmp_path}', '--config.model.name=small_cnn',
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


@pytest.mark.parametrize('args, message', [
    ([], '--config.checkpoint is required'),
    (['--config.checkpoint=/nowhere'], '/nowhere/config.json not found'),
    (['--config.checkpoint=.', '--config.protocol=pgd'], 'not found'),
])
def test_invalid_eval_config_exits_2(args, message):
  run = advjax('--config=configs/eval.py', *args)
  _, err = run.communicate(timeout=60)
  assert run.returncode == 2 and len(err.strip().splitlines()) == 1 and message in err, err
