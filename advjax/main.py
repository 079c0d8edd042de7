"""advjax command line: `python -m advjax.main --config=configs/fat.py [--workdir=DIR] [--config.x.y=v ...]`.

The only module with flags. Rerunning a command resumes from the checkpoints in its workdir; SIGTERM or SIGINT
checkpoints and exits 0; a loss or weights gone non-finite stop the run with exit code 1, naming the batch and the
last good checkpoint. With an evaluation config (`--config=configs/eval.py --config.checkpoint=DIR`) it evaluates
that run's latest checkpoint instead.
"""
import errno
import os
import re
import sys

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from advjax import xla_flags

_CONFIG = config_flags.DEFINE_config_file('config', None, 'Path to a config file, e.g. configs/fat.py.',
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Checkpoints and metrics go here; default ./runs/<config name>.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Multi-process run: jax.distributed.initialize() with cluster auto-detection (Cloud TPU '
    'pods, SLURM, Open MPI, Kubernetes), or with --coordinator, --num_processes and --process_id.')
_COORDINATOR = flags.DEFINE_string('coordinator', None, 'host:port of process 0, for a manual multi-process launch.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in a manual multi-process launch.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process, 0 .. num_processes - 1.')


def fail(message):
  """Bad input: one line on stderr (a newline in a quoted value written as \\n) and exit code 2."""
  message = str(message).replace('\n', '\\n')
  print(f'advjax: error: {message}', file=sys.stderr)
  sys.exit(2)


def parse_flags(argv):
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:   # an override of a field the config does not have
    field = str(e).strip('\'"')
    fail(f'unknown config field {field!r}: overrides must name fields of the config file (--config.<field>=v)')
  except (flags.Error, ValueError, TypeError) as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    message = lines[0] if len(lines) == 1 else f'{lines[0]} {lines[-1]}'   # the flag, and the error under a traceback
    fail(re.sub(r"(invalid literal for|could not convert string to) (int|float)(\(\) with base 10)?: (.*)",
                lambda m: f'expected {"an integer" if m.group(2) == "int" else "a number"}, got {m.group(4)}', message))


def load_config():
  """The config, or one line saying why the file could not be loaded."""
  if flags.FLAGS['config'].present == 0:
    fail('--config is required, e.g. --config=configs/fat.py')
  config = _CONFIG.value
  try:
    config.keys()   # a config file that failed to load raises here, on first use
  except OSError as e:
    reason = str(e).strip().splitlines()[-1].strip()
    fail(f'cannot load config file {config_flags.get_config_filename(flags.FLAGS["config"])!r}: {reason}')
  return config


def default_workdir():
  name = os.path.splitext(os.path.basename(config_flags.get_config_filename(flags.FLAGS['config'])))[0]
  return os.path.join('runs', name)


def initialize_distributed():
  """Joins the processes of a multi-process run (before anything touches a device); a single process does nothing."""
  manual = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if any(v is not None for v in manual) and any(v is None for v in manual):
    fail('a manual multi-process launch needs all of --coordinator, --num_processes and --process_id')
  if all(v is not None for v in manual):
    if not 0 <= _PROCESS_ID.value < _NUM_PROCESSES.value:
      fail(f'--process_id must be in [0, {_NUM_PROCESSES.value}), got {_PROCESS_ID.value}')
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize(*manual)
  elif _DISTRIBUTED.value:
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()


def quiet_failed_checkpoint_writes(storage_failure):
  """A failed checkpoint write is reported in one line (checkpoint.StorageError). Around it orbax's background
  threads log the failure with a traceback each, and tensorstore's callbacks of the writes still in flight hit the
  closed event loop of orbax's `run_sync` (RuntimeError 'Event loop is closed', raised where nothing can catch it;
  seen with orbax-checkpoint 0.12.8, no upstream issue found as of 2026-12-03). Both are dropped; nothing else is."""
  logging.get_absl_logger().addFilter(lambda record: not storage_failure.search(
      record.getMessage() + (str(record.exc_info[1]) if record.exc_info else '')))

  def unraisable(hook):
    if not (hook.exc_type is RuntimeError and str(hook.exc_value) == 'Event loop is closed'):
      sys.__unraisablehook__(hook)
  sys.unraisablehook = unraisable


def main(argv):
  if len(argv) > 1:
    fail(f'unexpected arguments {argv[1:]}; use --config=FILE, --workdir=DIR and --config.<field>=<value>')
  config = load_config()
  xla_flags.apply()   # before anything starts a backend
  initialize_distributed()
  logging.set_verbosity(logging.WARNING)   # orbax narrates every save at INFO
  from advjax import checkpoint, data, evaluate, interop, train, validation  # pylint: disable=g-import-not-at-top
  quiet_failed_checkpoint_writes(checkpoint.STORAGE_FAILURE)
  evaluating = 'checkpoint' in config   # configs/eval.py
  workdir = _WORKDIR.value or default_workdir()
  try:
    if evaluating:
      validation.check_evaluation(config)
    else:
      validation.check(config)
      validation.check_workdir(config, workdir)
  except validation.ConfigError as e:
    fail(str(e))
  if evaluating:
    try:
      evaluate.run(config)
    except (interop.CheckpointError, evaluate.ProtocolError) as e:   # found before anything is compiled or written
      fail(str(e))
    return
  try:
    train.train_and_evaluate(config, workdir)
  except (data.DataError, validation.ConfigError) as e:   # found on loading the data, before anything is written
    fail(str(e))
  except checkpoint.StateMismatch as e:   # found before training: the checkpoints are left as they are
    fail(str(e))
  except (train.NonFiniteError, checkpoint.StorageError) as e:   # the last complete checkpoint is kept
    print(f'advjax: error: {e}', file=sys.stderr)
    sys.exit(1)
  except OSError as e:   # the metrics file on a full or read-only disk
    if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS):
      raise
    print(f'advjax: error: cannot write in {workdir}: {e.strerror} ({e.filename}); free space or fix permissions '
          'and rerun to resume', file=sys.stderr)
    sys.exit(1)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
