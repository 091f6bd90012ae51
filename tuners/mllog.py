"""Structured benchmark log in the MLCommons ``mlperf-logging`` line format: writer and parser.

Every line is ``:::MLLOG {json}`` where the JSON object has the keys ``namespace``,
``time_ms`` (integer unix milliseconds), ``event_type`` (``POINT_IN_TIME`` |
``INTERVAL_START`` | ``INTERVAL_END``), ``key``, ``value`` and ``metadata`` (a dict), which is
what the MLCommons compliance tooling reads. A search writes ``<run_dir>/mllog.txt`` (rank 0 of
the chief only) so that node-hours come from the log, not from memory:

  key                     type            value / metadata
  ``run_start``           INTERVAL_START  metadata ``search_id``; one per (re)start of a run
  ``run_stop``            INTERVAL_END    metadata ``status`` ("success" | "aborted") and
                                          ``stopped_by`` (the limit that ended the search)
  ``number_of_nodes``     POINT_IN_TIME   nodes held by the run from now on (int)
  ``accelerators_per_node``  POINT_IN_TIME  ranks / devices per node (int)
  ``number_of_workers``   POINT_IN_TIME   concurrent trials (int)
  ``seed``                POINT_IN_TIME   search seed
  ``trial_start``         INTERVAL_START  metadata ``trial_id``, ``worker_id``, ``nodes``
  ``trial_stop``          INTERVAL_END    metadata ``trial_id``, ``worker_id``, ``nodes``,
                                          ``status``
  ``epoch_start`` / ``epoch_stop``  INTERVAL_*  metadata ``trial_id``, ``epoch_num``
  ``eval_loss`` / ``eval_accuracy`` POINT_IN_TIME  value, metadata ``trial_id``, ``epoch_num``

A run may be resumed: every ``run_start`` opens a *segment* that the next ``run_stop`` closes.
Allocated node-hours are the sum over segments of segment wall time x nodes held; a segment with
no ``run_stop`` (the job was killed) ends at its last logged event and is reported as unclosed.

The file is append-only (one ``os.write`` per line in O_APPEND mode, then fsync), so a crash can
only cut the last line, which the parser skips with an :class:`MLLogWarning` naming the file.
The parser also accepts bare JSON lines (``mllog.jsonl``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any

from mlpf_tf.configbase import append_line

PREFIX = ":::MLLOG"
MLLOG_FILES = ("mllog.txt", "mllog.jsonl")  # looked up in this order in a run directory

POINT_IN_TIME = "POINT_IN_TIME"
INTERVAL_START = "INTERVAL_START"
INTERVAL_END = "INTERVAL_END"
EVENT_TYPES = (POINT_IN_TIME, INTERVAL_START, INTERVAL_END)

# Keys shared with the MLCommons constants, plus the HPO ones (trial_*, number_of_workers).
RUN_START, RUN_STOP = "run_start", "run_stop"
INIT_START, INIT_STOP = "init_start", "init_stop"
EPOCH_START, EPOCH_STOP = "epoch_start", "epoch_stop"
EVAL_START, EVAL_STOP = "eval_start", "eval_stop"
EVAL_ACCURACY, EVAL_LOSS = "eval_accuracy", "eval_loss"
NUMBER_OF_NODES = "number_of_nodes"
ACCELERATORS_PER_NODE = "accelerators_per_node"
NUMBER_OF_WORKERS = "number_of_workers"
SEED = "seed"
SUBMISSION_BENCHMARK = "submission_benchmark"
SUBMISSION_PLATFORM = "submission_platform"
TRIAL_START, TRIAL_STOP = "trial_start", "trial_stop"


class MLLogWarning(UserWarning):
    """A log file had unreadable lines or an unclosed run; the readable part was used."""


class MLLogError(ValueError):
    """A log cannot give what was asked (e.g. no run_start); the message names the file."""


@dataclasses.dataclass(frozen=True)
class MLLogEvent:
    """One parsed log line."""

    key: str
    value: Any
    time_ms: int
    event_type: str = POINT_IN_TIME
    namespace: str = ""
    metadata: dict = dataclasses.field(default_factory=dict)

    def to_line(self) -> str:
        body = {"namespace": self.namespace, "time_ms": self.time_ms,
                "event_type": self.event_type, "key": self.key, "value": self.value,
                "metadata": self.metadata}
        return f"{PREFIX} {json.dumps(body, default=_json_default)}"


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


class MLLogger:
    """Appends ``:::MLLOG`` lines to one file; ``clock`` returns unix seconds (injectable).

    Only one process (rank 0 of the chief) should write a run's log.
    """

    def __init__(self, path: str | os.PathLike, namespace: str = "",
                 clock: Callable[[], float] = time.time, echo: Callable[[str], None] | None = None):
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self.namespace = namespace
        self.clock = clock
        self.echo = echo

    def _log(self, event_type: str, key: str, value: Any, metadata: dict | None,
             time_ms: int | None) -> MLLogEvent:
        if not key or not isinstance(key, str):
            raise ValueError(f"mllog key must be a non-empty string, got {key!r}")
        stamp = int(round(self.clock() * 1000.0)) if time_ms is None else int(time_ms)
        event = MLLogEvent(key=key, value=value, time_ms=stamp, event_type=event_type,
                           namespace=self.namespace, metadata=dict(metadata or {}))
        line = event.to_line() + "\n"
        append_line(self.path, line)
        if self.echo is not None:
            self.echo(line.rstrip("\n"))
        return event

    def event(self, key: str, value: Any = None, metadata: dict | None = None,
              time_ms: int | None = None) -> MLLogEvent:
        """A POINT_IN_TIME record (e.g. ``number_of_nodes``, ``eval_loss``)."""
        return self._log(POINT_IN_TIME, key, value, metadata, time_ms)

    def start(self, key: str, value: Any = None, metadata: dict | None = None,
              time_ms: int | None = None) -> MLLogEvent:
        """An INTERVAL_START record (``run_start``, ``trial_start``, ``epoch_start``)."""
        return self._log(INTERVAL_START, key, value, metadata, time_ms)

    def end(self, key: str, value: Any = None, metadata: dict | None = None,
            time_ms: int | None = None) -> MLLogEvent:
        """An INTERVAL_END record (``run_stop``, ``trial_stop``, ``epoch_stop``)."""
        return self._log(INTERVAL_END, key, value, metadata, time_ms)


def parse_line(line: str) -> MLLogEvent | None:
    """Parse one line; None for lines that are not log records (blank or other output).

    Raises ValueError for a line that looks like a record but is malformed.
    """
    text = line.strip()
    if not text:
        return None
    if text.startswith(PREFIX):
        text = text[len(PREFIX):].strip()
    elif not text.startswith("{"):
        return None
    body = json.loads(text)
    if not isinstance(body, dict):
        raise ValueError("record is not a JSON object")
    missing = [k for k in ("time_ms", "event_type", "key") if k not in body]
    if missing:
        raise ValueError(f"record lacks {', '.join(missing)}")
    if body["event_type"] not in EVENT_TYPES:
        raise ValueError(f"unknown event_type {body['event_type']!r}")
    meta = body.get("metadata") or {}
    if not isinstance(meta, dict):
        raise ValueError("metadata is not an object")
    return MLLogEvent(key=str(body["key"]), value=body.get("value"),
                      time_ms=int(body["time_ms"]), event_type=body["event_type"],
                      namespace=str(body.get("namespace", "")), metadata=meta)


def read_mllog(path: str | os.PathLike) -> list[MLLogEvent]:
    """All valid records of a log file, in file order; bad lines warn (MLLogWarning) naming it."""
    path = os.fspath(path)
    with open(path, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    lines = text.split("\n")
    events = []
    for lineno, raw in enumerate(lines, start=1):
        try:
            event = parse_line(raw)
        except (ValueError, TypeError) as exc:
            last = lineno == len(lines)
            what = "truncated last line" if last else f"unreadable line {lineno}"
            warnings.warn(f"{path}: {what} skipped ({exc})", MLLogWarning, stacklevel=2)
            continue
        if event is not None:
            events.append(event)
    return events


def find_mllog(run_dir: str | os.PathLike) -> str | None:
    """The log file of a run directory (``mllog.txt`` or ``mllog.jsonl``), or None."""
    for name in MLLOG_FILES:
        candidate = os.path.join(os.fspath(run_dir), name)
        if os.path.exists(candidate):
            return candidate
    return None


@dataclasses.dataclass(frozen=True)
class Segment:
    """One run_start..run_stop stretch of a run, with the nodes held during it."""

    start_s: float
    stop_s: float
    nodes: float
    closed: bool

    @property
    def node_hours(self) -> float:
        return (self.stop_s - self.start_s) * self.nodes / 3600.0


@dataclasses.dataclass(frozen=True)
class RunTiming:
    """What the log says about a run's use of the machine."""

    segments: tuple[Segment, ...]
    nodes: float                      # last number_of_nodes logged
    accelerators_per_node: float      # NaN if never logged
    workers: float                    # NaN if never logged
    trial_node_hours: dict            # trial_id -> node-hours from trial_start/trial_stop

    @property
    def start_s(self) -> float:
        return self.segments[0].start_s

    @property
    def stop_s(self) -> float:
        return self.segments[-1].stop_s

    @property
    def wall_seconds(self) -> float:
        """Sum of segment lengths (gaps between a kill and a resume are not held)."""
        return sum(s.stop_s - s.start_s for s in self.segments)

    @property
    def allocated_node_hours(self) -> float:
        return sum(s.node_hours for s in self.segments)

    @property
    def complete(self) -> bool:
        return all(s.closed for s in self.segments)

    def elapsed_seconds(self, t: float) -> float:
        """Run wall seconds held from the first run_start until unix time ``t``."""
        return sum(max(0.0, min(t, s.stop_s) - s.start_s) for s in self.segments)

    def allocated_node_hours_until(self, t: float) -> float:
        """Allocated node-hours from the first run_start until unix time ``t``."""
        return sum(max(0.0, min(t, s.stop_s) - s.start_s) * s.nodes / 3600.0
                   for s in self.segments)


