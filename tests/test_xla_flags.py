"""advjax's XLA:CPU defaults: added where they were measured to help, never over what the user set."""
import os

import pytest

from advjax import xla_flags


@pytest.fixture
def environment(monkeypatch):
  monkeypatch.delenv('ADVJAX_XLA_DEFAULTS', raising=False)
  monkeypatch.setenv('XLA_FLAGS', '--xla_force_host_platform_device_count=2')
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 1})
  monkeypatch.setattr(xla_flags.importlib.metadata, 'version', lambda name: '0.10.2')
  return monkeypatch


def test_multithreaded_convolutions_are_added_to_the_users_flags(environment):
  assert xla_flags.apply() == xla_flags._MULTITHREADED_CONVOLUTIONS
  assert os.environ['XLA_FLAGS'].split() == ['--xla_force_host_platform_device_count=2',
                                             xla_flags._MULTITHREADED_CONVOLUTIONS]


@pytest.mark.parametrize('change', ['one core', 'another jaxlib', 'set by the user', 'turned off'])
def test_nothing_is_added_where_it_was_not_measured_or_not_wanted(environment, change):
  if change == 'one core':
    environment.setattr(os, 'sched_getaffinity', lambda pid: {0})
  elif change == 'another jaxlib':
    environment.setattr(xla_flags.importlib.metadata, 'version', lambda name: '0.11.0')
  elif change == 'set by the user':
    environment.setenv('XLA_FLAGS', '--xla_cpu_experimental_ynn_fusion_type=-dot')
  else:
    environment.setenv('ADVJAX_XLA_DEFAULTS', '0')
  before = os.environ['XLA_FLAGS']
  assert xla_flags.apply() == '' and os.environ['XLA_FLAGS'] == before
