r"""Kills training runs with SIGKILL at random moments, reruns them, and checks that each ends bitwise equal to an
uninterrupted run: every metrics line (timings aside) and every leaf of the final checkpoint.

  python benchmarks/fault_injection.py                                  # every case below, 4 kills each
  python benchmarks/fault_injection.py --cases quickstart_aug_ema_bf16 free_at --kills 8 --seed 1

A kill lands at a uniformly random time within an uninterrupted run's duration. The first killed run compiles afresh
(its kill can land in the first compile) and its delay is drawn over a cold run's duration; the others find the
compilation cache warm, reach training at once and draw over a warm run's, so their kills spread over mid-epoch steps,
the per-epoch evaluations and checkpoint writes. The last line the run printed before it says where it landed.
Prints one line per kill and a summary; exits 1 if any resumed run differs.
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from advjax import checkpoint  # pylint: disable=g-import-not-at-top,wrong-import-position

# Runs on the digits (seconds each), covering augmentation, EMA and bf16 and every method with learned or remembered
# state; a per-epoch evaluation and checkpoint each epoch.
CASES = {
    'quickstart_aug_ema_bf16': ['--config=configs/quickstart.py', '--config.num_epochs=3',
                                '--config.data.crop_padding=2', '--config.data.flip=True', '--config.ema_decay=0.99',
                                '--config.model.dtype=bfloat16'],
    'free_at': ['--config=configs/free_at.py:digits', '--config.num_epochs=2'],
    'fgsm_sdi': ['--config=configs/fgsm_sdi.py:digits', '--config.num_epochs=2', '--config.sdi.generator_every=5'],
    'fgsm_pgi_mep': ['--config=configs/fgsm_pgi.py:digits', '--config.num_epochs=2'],
    'fgsm_pgi_bp': ['--config=configs/fgsm_pgi.py:digits,bp', '--config.num_epochs=2'],
    'awp': ['--config=configs/awp.py:digits', '--config.num_epochs=2'],
    'las_trades': ['--config=configs/las_trades.py:digits', '--config.num_epochs=2'],
}
TIMINGS = ('train_seconds', 'epoch_seconds')


def start(args, workdir, cache):
  """The run, with XLA's compilation cache in `cache`: a warm one lets a restart reach training in a few seconds, so
  that kills spread over the epochs, evaluations and checkpoint writes; an empty one makes it compile."""
  env = dict(os.environ, PYTHONPATH=REPO, JAX_COMPILATION_CACHE_DIR=cache,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  command = [sys.executable, '-m', 'advjax.main', *args, f'--workdir={workdir}', '--config.log_every_steps=1']
  return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process):
  out, _ = process.communicate()
  if process.returncode != 0:
    raise RuntimeError(f'exit {process.returncode}:\n{out}')


def records(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS} for line in f]


def same_run(workdir, reference):
  """'' if the run equals the reference bitwise, else the first difference."""
  got, want = records(workdir), records(reference)
  if len(got) != len(want):
    return f'{len(got)} metrics lines, not {len(want)}'
  for a, b in zip(got, want):
    if a != b:
      key = next(k for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k))
      return f'epoch {b["epoch"]} {key}: {a.get(key)!r} against {b.get(key)!r}'
  got, want = checkpoint.latest_state(workdir), checkpoint.latest_state(reference)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.tree.structure(got) != jax.tree.structure(want):
    return 'checkpoint trees differ'
  for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(got)[0], jax.tree.leaves(want)):
    if not np.array_equal(a, b):
      return f'checkpoint leaf {jax.tree_util.keystr(path)} differs'
  return ''


def kill_at(args, workdir, delay, cache):
  """Starts the run (resuming), SIGKILLs it after `delay` s; the last line it printed, or None if it finished."""
  process = start(args, workdir, cache)
  last = ['(nothing printed: starting or compiling)']

  def follow():
    for line in process.stdout:
      last[0] = line.strip() or last[0]
  reader = threading.Thread(target=follow, daemon=True)
  reader.start()
  try:
    process.wait(timeout=delay)
    return None
  except subprocess.TimeoutExpired:
    process.send_signal(signal.SIGKILL)
    process.wait()
    reader.join()
    return last[0][:100]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--cases', nargs='*', default=list(CASES), choices=list(CASES))
  parser.add_argument('--kills', type=int, default=4, help='SIGKILLs per case, each followed by a rerun')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--workdir', default='')
  flags = parser.parse_args()
  rng = random.Random(flags.seed)
  root = flags.workdir or tempfile.mkdtemp(prefix='advjax_faults_')
  tried = landed = equal = 0
  failures = []
  for case in flags.cases:
    args, reference = CASES[case], os.path.join(root, case, 'reference')
    warm = os.path.join(root, case, 'cache')
    durations = []
    for run in ('reference', 'warm'):   # the first compiles, filling the cache; the second finds it warm
      started = time.time()
      finish(start(args, os.path.join(root, case, run), warm))
      durations.append(time.time() - started)
    workdir = os.path.join(root, case, 'killed')
    for kill in range(flags.kills):   # the first restart compiles afresh: a kill there can land in the first compile
      duration = durations[min(kill, 1)]
      delay = rng.uniform(0, duration)
      where = kill_at(args, workdir, delay, warm if kill else os.path.join(root, case, 'cold'))
      tried += 1
      landed += where is not None
      print(f'{case} kill {kill + 1}: after {delay:.1f} s of {duration:.1f} s, '
            + (f'at "{where}"' if where else 'the run had finished'), flush=True)
    finish(start(args, workdir, warm))
    difference = same_run(workdir, reference)
    equal += not difference
    print(f'{case}: resumed run {"bitwise equal to" if not difference else "DIFFERS from"} the uninterrupted one'
          + (f' ({difference})' if difference else ''), flush=True)
    if difference:
      failures.append(case)
    shutil.rmtree(os.path.join(root, case), ignore_errors=True)
  print(f'{tried} kills tried, {landed} landed in a running process; {equal} of {len(flags.cases)} cases ended bitwise '
        'equal to their uninterrupted run' + (f'; differ: {", ".join(failures)}' if failures else ''))
  sys.exit(1 if failures else 0)


if __name__ == '__main__':
  main()
