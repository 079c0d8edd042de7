#!/usr/bin/env bash
# advjax on a Cloud TPU VM or TPU pod slice, with gcloud: one JAX process per TPU host (worker), joined by
# `python -m advjax.main --distributed` (jax.distributed.initialize() finds the slice by itself).
#
#   launch/tpu_vm.sh create [gcloud flags]      create the TPU VM (e.g. --spot, --network=...)
#   launch/tpu_vm.sh install                    copy HEAD of this repository to every worker, make a venv, pip install
#   launch/tpu_vm.sh run ADVJAX_FLAGS...        start a run on every worker, in the background (nohup), a log each
#   launch/tpu_vm.sh stop                       stop the runs this script started (their pid files)
#   launch/tpu_vm.sh fetch PATH [DEST]          copy PATH (a workdir, or `logs`) from worker 0 to DEST (default .)
#   launch/tpu_vm.sh delete [gcloud flags]      delete the TPU VM
#
#   export TPU_NAME=advjax-pod ZONE=us-central2-b ACCELERATOR_TYPE=v4-32
#   launch/tpu_vm.sh create && launch/tpu_vm.sh install
#   ADVJAX_DATA_DIR=/mnt/data launch/tpu_vm.sh run --config=configs/fat.py --workdir=gs://my-bucket/runs/fat
#   launch/tpu_vm.sh fetch logs && launch/tpu_vm.sh delete
#
# The workdir must be one every worker sees, a gs:// bucket path or a shared filesystem: every process writes its part
# of the checkpoints there (process 0 alone writes metrics.jsonl). A local path is only right for a single-host slice
# (v4-8, v5litepod-8, …); relative paths are relative to the repository copy on the workers.
# `install` copies `git archive HEAD`: commit (or stash) changes first. Runs resume from their checkpoints as usual.
# Environment:
#   TPU_NAME           the TPU VM's name (required)
#   ZONE               its zone (required)
#   ACCELERATOR_TYPE   e.g. v4-8, v4-32, v5litepod-16 (required by create)
#   TPU_VERSION        the TPU runtime (default tpu-ubuntu2204-base)
#   PROJECT            the Google Cloud project (default: gcloud's configured project)
#   ADVJAX_DATA_DIR    passed to the runs; the datasets must be at that path on every worker
#   ADVJAX_REMOTE_DIR  the repository copy on the workers (default advjax, i.e. ~/advjax); its venv is .venv in it
#   ADVJAX_REMOTE_PYTHON  the python (3.11+) that makes the venv (default: python3.13/3.12/3.11 if present, else
#                         python3.11 installed with apt-get)
#   RUN_NAME           names the logs, logs/<RUN_NAME>.worker<i>.log (default: the start time)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
remote_dir=${ADVJAX_REMOTE_DIR:-advjax}
tpu_version=${TPU_VERSION:-tpu-ubuntu2204-base}

usage() {
  local line
  while IFS= read -r line; do
    [[ $line == '#!'* ]] && continue
    [[ $line == '#'* ]] || break
    line=${line#\#}
    printf '%s\n' "${line# }"
  done <"${BASH_SOURCE[0]}"
}

die() {
  echo "tpu_vm.sh: error: $*" >&2
  exit 2
}

need() {   # need VAR WHAT: fail clearly when an environment variable is unset
  [[ -n ${!1:-} ]] || die "set $1 ($2), e.g. export $1=$3"
}

if ! command -v gcloud >/dev/null 2>&1 && [[ ${1:-} != -h && ${1:-} != --help && -n ${1:-} ]]; then
  die "gcloud is not on PATH (https://cloud.google.com/sdk/docs/install)"
fi

# gcloud compute tpus tpu-vm SUBCOMMAND ... with the zone and, if set, the project.
tpu() {
  local sub=$1
  shift
  gcloud compute tpus tpu-vm "$sub" "$@" --zone="$ZONE" ${PROJECT:+--project="$PROJECT"}
}

# Runs a bash script (a string) on all workers, single-quoted for whatever their login shell is.
on_all_workers() {
  local quote="'\\''"
  tpu ssh "$TPU_NAME" --worker=all --command="bash -c '${1//\'/$quote}'"
}

cmd=${1:-}
[[ -n $cmd ]] && shift
case $cmd in
  -h | --help)
    usage
    exit 0
    ;;
  '')
    usage >&2
    exit 2
    ;;
esac
need TPU_NAME "the TPU VM's name" advjax-tpu
need ZONE "the TPU's zone" us-central2-b

