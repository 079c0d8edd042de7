#!/usr/bin/env bash
# Runs advjax on the GPUs of one machine.
#
#   launch/multi_gpu.sh [--processes] --config=FILE [--workdir=DIR] [--config.x=v ...]
#
#   launch/multi_gpu.sh --config=configs/fat.py --workdir=runs/fat                # one process, all GPUs
#   launch/multi_gpu.sh --processes --config=configs/fat.py --workdir=runs/fat    # one process per GPU
#   NUM_GPUS=4 launch/multi_gpu.sh --config=configs/trades.py --workdir=runs/trades   # the first 4 GPUs
#
# Default: one process that sees all the GPUs; the data-parallel mesh spans them. This is the usual way on one host.
# --processes: one process per GPU (CUDA_VISIBLE_DEVICES=<its GPU>), joined with --coordinator=localhost:PORT
# --num_processes=N --process_id=I: the multi-host code path on one host. Process 0 prints here, the others write
# process_<i>.log in a temporary folder (printed if they fail); if one fails the others are stopped, and the exit
# code is that of the first to fail (the logic of launch/multi_process_cpu.sh, which this script sources).
# GPUs: the first NUM_GPUS (default: all) of CUDA_VISIBLE_DEVICES, or of those `nvidia-smi -L` lists.
# Environment: NUM_GPUS, ADVJAX_DATA_DIR (passed through), ADVJAX_PORT, ADVJAX_LOG_DIR, ADVJAX_PYTHON (see
# launch/multi_process_cpu.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=launch/multi_process_cpu.sh
source "$here/multi_process_cpu.sh"   # advjax_python, coordinator_port, run_processes, _usage_of

processes=0
args=()
for arg in "$@"; do
  case $arg in
    --processes) processes=1 ;;
    -h | --help) _usage_of "${BASH_SOURCE[0]}"; exit 0 ;;
    *) args+=("$arg") ;;
  esac
done
if ((${#args[@]} == 0)); then
  _usage_of "${BASH_SOURCE[0]}" >&2
  exit 2
fi

# The GPUs to use, as ids for CUDA_VISIBLE_DEVICES.
gpus=()
if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
  IFS=, read -r -a gpus <<<"$CUDA_VISIBLE_DEVICES"
elif command -v nvidia-smi >/dev/null 2>&1; then
  count=$(nvidia-smi -L | grep -c '^GPU ' || true)
  for ((i = 0; i < count; i++)); do gpus+=("$i"); done
elif [[ -z ${NUM_GPUS:-} ]]; then
  echo "launch: error: cannot count the GPUs: no nvidia-smi on PATH; set NUM_GPUS" >&2
  exit 2
else
  for ((i = 0; i < NUM_GPUS; i++)); do gpus+=("$i"); done
fi
if [[ -n ${NUM_GPUS:-} ]]; then
  if [[ ! $NUM_GPUS =~ ^[1-9][0-9]*$ ]]; then
    echo "launch: error: NUM_GPUS must be a positive integer, not '$NUM_GPUS'" >&2
    exit 2
  fi
  if ((NUM_GPUS > ${#gpus[@]})); then
    echo "launch: error: NUM_GPUS=$NUM_GPUS but only ${#gpus[@]} GPU(s) found (${gpus[*]:-none})" >&2
    exit 2
  fi
  gpus=("${gpus[@]:0:NUM_GPUS}")
fi
if ((${#gpus[@]} == 0)); then
  echo "launch: error: no GPUs found (nvidia-smi -L lists none; CUDA_VISIBLE_DEVICES is empty)" >&2
  exit 2
fi

python=$(advjax_python) || exit 2
if ((processes == 0)); then
  CUDA_VISIBLE_DEVICES=$(IFS=,; echo "${gpus[*]}") exec "$python" -m advjax.main "${args[@]}"
fi

port=$(coordinator_port "$python") || exit 2
set_log_dir
echo "launch: ${#gpus[@]} processes on GPUs ${gpus[*]}, coordinator localhost:$port" >&2

start_process() {
  # One GPU per process. JAX_LOCAL_DEVICE_IDS=0 (its only device) overrides the device JAX's cluster
  # auto-detection would pick from SLURM_LOCALID and the like if this runs inside such an allocation.
  export CUDA_VISIBLE_DEVICES=${gpus[$1]} JAX_LOCAL_DEVICE_IDS=0
  exec "$python" -m advjax.main --coordinator="localhost:$port" --num_processes="${#gpus[@]}" --process_id="$1" \
    "${args[@]}"
}
rc=0
run_processes "${#gpus[@]}" "$log_dir" || rc=$?
exit "$rc"
