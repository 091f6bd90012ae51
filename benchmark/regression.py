"""Compare benchmark figures with a stored baseline: ratios, thresholds, baseline and history files.

A metric has a direction: ``smaller`` (latency, loss) or ``bigger`` (throughput) is better.
Both fold into one *worse ratio*: value / baseline for ``smaller``, baseline / value for
``bigger``; above 1 means worse. A metric regresses when its worse ratio exceeds
``1 + threshold`` and counts as improved below ``1 / (1 + threshold)``; so a threshold of 0.15
allows a latency to grow by 15 % or a throughput to fall by 13 % (1 - 1/1.15).

Baseline file (JSON, written atomically)::

    {"version": 1, "created": "2026-11-27T16:00:00+00:00", "host": "...", "git_commit": "...",
     "metrics": {"<name>": {"value": 123.4, "direction": "bigger", "threshold": 0.15,
                            "unit": "events/s", "values": [...]}}}

History file: JSON lines, one per nightly run, appended (one write per line, fsync).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from typing import Any

from mlpf_tf.configbase import atomic_write_text

DIRECTIONS = ("smaller", "bigger")
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

    @property
    def change(self) -> float:
        """Relative change of the value against the baseline (signed)."""
        if not (math.isfinite(self.value) and math.isfinite(self.baseline)) or self.baseline == 0:
            return math.nan
        return self.value / self.baseline - 1.0

    @property
    def allowed(self) -> str:
        if self.direction == "smaller":
            return f"<= {self.threshold * 100:+.1f}%"
        return f">= {(1.0 / (1.0 + self.threshold) - 1.0) * 100:+.1f}%"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "median": _finite_or_none(self.value),
                "values": [_finite_or_none(v) for v in self.values],
                "baseline": _finite_or_none(self.baseline), "direction": self.direction,
                "threshold": self.threshold, "unit": self.unit, "status": self.status,
                "worse_ratio": _finite_or_none(self.ratio), "message": self.message}


def _finite_or_none(x: float) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def compare(name: str, value: float, baseline: float | None, direction: str, threshold: float,
            unit: str = "", values: Sequence[float] = ()) -> Comparison:
    """Judge one median against its baseline (``None``: metric new to the baseline)."""
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
    if ratio > 1.0 + threshold:
        status = REGRESSION
    elif ratio < 1.0 / (1.0 + threshold):
        status = IMPROVED
    else:
        status = OK
    return Comparison(baseline=float(baseline), status=status, ratio=ratio, **common)


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
    """A fixed-width table: metric, unit, better, baseline, median, change, allowed, status."""
    header = ("metric", "unit", "better", "baseline", "median", "change", "allowed", "status")
    rows = [header]
    for c in comparisons:
        change = f"{c.change * 100:+.1f}%" if math.isfinite(c.change) else "-"
        status = c.status + (f" ({c.message})" if c.message and c.status == ERROR else "")
        rows.append((c.name, c.unit, c.direction, _num(c.baseline), _num(c.value), change,
                     c.allowed, status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    lines = []
    for r in rows:
        cells = [r[i].ljust(widths[i]) for i in range(len(header) - 1)] + [r[-1]]
        lines.append("  ".join(cells).rstrip())
    lines.insert(1, "-" * min(max(len(line) for line in lines), sum(widths) + 2 * len(widths) + 10))
    return "\n".join(lines)