case $cmd in
  create)
    need ACCELERATOR_TYPE "the TPU type and size" v4-32
    tpu create "$TPU_NAME" --accelerator-type="$ACCELERATOR_TYPE" --version="$tpu_version" "$@"
    ;;

  install)
    git -C "$repo" rev-parse --verify -q HEAD >/dev/null || die "$repo is not a git repository with a commit"
    if [[ -n $(git -C "$repo" status --porcelain --untracked-files=no) ]]; then
      echo "tpu_vm.sh: warning: uncommitted changes are not copied (install copies git archive HEAD)" >&2
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    git -C "$repo" archive --format=tar.gz -o "$tmp/advjax.tar.gz" HEAD
    tpu scp "$tmp/advjax.tar.gz" "$TPU_NAME:advjax.tar.gz" --worker=all
    # On each worker: unpack over the previous copy (its .venv and relative workdirs stay), make the venv once,
    # install advjax (with gcsfs for gs:// workdirs) and jax[tpu].
    on_all_workers "set -euo pipefail
      dir=$(printf '%q' "$remote_dir")
      python=$(printf '%q' "${ADVJAX_REMOTE_PYTHON:-}")
      mkdir -p \"\$dir\"
      tar -xzf ~/advjax.tar.gz -C \"\$dir\"
      rm -f ~/advjax.tar.gz
      if [[ -z \$python ]]; then
        for candidate in python3.13 python3.12 python3.11; do
          if command -v \$candidate >/dev/null && \$candidate -c 'import ensurepip' 2>/dev/null; then
            python=\$candidate
            break
          fi
        done
      fi
      if [[ -z \$python ]]; then
        sudo apt-get update -qq
        sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv
        python=python3.11
      fi
      [[ -x \"\$dir/.venv/bin/python\" ]] || \"\$python\" -m venv \"\$dir/.venv\"
      \"\$dir/.venv/bin/pip\" install -q --upgrade pip
      \"\$dir/.venv/bin/pip\" install -q -e \"\$dir[gcs]\" 'jax[tpu]'
      echo \"\$(hostname): advjax installed in \$dir, jax \$(\"\$dir/.venv/bin/python\" -c 'import jax; print(jax.__version__)')\""
    ;;

  run)
    (($# > 0)) || die "run needs advjax flags, e.g. launch/tpu_vm.sh run --config=configs/fat.py --workdir=gs://BUCKET/runs/fat"
    workdir=
    for arg in "$@"; do
      case $arg in --workdir=*) workdir=${arg#--workdir=} ;; --workdir) die "write --workdir=DIR (one argument)" ;; esac
    done
    [[ -n $workdir ]] || die "run needs --workdir=DIR: a gs:// bucket path, or a filesystem every worker sees"
    if [[ $workdir != gs://* ]]; then
      echo "tpu_vm.sh: warning: --workdir=$workdir is not a gs:// path: right for a single-host TPU or a filesystem" \
        "shared by all workers only" >&2
    fi
    if [[ -z ${ADVJAX_DATA_DIR:-} ]]; then
      echo "tpu_vm.sh: warning: ADVJAX_DATA_DIR is unset: only data sources that need no files will work" >&2
    fi
    run_name=${RUN_NAME:-$(date +%Y%m%d-%H%M%S)}
    [[ $run_name =~ ^[A-Za-z0-9._-]+$ ]] || die "RUN_NAME may hold only letters, digits and . _ -"
    advjax_cmd=$(printf '%q ' .venv/bin/python -m advjax.main --distributed "$@")
    env_cmd=
    if [[ -n ${ADVJAX_DATA_DIR:-} ]]; then
      env_cmd="ADVJAX_DATA_DIR=$(printf '%q' "$ADVJAX_DATA_DIR")"
    fi
    on_all_workers "set -euo pipefail
      cd $(printf '%q' "$remote_dir")
      mkdir -p logs
      worker=\$(curl -sf -H 'Metadata-Flavor: Google' \
        http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number || hostname)
      log=logs/$run_name.worker\$worker.log
      $env_cmd nohup $advjax_cmd >\"\$log\" 2>&1 </dev/null &
      echo \$! >logs/$run_name.worker\$worker.pid
      echo \"worker \$worker: started, log \$PWD/\$log\""
    echo "tpu_vm.sh: started on every worker. Follow worker 0:" >&2
    echo "  gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE ${PROJECT:+--project=$PROJECT }--worker=0" \
      "--command='tail -f $remote_dir/logs/$run_name.worker0.log'" >&2
    ;;

  stop)
    on_all_workers "cd $(printf '%q' "$remote_dir")/logs 2>/dev/null || exit 0
      for f in *.pid; do
        [[ -f \$f ]] || continue
        pid=\$(cat \"\$f\")
        if kill \"\$pid\" 2>/dev/null; then echo \"\$(hostname): stopped \${f%.pid} (pid \$pid)\"; fi
        rm -f \"\$f\"
      done"
    ;;

  fetch)
    (($# >= 1 && $# <= 2)) || die "usage: launch/tpu_vm.sh fetch PATH [DEST], PATH a workdir or logs"
    src=$1
    dest=${2:-.}
    if [[ $src == gs://* ]]; then
      gcloud storage cp --recursive "$src" "$dest"
    else
      [[ $src == /* ]] || src=$remote_dir/$src
      tpu scp --recurse "$TPU_NAME:$src" "$dest" --worker=0
    fi
    ;;

  delete)
    tpu delete "$TPU_NAME" "$@"
    ;;

  *)
    die "unknown command '$cmd': create, install, run, stop, fetch or delete (--help)"
    ;;
esac