def _number(value: Any, key: str, where: str) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise MLLogError(f"{where}: {key} has non-numeric value {value!r}") from None
    if not math.isfinite(out) or out <= 0:
        raise MLLogError(f"{where}: {key} must be a positive number, got {value!r}")
    return out


def run_timing(events: Iterable[MLLogEvent], where: str = "mllog",
               default_nodes: float | None = None) -> RunTiming:
    """Segments, nodes held and per-trial node-hours from a run's log records.

    ``default_nodes`` is used when the log never records ``number_of_nodes`` (else an error).
    A segment not closed by ``run_stop`` ends at its last event and warns naming ``where``.
    """
    events = sorted(events, key=lambda e: e.time_ms)
    nodes = float(default_nodes) if default_nodes else math.nan
    accel = math.nan
    workers = math.nan
    segments: list[Segment] = []
    open_start: float | None = None
    open_nodes = nodes
    last_t = None
    trial_open: dict[str, tuple[float, float]] = {}
    trial_nh: dict[str, float] = {}
    for e in events:
        t = e.time_ms / 1000.0
        last_t = t
        if e.key == NUMBER_OF_NODES:
            nodes = _number(e.value, e.key, where)
            if open_start is not None:
                # Nodes changed inside a segment: close the piece and continue with the new count.
                if not math.isnan(open_nodes) and t > open_start:
                    segments.append(Segment(open_start, t, open_nodes, True))
                    open_start = t
                open_nodes = nodes
        elif e.key == ACCELERATORS_PER_NODE:
            accel = _number(e.value, e.key, where)
        elif e.key == NUMBER_OF_WORKERS:
            workers = _number(e.value, e.key, where)
        elif e.key == RUN_START:
            if open_start is not None:
                warnings.warn(f"{where}: run_start at {e.time_ms} ms without run_stop before it; "
                              "the earlier segment ends there", MLLogWarning, stacklevel=2)
                segments.append(Segment(open_start, t, open_nodes, False))
            open_start, open_nodes = t, nodes
        elif e.key == RUN_STOP:
            if open_start is None:
                warnings.warn(f"{where}: run_stop at {e.time_ms} ms without run_start; ignored",
                              MLLogWarning, stacklevel=2)
                continue
            segments.append(Segment(open_start, t, open_nodes, True))
            open_start = None
        elif e.key in (TRIAL_START, TRIAL_STOP):
            tid = str(e.metadata.get("trial_id"))
            tnodes = float(e.metadata.get("nodes", 1) or 1)
            if e.key == TRIAL_START:
                trial_open[tid] = (t, tnodes)
            elif tid in trial_open:
                t0, n0 = trial_open.pop(tid)
                trial_nh[tid] = trial_nh.get(tid, 0.0) + (t - t0) * n0 / 3600.0
    if open_start is not None:
        warnings.warn(f"{where}: no run_stop after the run_start at {int(open_start * 1000)} ms; "
                      "the run is counted until its last logged event", MLLogWarning, stacklevel=2)
        segments.append(Segment(open_start, last_t, open_nodes, False))
    if not segments:
        raise MLLogError(f"{where}: no run_start record")
    if any(math.isnan(s.nodes) for s in segments):
        raise MLLogError(f"{where}: no number_of_nodes record (needed for node-hours)")
    return RunTiming(segments=tuple(segments), nodes=nodes, accelerators_per_node=accel,
                     workers=workers, trial_node_hours=trial_nh)
