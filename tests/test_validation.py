"""Malformed configs, generated across every field of every config: each is refused with one line (exit 2 on the
command line: test_main.py) or passes; none raises anything else. Some values must be refused whatever the field."""
import glob
import math
import os

import pytest
from hypothesis import HealthCheck, assume, event, given, settings, strategies as st

from advjax import data, methods, step, train, validation
from helpers import REPO, load_config

pytestmark = pytest.mark.skipif(not os.environ.get('ADVJAX_DATA_DIR'),
                                reason='set ADVJAX_DATA_DIR to the shared data folder (the paper configs read it)')
NAMES = sorted(os.path.basename(path)[:-3] for path in glob.glob(os.path.join(REPO, 'configs', '*.py'))
               if os.path.basename(path) not in ('default.py', 'eval.py'))
# What the issue asks of every config, written here independently of advjax.validation's table.
BUDGETS = ('attack.eps', 'attack.step_size', 'eval.eps', 'eval.step_size')   # in [0, 1]
RATES = ('optimizer.momentum', 'ema_decay')   # in [0, 1)


def _fields(config, prefix=''):
  """{dotted name: value} of the config's numeric, string and tuple fields (booleans are typed by the flags)."""
  out = {}
  for name, value in config.items():
    if hasattr(value, 'items'):
      out.update(_fields(value, f'{prefix}{name}.'))
    elif not isinstance(value, bool):
      out[f'{prefix}{name}'] = value
  return out


FIELDS = {name: _fields(load_config(name)) for name in NAMES}
NUMBERS = st.one_of(st.sampled_from([-2, -1, 0, 1, 2, 255, 2**31]), st.integers(-10**12, 10**12))
FLOATS = st.one_of(st.sampled_from([-1.0, -1e-9, 0.0, 0.5, 1.0, 1.5, 2.0, 255.0, math.nan, math.inf, -math.inf]),
                   st.floats(allow_nan=True, allow_infinity=True))


def _malformed(value):
  if isinstance(value, int):
    return NUMBERS
  if isinstance(value, float):
    return FLOATS
  if isinstance(value, str):
    return st.one_of(st.text(max_size=8), st.sampled_from(['', value.upper(), value + 'x']))
  pairs = st.tuples(st.integers(-2, 300), st.one_of(st.integers(-3, 20), FLOATS))   # schedules
  return st.one_of(st.lists(pairs, max_size=3), st.lists(st.one_of(st.integers(-3, 300), FLOATS), max_size=3)).map(
      tuple)


@st.composite
def malformed_configs(draw):
  name = draw(st.sampled_from(NAMES))
  field = draw(st.sampled_from(sorted(FIELDS[name])))
  value = draw(_malformed(FIELDS[name][field]))
  config = load_config(name)
  *parents, leaf = field.split('.')
  section = config
  for parent in parents:
    section = section[parent]
  section[leaf] = value
  return name, field, value, config


# derandomize: the same 1,000 cases in every run, so CI cannot fail on a case it never saw before (8,000 random ones
# passed on 2026-12-03; drop it to explore).
@settings(max_examples=1000, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_configs())
def test_a_malformed_config_is_refused_in_one_line_or_passes(case):
  name, field, value, config = case
  try:
    validation.check(config)
  except validation.ConfigError as e:
    message = str(e)
    assert message and '\n' not in message, message
    event(f'refused: {field.split(".")[0]}')
    return
  event(f'passed: {field.split(".")[0]}')
  numbers = [value] if isinstance(value, (int, float)) else [
      v for entry in (value if isinstance(value, tuple) else ()) for v in (entry if isinstance(entry, tuple) else
                                                                          (entry,))]
  assert all(math.isfinite(v) for v in numbers if isinstance(v, float)), (name, field, value)
  assert all(v >= -1 for v in numbers if isinstance(v, (int, float))), (name, field, value)
  assert all(abs(v) < 2**31 for v in numbers if isinstance(v, int)), (name, field, value)   # int32 on the devices
  assert field not in BUDGETS or 0 <= value <= 1, (name, field, value)
  assert field not in RATES or 0 <= value < 1, (name, field, value)


DIGITS = NAMES   # each takes ':digits' but the quick start, which is that already


@st.composite
def malformed_digits_configs(draw):
  """As `malformed_configs`, on the `:digits` variants (small enough to build here)."""
  name = draw(st.sampled_from(DIGITS))
  variant = None if name == 'quickstart' else 'digits'
  fields = _fields(load_config(name, variant))
  field = draw(st.sampled_from(sorted(fields)))
  config = load_config(name, variant)
  *parents, leaf = field.split('.')
  section = config
  for parent in parents:
    section = section[parent]
  section[leaf] = draw(_malformed(fields[field]))
  return f'{name}:{variant}', field, section[leaf], config


# 15 accepted cases, the same in every run (about 1.5 s each: loading, initialising and tracing, not compiling).
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(malformed_digits_configs())
def test_an_accepted_malformed_config_builds_and_its_steps_trace(case):
  """What passes validation reaches training: its data loads, its state initialises and its train and eval steps
  trace on the first batch, or the data check refuses it in one line."""
  name, field, value, config = case
  try:
    validation.check(config)
  except validation.ConfigError:
    assume(False)
  try:
    run = train.build(config)
  except (validation.ConfigError, data.DataError) as e:
    assert str(e) and '\n' not in str(e), (name, field, value)
    event('refused on loading the data')
    return
  event('traced')
  hparams = methods.hparams(config, 1, first_step=0)
  batch = next(run.train_loader.batches(run.train_loader.train_positions(run.data_key, 1), run.data_key))
  run.train_step.trace(run.state, batch, hparams, step.zero_metrics(config))
  test_batch = next(run.test_loader.batches(run.test_loader.eval_positions(), run.eval_key))
  run.eval_step.trace(run.state.variables, test_batch)
