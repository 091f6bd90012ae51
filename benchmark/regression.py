"""Compare benchmark figures with a stored baseline: noise-aware ratios, baseline and history.

A metric has a direction: ``smaller`` (latency, loss) or ``bigger`` (throughput) is better.
Both fold into one *worse ratio*: value / baseline for ``smaller``, baseline / value for
``bigger``, medians of the repeats; above 1 means worse.

A change counts only when it is larger than the noise. The *band* of a metric is
``max(threshold, NOISE_K x relative spread)``, where the relative spread is the robust spread
(1.4826 x median absolute deviation, over the median) of the baseline's repeats or of this
run's, whichever is larger; ``threshold`` is the smallest change that matters. A metric
REGRESSES when its worse ratio exceeds ``1 + band`` **and**, with at least
``MIN_REPEATS_FOR_TEST`` repeats on both sides, a one-sided Mann-Whitney U test finds this
run's repeats worse than the baseline's at p <= ``ALPHA``; it counts as improved by the mirror rule.
So one slow repeat, or a machine whose runs spread by 20%, does not raise an alarm, while a
steady 20% slowdown on a machine with a few percent of noise does (every new repeat worse: p = 0.004
with 5 repeats a side, 0.05 with 3). Speed metrics are measured in CPU time where wall time is
noisy (see :mod:`benchmark.nightly`).

Baseline file (JSON, written atomically)::

    {"version": 1, "created": "2026-11-27T16:00:00+00:00", "host": "...", "git_commit": "...",
     "metrics": {"<name>": {"value": 123.4, "direction": "bigger", "threshold": 0.15,
                            "unit": "events/s", "values": [...]}}}

``values`` are the baseline's repeats (the noise estimate and the test need them; a baseline
without them is judged on the threshold alone). History file: JSON lines, one per nightly run,
appended (one write per line, fsync).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
from collections.abc import Sequence
from typing import Any

from mlpf_tf.configbase import atomic_write_text

DIRECTIONS = ("smaller", "bigger")
#: the band is at least this many relative robust spreads of the repeats
NOISE_K = 3.0
#: significance of the one-sided Mann-Whitney U test
ALPHA = 0.05
#: repeats needed on each side before the test is applied
MIN_REPEATS_FOR_TEST = 3
BASELINE_VERSION = 1
OK, REGRESSION, IMPROVED, NEW, ERROR = "ok", "REGRESSION", "improved", "new", "ERROR"


class BaselineError(ValueError):
    """The baseline file is missing or malformed; the message names the file."""


def worse_ratio(value: float, baseline: float, direction: str) -> float:
    """Above 1 means ``value`` is worse than ``baseline`` for a metric of ``direction``."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    num, den = (value, baseline) if direction == "smaller" else (baseline, value)
    if den == 0:
        return math.inf if num > 0 else 1.0
    return num / den


@dataclasses.dataclass(frozen=True)
class Comparison:
    name: str
    value: float            # median of this run (NaN on error)
    baseline: float         # NaN if the baseline has no such metric
    direction: str
    threshold: float
    unit: str = ""
    status: str = OK
    ratio: float = math.nan  # worse ratio
    message: str = ""
    values: tuple = ()
    band: float = math.nan      # allowed relative worsening (threshold or noise, larger)
    p_value: float = math.nan   # one-sided test that this run is worse (NaN: not applied)

    @property
    def change(self) -> float:
        """Relative change of the value against the baseline (signed)."""
        if not (math.isfinite(self.value) and math.isfinite(self.baseline)) or self.baseline == 0:
            return math.nan
        return self.value / self.baseline - 1.0

    @property
    def allowed(self) -> str:
        band = self.band if math.isfinite(self.band) else self.threshold
        if self.direction == "smaller":
            return f"<= {band * 100:+.1f}%"
        return f">= {(1.0 / (1.0 + band) - 1.0) * 100:+.1f}%"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "median": _finite_or_none(self.value),
                "values": [_finite_or_none(v) for v in self.values],
                "baseline": _finite_or_none(self.baseline), "direction": self.direction,
                "threshold": self.threshold, "unit": self.unit, "status": self.status,
                "worse_ratio": _finite_or_none(self.ratio), "band": _finite_or_none(self.band),
                "p_value": _finite_or_none(self.p_value), "message": self.message}


def _finite_or_none(x: float) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def relative_spread(values: Sequence[float]) -> float:
    """1.4826 x median absolute deviation / |median| (0 for fewer than 2 values)."""
    v = [float(x) for x in values if math.isfinite(float(x))]
    if len(v) < 2:
        return 0.0
    med = statistics.median(v)
    if med == 0:
        return 0.0
    mad = statistics.median(abs(x - med) for x in v)
    return 1.4826 * mad / abs(med)


