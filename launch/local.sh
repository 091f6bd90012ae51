#!/bin/bash
# A distributed MLPF search on this machine: one chief (the oracle server) and W worker
# groups of K Horovod ranks each, all on loopback.
#
#   launch/local.sh W K [benchmark.run flags...]
#   launch/local.sh 4 1 --experiment=smoke --tuner=asha --max_trials=20
#   launch/local.sh 2 2 --tuner=hyperband          # two groups of two Gloo ranks
#
# Same as `python -m benchmark.run --workers=W --ranks_per_worker=K ...`: the chief picks a
# free port, each worker group logs to <run_dir>/logs/worker<N>.log, progress goes to the
# terminal and <run_dir>/progress.json. Ctrl-C stops the chief and every worker group.
# Resume a stopped search with the same flags plus --resume.
set -euo pipefail

if [[ $# -lt 2 || ! "$1" =~ ^[0-9]+$ || ! "$2" =~ ^[0-9]+$ || "$1" -lt 1 || "$2" -lt 1 ]]; then
  echo "usage: $0 WORKERS RANKS_PER_WORKER [benchmark.run flags...]" >&2
  echo "  e.g. $0 4 1 --experiment=smoke --max_trials=20" >&2
  exit 2
fi
WORKERS=$1
RANKS=$2
shift 2

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${MLPF_PYTHON:-$ROOT/.venv/bin/python}"
if [[ ! -x "$PYTHON" ]]; then
  echo "error: no Python at $PYTHON (run 'make venv' or set MLPF_PYTHON)" >&2
  exit 2
fi
cd "$ROOT"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
# Several groups share this machine's cores: one intra-op thread per rank unless told.
THREADS=()
if [[ " $* " != *" --launch.threads_per_rank"* ]]; then THREADS=(--launch.threads_per_rank=1); fi
# Horovod ranks of one group must share a "node" for the node-hour accounting to add up.
NODE=()
if [[ " $* " != *" --ranks_per_node"* && " $* " != *" --launch.ranks_per_node"* ]]; then
  NODE=(--ranks_per_node="$RANKS")
fi
exec "$PYTHON" -m benchmark.run --workers="$WORKERS" --ranks_per_worker="$RANKS" \
  "${NODE[@]}" "${THREADS[@]}" "$@"
