"""Nightly quality figure: the best validation loss of a fixed-seed smoke search.

    python -m benchmark.nightly_search          # prints the figure

:func:`nightly_smoke_search_best_loss` is the ``smoke_search_loss`` provider of
:mod:`benchmark.nightly`. It runs the ``smoke`` experiment of :mod:`benchmark.run` with ASHA,
seed 1, a fixed trial budget (6 trials: new configurations and promotions) and one TensorFlow
thread, in a child process and a temporary run directory, and returns ``best.json``'s best
``val_loss``. A trial budget rather than a node-hour budget keeps the work, and so the figure,
the same however busy the machine is; one thread makes TensorFlow's reductions run in a fixed
order. About one to two minutes on an idle two-core machine.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile

NIGHTLY_TRIALS = 6
NIGHTLY_SEED = 1
RUN_NAME = "nightly-smoke"


def smoke_search_command(output_dir: str, max_trials: int = NIGHTLY_TRIALS,
                         seed: int = NIGHTLY_SEED, python: str = sys.executable) -> list[str]:
    """``python -m benchmark.run`` for the nightly smoke search into ``output_dir``."""
    return [python, "-m", "benchmark.run", "--experiment=smoke", "--tuner=asha",
            f"--max_trials={max_trials}", f"--seed={seed}", "--launch.threads_per_rank=1",
            f"--output_dir={output_dir}", f"--run_name={RUN_NAME}"]


def best_loss(run_dir: str) -> float:
    """The best objective in ``<run_dir>/best.json``; RuntimeError naming the file if none."""
    path = os.path.join(run_dir, "best.json")
    try:
        with open(path, encoding="utf-8") as fh:
            summary = json.load(fh)
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"{path}: unreadable ({exc})") from None
    best = summary.get("best") or {}
    value = best.get(summary.get("objective", "val_loss"))
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RuntimeError(f"{path}: no completed trial with a finite objective "
                           f"({summary.get('completed', 0)} of {summary.get('trials', 0)} "
                           "trials completed)")
    return float(value)


def nightly_smoke_search_best_loss(max_trials: int = NIGHTLY_TRIALS, seed: int = NIGHTLY_SEED,
                                   timeout: float = 900.0) -> float:
    """Final best val_loss of the fixed-seed smoke search (smaller is better)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0")
    with tempfile.TemporaryDirectory(prefix="mlpf-nightly-") as tmp:
        cmd = smoke_search_command(tmp, max_trials, seed)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the smoke search took longer than {timeout:g} s") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
            raise RuntimeError(f"the smoke search failed (exit code {proc.returncode}): {tail}")
        return best_loss(os.path.join(tmp, RUN_NAME))


if __name__ == "__main__":
    print(f"smoke_search_loss: {nightly_smoke_search_best_loss():.6g} val_loss")
