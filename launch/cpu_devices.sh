#!/usr/bin/env bash
# Runs advjax data-parallel on N simulated CPU devices of one machine: the same code path as N GPUs or TPU cores.
#   launch/cpu_devices.sh 4 --config=configs/quickstart.py --workdir=runs/quickstart_4dev
set -euo pipefail
devices=${1:?usage: launch/cpu_devices.sh NUM_DEVICES --config=... [flags]}
shift
XLA_FLAGS="--xla_force_host_platform_device_count=${devices} ${XLA_FLAGS:-}" JAX_PLATFORMS=cpu \
  exec python -m advjax.main "$@"
