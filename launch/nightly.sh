#!/usr/bin/env bash
# Nightly regression benchmark of the MLPF HPO suite (cron or SLURM).
#
# Runs `python -m benchmark.nightly` against a stored baseline, appends the result to a history
# file and exits with its status: 0 no regression, 1 a metric regressed or a provider failed,
# 2 missing/corrupt baseline or bad flags. Output goes to $MLPF_NIGHTLY_DIR/nightly-<date>.log.
#
# Environment (all optional):
#   MLPF_REPO          repository root (default: the parent of this script's directory)
#   MLPF_NIGHTLY_DIR   where baseline.json, history.jsonl and logs live (default: ~/mlpf-nightly)
#   MLPF_PYTHON        interpreter (default: $MLPF_REPO/.venv/bin/python)
#   MLPF_NIGHTLY_REPEATS  measurements per metric (default 5)
#   MLPF_SYSTEM_ENV    a file sourced first (modules, proxies), e.g. launch/slurm/<system>.env
# Extra arguments are passed on, e.g. `--update_baseline` (first run, or after an accepted
# change) or `--metrics=training_throughput`.
#
# cron (every night at 02:30, on a quiet machine):
#   30 2 * * *  /path/to/repo/launch/nightly.sh >/dev/null 2>&1 || mail -s "MLPF nightly failed" me
# SLURM (one node, exclusive so figures are not disturbed by other jobs):
#   sbatch launch/nightly.sh                 # the #SBATCH lines below apply
#   sbatch --begin=02:30 launch/nightly.sh   # or schedule it
#SBATCH --job-name=mlpf-nightly
#SBATCH --nodes=1
#SBATCH --exclusive
#SBATCH --time=01:00:00
#SBATCH --output=mlpf-nightly-%j.out
set -euo pipefail

if [[ -n "${SLURM_SUBMIT_DIR:-}" && -z "${MLPF_REPO:-}" ]]; then
  repo="$SLURM_SUBMIT_DIR"   # under sbatch the script is a copy; the submit dir is the repo
else
  repo="${MLPF_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
fi
dir="${MLPF_NIGHTLY_DIR:-$HOME/mlpf-nightly}"
python="${MLPF_PYTHON:-$repo/.venv/bin/python}"
repeats="${MLPF_NIGHTLY_REPEATS:-5}"

if [[ -n "${MLPF_SYSTEM_ENV:-}" ]]; then
  # shellcheck disable=SC1090
  source "$MLPF_SYSTEM_ENV"
fi
if [[ ! -x "$python" ]]; then
  echo "nightly.sh: no python at $python (set MLPF_PYTHON or run 'make venv' in $repo)" >&2
  exit 2
fi
mkdir -p "$dir"

# Fixed thread pools: the figures must not depend on what else the machine is doing.
export TF_NUM_INTRAOP_THREADS="${TF_NUM_INTRAOP_THREADS:-2}"
export TF_NUM_INTEROP_THREADS="${TF_NUM_INTEROP_THREADS:-1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
export PYTHONHASHSEED=0

log="$dir/nightly-$(date -u +%Y%m%dT%H%M%SZ).log"
cd "$repo"
status=0
"$python" -m benchmark.nightly \
  --baseline="$dir/baseline.json" \
  --history="$dir/history.jsonl" \
  --repeats="$repeats" "$@" 2>&1 | tee "$log" || status=${PIPESTATUS[0]}
echo "nightly.sh: exit status $status, log $log"
exit "$status"
