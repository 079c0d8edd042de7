#!/usr/bin/env bash
# Every method's config on the digits (its `digits` variant), trained, attacked and reported as a user would: the
# training command, then configs/eval.py twice (FGSM, PGD-20 and CW-30; then AutoAttack, standard), all at eps 0.2,
# then one `python -m advjax.report` over all the workdirs: the table and the plots.
#
#   benchmarks/every_method.sh RUNS_DIR [REPORT_DIR]      # REPORT_DIR defaults to RUNS_DIR
#   benchmarks/every_method.sh runs/every_method docs/results/every_method
#
# Rerunning resumes: finished runs are skipped by advjax itself. The tiny CNN is the same in every run, so the
# evaluation programs compile once and come from the compilation cache (RUNS_DIR/jax_cache) afterwards.
# ADVJAX_PYTHON: the python to run (default python3). About 30 minutes on a 2-core CPU.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  echo "usage: benchmarks/every_method.sh RUNS_DIR [REPORT_DIR]" >&2
  exit 2
fi
runs_dir=$1 report_dir=${2:-$1}
python=${ADVJAX_PYTHON:-python3}
cd "$(dirname "$0")/.."
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$runs_dir/jax_cache}

evaluate() {   # evaluate RUN PROTOCOL [FLAGS ...]: skipped where its table is already there
  local run=$1 protocol=$2
  shift 2
  [[ -f $run/eval_$protocol.json ]] || "$python" -m advjax.main --config=configs/eval.py --config.checkpoint="$run" \
    --config.protocol="$protocol" --config.eps=0.2 "$@"
}

runs=()
for config in configs/*.py; do
  name=$(basename "$config" .py)
  [[ $name == default || $name == eval || $name == quickstart ]] && continue
  run=$runs_dir/$name
  echo "== $name -> $run"
  "$python" -m advjax.main --config="$config:digits" --workdir="$run"
  evaluate "$run" custom --config.attacks=fgsm,pgd-20,cw-30
  evaluate "$run" aa_standard
  runs+=("$run")
done
"$python" -m advjax.report "${runs[@]}" --out="$report_dir"
