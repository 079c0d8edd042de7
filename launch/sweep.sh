#!/usr/bin/env bash
# Runs one config over a list of values of one field, one run after another, then writes one report of them all:
# the paper-style studies (FAT's tau in {0, 1, 2, 3}, an eps_train grid). Rerunning resumes: finished runs are
# skipped by advjax itself (their checkpoints are complete), an interrupted one continues.
#
#   launch/sweep.sh OUT FIELD VALUE [VALUE ...] -- --config=FILE [--config.x=v ...]
#
#   launch/sweep.sh runs/tau tau_schedule '((1, 0),)' '((1, 1),)' '((1, 2),)' '((1, 3),)' -- --config=configs/fat.py:digits
#   launch/sweep.sh runs/eps attack.eps 0.1 0.15 0.2 0.25 -- --config=configs/fat.py:digits
#
# Run i trains in OUT/<FIELD>=<VALUE> (characters other than letters, digits, '.', '-' and '=' made '_');
# OUT/report.md and the plots come from `python -m advjax.report`. ADVJAX_PYTHON: the python to run (default python3).
set -euo pipefail

if [[ $# -lt 4 ]]; then
  echo "usage: launch/sweep.sh OUT FIELD VALUE [VALUE ...] -- --config=FILE [--config.x=v ...]" >&2
  exit 2
fi
out=$1 field=$2
shift 2
values=()
while [[ $# -gt 0 && $1 != -- ]]; do
  values+=("$1")
  shift
done
if [[ $# -eq 0 || ${#values[@]} -eq 0 ]]; then
  echo "launch/sweep.sh: error: give at least one VALUE, then -- and the advjax.main arguments" >&2
  exit 2
fi
shift
python=${ADVJAX_PYTHON:-python3}
runs=()
for value in "${values[@]}"; do
  run="$out/$(printf '%s=%s' "$field" "$value" | tr -c 'A-Za-z0-9.=\n-' '_')"
  runs+=("$run")
  echo "== $field = $value -> $run"
  "$python" -m advjax.main "$@" "--config.$field=$value" "--workdir=$run"
done
"$python" -m advjax.report "${runs[@]}" --out="$out"