def worse_p_value(values: Sequence[float], baseline_values: Sequence[float],
                  direction: str) -> float:
    """One-sided Mann-Whitney U p-value that ``values`` are worse than ``baseline_values``
    (NaN when either side has fewer than MIN_REPEATS_FOR_TEST values)."""
    if len(values) < MIN_REPEATS_FOR_TEST or len(baseline_values) < MIN_REPEATS_FOR_TEST:
        return math.nan
    from scipy.stats import mannwhitneyu

    alternative = "greater" if direction == "smaller" else "less"
    return float(mannwhitneyu(list(values), list(baseline_values), alternative=alternative,
                              method="exact" if len(values) * len(baseline_values) <= 400
                              else "asymptotic").pvalue)


def compare(name: str, value: float, baseline: float | None, direction: str, threshold: float,
            unit: str = "", values: Sequence[float] = (),
            baseline_values: Sequence[float] = ()) -> Comparison:
    """Judge one median against its baseline (``None``: metric new to the baseline); see the
    module doc for the band and the test."""
    if threshold < 0:
        raise ValueError(f"{name}: threshold must be >= 0, got {threshold}")
    common = dict(name=name, value=float(value), direction=direction, threshold=threshold,
                  unit=unit, values=tuple(values))
    if not math.isfinite(value):
        return Comparison(baseline=math.nan if baseline is None else baseline, status=ERROR,
                          message=f"non-finite measurement {value}", **common)
    if baseline is None:
        return Comparison(baseline=math.nan, status=NEW, message="not in the baseline", **common)
    ratio = worse_ratio(value, baseline, direction)
    band = max(threshold, NOISE_K * max(relative_spread(values),
                                        relative_spread(baseline_values)))
    p_worse = worse_p_value(values, baseline_values, direction)
    p_better = worse_p_value(baseline_values, values, direction)
    if ratio > 1.0 + band and not p_worse > ALPHA:
        status = REGRESSION
    elif ratio < 1.0 / (1.0 + band) and not p_better > ALPHA:
        status = IMPROVED
    else:
        status = OK
    return Comparison(baseline=float(baseline), status=status, ratio=ratio, band=band,
                      p_value=p_worse, **common)


def load_baseline(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """name -> entry of a baseline file; BaselineError naming the file if absent or malformed."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BaselineError(f"baseline file {path} does not exist; create it with "
                            "--update_baseline")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise BaselineError(f"baseline file {path} is not valid JSON ({exc}); fix it or "
                            "remove it and rerun with --update_baseline") from None
    except OSError as exc:
        raise BaselineError(f"baseline file {path} cannot be read ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise BaselineError(f"baseline file {path} has no 'metrics' object")
    if data.get("version") != BASELINE_VERSION:
        raise BaselineError(f"baseline file {path} has version {data.get('version')!r}, "
                            f"expected {BASELINE_VERSION}")
    for name, entry in data["metrics"].items():
        value = entry.get("value") if isinstance(entry, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value):
            raise BaselineError(f"baseline file {path}: metric {name!r} has no finite 'value'")
    return data["metrics"]


def write_baseline(path: str | os.PathLike, comparisons: Sequence[Comparison],
                   previous: dict[str, dict] | None = None, **meta: Any) -> dict:
    """Write the baseline atomically: measured metrics, plus previous entries not re-measured."""
    metrics = dict(previous or {})
    for c in comparisons:
        if c.status == ERROR:
            continue
        metrics[c.name] = {"value": c.value, "direction": c.direction,
                           "threshold": c.threshold, "unit": c.unit,
                           "values": [float(v) for v in c.values]}
    data = {"version": BASELINE_VERSION, **meta, "metrics": metrics}
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")
    return data


def append_history(path: str | os.PathLike, entry: dict[str, Any]) -> None:
    """Append one JSON line (single write in O_APPEND mode, then fsync)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    line = json.dumps(entry, sort_keys=False) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def _num(x: float) -> str:
    if not math.isfinite(x):
        return "-"
    return f"{x:.4g}"


def format_table(comparisons: Sequence[Comparison]) -> str:
    """A fixed-width table: metric, unit, better, baseline, median, change, allowed (the band),
    p (one-sided test that it got worse), status."""
    header = ("metric", "unit", "better", "baseline", "median", "change", "allowed", "p",
              "status")
    rows = [header]
    for c in comparisons:
        change = f"{c.change * 100:+.1f}%" if math.isfinite(c.change) else "-"
        status = c.status + (f" ({c.message})" if c.message and c.status == ERROR else "")
        p = f"{c.p_value:.3f}" if math.isfinite(c.p_value) else "-"
        rows.append((c.name, c.unit, c.direction, _num(c.baseline), _num(c.value), change,
                     c.allowed, p, status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = []
    for r in rows:
        cells = [r[i].ljust(widths[i]) for i in range(len(header) - 1)] + [r[-1]]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * min(max(len(line) for line in lines), sum(widths) + 2 * len(widths) + 10))
    return "\n".join(lines)
