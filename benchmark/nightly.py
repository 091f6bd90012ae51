"""Nightly regression benchmark: a fixed suite of figures compared with a stored baseline.

    python -m benchmark.nightly --baseline FILE [--update_baseline] [--history FILE]
        [--repeats N] [--metrics a,b] [--providers mod1,mod2]

Each metric comes from a provider (a callable returning one float), has a direction
(``smaller`` / ``bigger`` is better), a threshold (allowed relative worsening, see
:mod:`benchmark.regression`), a unit and a kind (``speed`` or ``quality``). Every provider is
called ``--repeats`` times and summarised by the median. The fixed suite imports its providers
lazily, so this module loads without them; each provider module exposes one function:

  training_throughput   benchmark.throughput.nightly_training_throughput()  events/CPU-s, bigger
  pipeline_throughput   benchmark.data_throughput.nightly_pipeline_throughput()  events/CPU-s,
                        bigger
  oracle_latency        benchmark.oracle_latency.nightly_decision_latency_ms()  CPU-ms, smaller
  smoke_search_loss     benchmark.nightly_search.nightly_smoke_search_best_loss() val_loss, smaller
                        (best loss of a fixed-seed smoke search; a quality metric)

``--providers`` imports extra modules that call :func:`register` (e.g. site-specific metrics).
Exit status: 0 no regression; 1 a metric regressed or its provider failed; 2 bad baseline or
flags (checked before anything is measured). ``--update_baseline`` writes the new baseline
atomically after printing the comparison and exits 0 unless a provider failed; a missing
baseline is then created. Every run appends one JSON line to ``--history``.

Speed metrics are CPU time (process or thread), which another job on the machine moves far less
than wall time. A regression must exceed the metric's noise band and pass a one-sided
Mann-Whitney test across the repeats (:mod:`benchmark.regression`); 5 repeats by default.

Test-only switches, to prove regressions are caught: ``MLPF_BENCH_SLOWDOWN=F`` (env, see
:mod:`benchmark.slowdown`) makes every timed step of the speed providers burn F times its CPU
time more, a real slowdown inside the measurement (F=0.2: a 20% slowdown);
``--inject_slowdown=F`` (or env ``MLPF_NIGHTLY_INJECT_SLOWDOWN=F``) scales every speed value by
F after measuring; and
``--inject_quality_drop=D`` (or env ``MLPF_NIGHTLY_INJECT_QUALITY_DROP=D``) makes every quality
metric worse by the fraction D.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from benchmark import regression

SPEED, QUALITY = "speed", "quality"
ENV_SLOWDOWN = "MLPF_NIGHTLY_INJECT_SLOWDOWN"
ENV_QUALITY_DROP = "MLPF_NIGHTLY_INJECT_QUALITY_DROP"


@dataclasses.dataclass(frozen=True)
class Metric:
    name: str
    provider: Callable[[], float]
    direction: str
    threshold: float
    unit: str = ""
    kind: str = SPEED

    def __post_init__(self):
        if self.direction not in regression.DIRECTIONS:
            raise ValueError(f"metric {self.name}: direction must be one of "
                             f"{regression.DIRECTIONS}, got {self.direction!r}")
        if self.kind not in (SPEED, QUALITY):
            raise ValueError(f"metric {self.name}: kind must be speed or quality")
        if not self.threshold >= 0:
            raise ValueError(f"metric {self.name}: threshold must be >= 0")


class Registry:
    """Ordered name -> Metric; registering a name again replaces it."""

    def __init__(self):
        self._metrics: dict[str, Metric] = {}

    def register(self, name: str, provider: Callable[[], float], direction: str,
                 threshold: float, unit: str = "", kind: str = SPEED) -> Metric:
        metric = Metric(name, provider, direction, float(threshold), unit, kind)
        self._metrics[name] = metric
        return metric

    def metrics(self, names: Sequence[str] | None = None) -> list[Metric]:
        if not names:
            return list(self._metrics.values())
        unknown = [n for n in names if n not in self._metrics]
        if unknown:
            raise KeyError(f"--metrics: unknown metric(s) {', '.join(unknown)}; known: "
                           f"{', '.join(self._metrics)}")
        return [self._metrics[n] for n in names]


def lazy_provider(module: str, function: str) -> Callable[[], float]:
    """A provider that imports ``module`` only when first called."""
    def call() -> float:
        try:
            fn = getattr(importlib.import_module(module), function)
        except (ImportError, AttributeError) as exc:
            raise RuntimeError(f"provider {module}.{function} not available ({exc})") from None
        return float(fn())
    call.__qualname__ = f"{module}.{function}"
    return call


REGISTRY = Registry()
register = REGISTRY.register
REGISTRY.register("training_throughput",
                  lazy_provider("benchmark.throughput", "nightly_training_throughput"),
                  "bigger", 0.10, "events/CPU-s", SPEED)
REGISTRY.register("pipeline_throughput",
                  lazy_provider("benchmark.data_throughput", "nightly_pipeline_throughput"),
                  "bigger", 0.10, "events/CPU-s", SPEED)
REGISTRY.register("oracle_latency",
                  lazy_provider("benchmark.oracle_latency", "nightly_decision_latency_ms"),
                  "smaller", 0.10, "CPU-ms", SPEED)
REGISTRY.register("smoke_search_loss",
                  lazy_provider("benchmark.nightly_search", "nightly_smoke_search_best_loss"),
                  "smaller", 0.05, "val_loss", QUALITY)


def inject(metric: Metric, value: float, slowdown: float, quality_drop: float) -> float:
    """Make a value worse on purpose (test-only switches): slowdown for speed, drop for quality."""
    if metric.kind == SPEED and slowdown != 1.0:
        return value * slowdown if metric.direction == "smaller" else value / slowdown
    if metric.kind == QUALITY and quality_drop:
        return value * (1 + quality_drop) if metric.direction == "smaller" else value * (
            1 - quality_drop)
    return value


def measure(metric: Metric, repeats: int, slowdown: float = 1.0,
            quality_drop: float = 0.0) -> list[float]:
    return [inject(metric, float(metric.provider()), slowdown, quality_drop)
            for _ in range(repeats)]


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_nightly(metrics: Sequence[Metric], baseline_path: str, *, update_baseline: bool = False,
                history_path: str | None = None, repeats: int = 5, slowdown: float = 1.0,
                quality_drop: float = 0.0, out: TextIO = sys.stdout,
                err: TextIO = sys.stderr) -> int:
    """Measure, compare, print the table; returns the exit status (see the module docstring)."""
    if repeats < 1:
        print(f"error: --repeats must be >= 1, got {repeats}", file=err)
        return 2
    if not slowdown > 0 or not 0 <= quality_drop < 1:
        print(f"error: --inject_slowdown must be > 0 and --inject_quality_drop in [0, 1); got "
              f"{slowdown}, {quality_drop}", file=err)
        return 2
    previous: dict | None = None
    try:
        previous = regression.load_baseline(baseline_path)
    except regression.BaselineError as exc:
        if not (update_baseline and not os.path.exists(baseline_path)):
            print(f"error: {exc}", file=err)
            return 2
    if slowdown != 1.0 or quality_drop:
        print(f"note: injected slowdown x{slowdown:g}, quality drop {quality_drop:g} "
              "(test switches)", file=out)
    comparisons = []
    for metric in metrics:
        entry = (previous or {}).get(metric.name, {})
        base, base_values = entry.get("value"), entry.get("values") or ()
        start = time.perf_counter()
        try:
            values = measure(metric, repeats, slowdown, quality_drop)
        except Exception as exc:  # a failing provider is reported, the others still run
            comparisons.append(regression.Comparison(
                name=metric.name, value=math.nan, baseline=math.nan if base is None else base,
                direction=metric.direction, threshold=metric.threshold, unit=metric.unit,
                status=regression.ERROR, message=f"{type(exc).__name__}: {exc}"))
            continue
        comparisons.append(regression.compare(metric.name, statistics.median(values), base,
                                              metric.direction, metric.threshold, metric.unit,
                                              values, base_values))
        print(f"measured {metric.name}: {repeats} x in {time.perf_counter() - start:.1f} s",
              file=err)
    print(regression.format_table(comparisons), file=out)
    regressed = [c.name for c in comparisons if c.status == regression.REGRESSION]
    failed = [c.name for c in comparisons if c.status == regression.ERROR]
    if regressed:
        print(f"REGRESSION in {', '.join(regressed)} (baseline {baseline_path})", file=out)
    if failed:
        print(f"ERROR: provider failed for {', '.join(failed)}", file=out)
    status = 1 if (failed or (regressed and not update_baseline)) else 0
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    meta = {"created": now, "host": platform.node(), "git_commit": _git_commit(),
            "repeats": repeats}
    if update_baseline and not (slowdown != 1.0 or quality_drop):
        regression.write_baseline(baseline_path, comparisons, previous, **meta)
        print(f"baseline written to {baseline_path}", file=out)
    elif update_baseline:
        print("error: not writing a baseline measured with injected slowdown/quality drop",
              file=err)
        status = 2
    if history_path:
        regression.append_history(history_path, {
            **meta, "baseline": os.path.abspath(baseline_path),
            "updated_baseline": bool(update_baseline and status != 2),
            "injected": {"slowdown": slowdown, "quality_drop": quality_drop},
            "results": [c.as_dict() for c in comparisons], "regressions": regressed,
            "errors": failed, "exit_status": status})
    return status


def _env_float(name: str, default: float) -> float:
    text = os.environ.get(name, "")
    if not text:
        return default
    try:
        return float(text)
    except ValueError:
        raise SystemExit(f"error: environment variable {name}={text!r} is not a number") from None


def _define_flags():
    from absl import flags

    flags.DEFINE_string("baseline", None, "baseline JSON file (required)")
    flags.DEFINE_boolean("update_baseline", False, "write the measured figures as the baseline")
    flags.DEFINE_string("history", None, "JSON-lines file each run is appended to")
    flags.DEFINE_integer("repeats", 5, "measurements per metric (the median is compared; the "
                         "noise band and the test use them all)", lower_bound=1)
    flags.DEFINE_list("metrics", [], "only these metrics (default: the whole suite)")
    flags.DEFINE_list("providers", [], "modules to import that register() extra metrics")
    flags.DEFINE_float("inject_slowdown", _env_float(ENV_SLOWDOWN, 1.0),
                       f"TEST ONLY: make speed metrics this many times worse (env {ENV_SLOWDOWN})")
    flags.DEFINE_float("inject_quality_drop", _env_float(ENV_QUALITY_DROP, 0.0),
                       "TEST ONLY: make quality metrics worse by this fraction "
                       f"(env {ENV_QUALITY_DROP})")
    flags.mark_flag_as_required("baseline")


def main(argv: Sequence[str]) -> int:
    from absl import flags

    fv = flags.FLAGS
    if len(argv) > 1:
        print(f"error: unexpected arguments {' '.join(argv[1:])}", file=sys.stderr)
        return 2
    for module in fv.providers:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            print(f"error: --providers: cannot import {module} ({exc})", file=sys.stderr)
            return 2
    # Under ``python -m`` this file runs as __main__; provider modules register into the
    # importable benchmark.nightly, so take the registry from there.
    registry = importlib.import_module("benchmark.nightly").REGISTRY
    try:
        metrics = registry.metrics(fv.metrics)
    except KeyError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 2
    return run_nightly(metrics, fv.baseline, update_baseline=fv.update_baseline,
                       history_path=fv.history, repeats=fv.repeats,
                       slowdown=fv.inject_slowdown, quality_drop=fv.inject_quality_drop)


def run() -> None:
    from absl import app

    _define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
