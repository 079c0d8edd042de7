#!/usr/bin/env bash
# Runs advjax as NUM_PROCESSES JAX processes on this one machine, on the CPU, with the coordinator on localhost: the
# multi-process code path of a TPU pod or a GPU cluster (each process loads its shard of the data, process 0 writes
# the metrics, all write the checkpoints), testable anywhere. Needs nothing but bash and python on PATH.
#
#   launch/multi_process_cpu.sh NUM_PROCESSES [DEVICES_PER_PROCESS] --config=FILE [--workdir=DIR] [--config.x=v ...]
#
#   launch/multi_process_cpu.sh 2 --config=configs/quickstart.py --workdir=runs/quickstart_2proc
#   launch/multi_process_cpu.sh 2 4 --config=configs/quickstart.py --workdir=runs/quickstart_2x4   # 2 × 4 devices
#
# DEVICES_PER_PROCESS simulated CPU devices per process (XLA_FLAGS=--xla_force_host_platform_device_count); default 1.
# Process 0 prints here; processes 1, 2, … write process_<i>.log in a temporary folder, printed here if they fail.
# If one process fails, the others are stopped (TERM, then KILL after 10 s) and the exit code is that of the first
# process to fail; Ctrl-C or TERM to this script passes TERM on, and the processes checkpoint and exit (KILL after
# 60 s).
# Environment: ADVJAX_PORT    coordinator port (default: a free port picked by python)
#              ADVJAX_LOG_DIR keep the logs of processes 1, 2, … in this folder instead of a temporary one
#              ADVJAX_PYTHON  the python to run (default: python, else python3)
#
# launch/multi_gpu.sh sources this file for run_processes; sourced, it defines functions and runs nothing.
set -euo pipefail

_stop_grace_s=10      # after a process failed: the others may be stuck in a collective with it
_preempt_grace_s=60   # after INT or TERM to this script: time for the processes to checkpoint and exit

# The comment block above, as help text.
_usage_of() {
  local line
  while IFS= read -r line; do
    [[ $line == '#!'* ]] && continue
    [[ $line == '#'* ]] || break
    line=${line#\#}
    printf '%s\n' "${line# }"
  done <"$1"
}

# The python to run: $ADVJAX_PYTHON, else python, else python3.
advjax_python() {
  if [[ -n ${ADVJAX_PYTHON:-} ]]; then
    printf '%s\n' "$ADVJAX_PYTHON"
  elif command -v python >/dev/null 2>&1; then
    printf 'python\n'
  elif command -v python3 >/dev/null 2>&1; then
    printf 'python3\n'
  else
    echo "launch: error: no python on PATH (set ADVJAX_PYTHON)" >&2
    return 2
  fi
}

# The coordinator port: $ADVJAX_PORT, else a free port of this machine.
coordinator_port() {
  if [[ -n ${ADVJAX_PORT:-} ]]; then
    if [[ ! $ADVJAX_PORT =~ ^[0-9]+$ ]]; then
      echo "launch: error: ADVJAX_PORT must be a port number, not '$ADVJAX_PORT'" >&2
      return 2
    fi
    printf '%s\n' "$ADVJAX_PORT"
  else
    "$1" -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1]); s.close()'
  fi
}

# Sets log_dir, where processes 1, 2, … log: $ADVJAX_LOG_DIR, else a temporary folder removed on exit.
set_log_dir() {
  if [[ -n ${ADVJAX_LOG_DIR:-} ]]; then
    log_dir=$ADVJAX_LOG_DIR
    mkdir -p "$log_dir"
  else
    log_dir=$(mktemp -d "${TMPDIR:-/tmp}/advjax_launch.XXXXXX")
    trap 'rm -rf "$log_dir"' EXIT
  fi
}

