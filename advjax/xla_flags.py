"""The XLA settings advjax runs with, applied by `advjax.main` and the benchmarks before JAX creates its backends.

XLA reads $XLA_FLAGS once, when the first backend is created (not when jax is imported), so `apply()` works at any
point before the first computation. A flag the user set already is left alone; ADVJAX_XLA_DEFAULTS=0 leaves
$XLA_FLAGS as it is.
"""
import importlib.metadata
import os

# jaxlib 0.10's XLA:CPU hands each convolution to YNNPACK, which runs it on one thread; with YNNPACK's convolutions
# off they go to Eigen's, which uses every core: a 64->64 3x3 convolution at batch 64 took 0.052 s with YNNPACK and
# 0.034 s with Eigen on 2 cores (PyTorch 0.037 s), 0.059 s against 0.064 s on one core (2026-12-01, a 2-core AMD
# EPYC). The flag is experimental, so it is set only on the jaxlib series it was measured on.
_MULTITHREADED_CONVOLUTIONS = '--xla_cpu_experimental_ynn_fusion_type=-individual_convolution'
_MEASURED_JAXLIB = '0.10.'


def apply():
  """Adds advjax's XLA:CPU defaults to $XLA_FLAGS where they help; returns the flags added."""
  flags = os.environ.get('XLA_FLAGS', '')
  wanted = os.environ.get('ADVJAX_XLA_DEFAULTS', '1') != '0' and 'ynn_fusion_type' not in flags
  measured = importlib.metadata.version('jaxlib').startswith(_MEASURED_JAXLIB)
  if not (wanted and measured and len(os.sched_getaffinity(0)) > 1):
    return ''
  os.environ['XLA_FLAGS'] = f'{flags} {_MULTITHREADED_CONVOLUTIONS}'.strip()
  return _MULTITHREADED_CONVOLUTIONS