# run_processes NUM LOG_DIR
# Runs `start_process I` (a function of the caller that sets up process I's environment and execs it) for
# I = 0 … NUM-1 in the background: process 0 on this terminal, the others into LOG_DIR/process_I.log. Waits for all.
# When one exits non-zero (or this script gets INT/TERM), stops the others and prints the logs of the processes that
# failed by themselves. Returns the first non-zero exit code (128 + signal when interrupted), else 0.
run_processes() {
  local num=$1 log_dir=$2
  local -a pids=() codes=()
  local i rc line live=$1 first_rc=0 stopping=0 kill_at=0 _interrupt=0
  for ((i = 0; i < num; i++)); do
    if ((i == 0)); then
      start_process "$i" &
    else
      start_process "$i" >"$log_dir/process_$i.log" 2>&1 &
    fi
    pids[i]=$!
  done
  # Ctrl-C or TERM to this script: note it, and stop the children in the loop below (they may ignore SIGINT).
  trap '_interrupt=130' INT
  trap '_interrupt=143' TERM
  while ((live > 0)); do
    if ((_interrupt != 0 && first_rc == 0)); then
      first_rc=$_interrupt
      echo "launch: interrupted; stopping the processes" >&2
    fi
    for ((i = 0; i < num; i++)); do
      if [[ -n ${codes[i]:-} ]] || kill -0 "${pids[i]}" 2>/dev/null; then
        continue
      fi
      rc=0
      wait "${pids[i]}" || rc=$?
      codes[i]=$rc
      live=$((live - 1))
      if ((rc != 0 && first_rc == 0)); then
        first_rc=$rc
        echo "launch: process $i exited with code $rc; stopping the other processes" >&2
      fi
      if ((rc != 0 && stopping == 0 && _interrupt == 0 && i > 0)); then   # failed by itself: show why
        echo "launch: ---- output of process $i ----" >&2
        while IFS= read -r line || [[ -n $line ]]; do printf '[p%d] %s\n' "$i" "$line" >&2; done \
          <"$log_dir/process_$i.log"
      fi
    done
    if ((first_rc != 0 && live > 0)); then
      if ((stopping == 0)); then
        stopping=1
        kill_at=$((SECONDS + (_interrupt != 0 ? _preempt_grace_s : _stop_grace_s)))
        for ((i = 0; i < num; i++)); do
          [[ -n ${codes[i]:-} ]] || kill -TERM "${pids[i]}" 2>/dev/null || true
        done
      elif ((SECONDS >= kill_at)); then
        for ((i = 0; i < num; i++)); do
          [[ -n ${codes[i]:-} ]] || kill -KILL "${pids[i]}" 2>/dev/null || true
        done
      fi
    fi
    if ((live > 0)); then
      sleep 0.2
    fi
  done
  trap - INT TERM
  return "$first_rc"
}

_multi_process_cpu_main() {
  if [[ $# -eq 0 || $1 == -h || $1 == --help ]]; then
    _usage_of "${BASH_SOURCE[0]}"
    [[ $# -gt 0 ]] && return 0 || return 2
  fi
  local num=$1 devices=
  shift
  if [[ ! $num =~ ^[1-9][0-9]*$ ]]; then
    echo "launch: error: NUM_PROCESSES must be a positive integer, not '$num'" \
      "(usage: launch/multi_process_cpu.sh NUM_PROCESSES [DEVICES_PER_PROCESS] --config=... [flags])" >&2
    return 2
  fi
  if [[ $# -gt 0 && $1 != -* ]]; then
    devices=$1
    shift
    if [[ ! $devices =~ ^[1-9][0-9]*$ ]]; then
      echo "launch: error: DEVICES_PER_PROCESS must be a positive integer, not '$devices'" >&2
      return 2
    fi
  fi
  local python port rc=0
  python=$(advjax_python) || return 2
  port=$(coordinator_port "$python") || return 2

  export JAX_PLATFORMS=cpu
  export JAX_CPU_COLLECTIVES_IMPLEMENTATION=${JAX_CPU_COLLECTIVES_IMPLEMENTATION:-gloo}   # cross-process on CPU
  if [[ -n $devices ]]; then   # replaces a device count inherited in XLA_FLAGS
    local flag xla_flags=()
    for flag in ${XLA_FLAGS:-}; do
      [[ $flag == --xla_force_host_platform_device_count=* ]] || xla_flags+=("$flag")
    done
    export XLA_FLAGS="${xla_flags[*]} --xla_force_host_platform_device_count=${devices}"
  fi

  set_log_dir

  _args=("$@")
  _python=$python
  _coordinator=localhost:$port
  _num=$num
  start_process() {
    exec "$_python" -m advjax.main --coordinator="$_coordinator" --num_processes="$_num" --process_id="$1" \
      "${_args[@]}"
  }
  run_processes "$num" "$log_dir" || rc=$?
  return "$rc"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  _multi_process_cpu_main "$@"
fi
