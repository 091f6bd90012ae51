"""``trials.jsonl``: the append-only record of a search, one JSON object per line.

Writers append whole lines and fsync, so a crash can at worst leave one truncated last line,
which readers skip with a warning naming the file. The schema (version 1):

Common keys (every record):
  ``v`` (schema version, 1), ``event`` ("trial_start" | "epoch" | "trial_end" |
  "trial_suspend"),
  ``search_id``, ``trial_id``, ``time`` (unix seconds when written), ``worker_id``.
``trial_start``: ``parent_id`` (trial continued from, or null), ``hyperparameters`` (dict),
  ``rung`` (int or null), ``initial_epoch``, ``target_epochs``, ``nodes``, ``ranks``.
``epoch``: ``epoch`` (1-based count of epochs the model has trained after it), ``metrics``
  (e.g. {"loss": .., "val_loss": ..}), ``wall_seconds`` (this epoch), ``nodes``, ``ranks``,
  ``node_hours`` (wall_seconds * nodes / 3600).
``trial_end``: ``status`` ("COMPLETED" | "FAILED" | "INVALID"), ``parent_id``,
  ``hyperparameters``, ``rung``, ``initial_epoch``, ``epochs`` (last epoch reached),
  ``metrics`` (final: the objective and the rest), ``objective`` (name), ``start_time``,
  ``wall_seconds`` (whole trial), ``nodes``, ``ranks``, ``node_hours`` (whole trial),
  ``error`` (message, for FAILED).
``trial_suspend`` (written by the chief when a worker gives a trial back at the SLURM wall-time
  signal): ``epoch`` (epochs its checkpoint holds), ``reason`` ("wall_time"). The trial has not
  ended: a resumed search continues it under the same id from that epoch (no second
  ``trial_start``, epoch records from ``epoch + 1`` on) and it gets exactly one ``trial_end``.
Optional on any record: ``simulated`` (true for runs replayed by ``benchmark.sim.replay``).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

from mlpf_tf.configbase import append_line

SCHEMA_VERSION = 1
EVENTS = ("trial_start", "epoch", "trial_end", "trial_suspend")
#: in the values the chief hands out for a suspended trial: continue it from this epoch
RESUME_KEY = "tuner/resume_epoch"
STATUSES = ("COMPLETED", "FAILED", "INVALID")
TRIALS_FILE = "trials.jsonl"


class RecordWarning(UserWarning):
    """A record file had unreadable lines; the readable ones were used."""


def node_hours(wall_seconds: float, nodes: float) -> float:
    """Node-hours spent: wall-clock seconds times nodes held, in hours."""
    return float(wall_seconds) * float(nodes) / 3600.0


class TrialRecorder:
    """Appends records to ``<run_dir>/trials.jsonl``; one line per call, flushed and synced.

    Only one process (rank 0 of a worker group, or the chief) should hold a recorder for a file
    at a time per writer; lines are written with a single ``write`` of less than a pipe buffer
    in O_APPEND mode, so lines of concurrent writers do not interleave.
    """

    def __init__(self, run_dir: str | os.PathLike, search_id: str, worker_id: str = "0",
                 clock=time.time):
        self.path = os.path.join(os.fspath(run_dir), TRIALS_FILE)
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.search_id = search_id
        self.worker_id = worker_id
        self.clock = clock

    def append(self, event: str, trial_id: str, **fields: Any) -> dict[str, Any]:
        record = make_record(event, trial_id, self.search_id, self.worker_id, self.clock(),
                             fields)
        append_line(self.path, record_line(record))
        return record


def make_record(event: str, trial_id: str, search_id: str, worker_id: str, time_: float,
                fields: dict[str, Any]) -> dict[str, Any]:
    """One record of the schema above; ValueError for an unknown event or a ``trial_end``
    without a valid status. The common keys are set here (``fields`` cannot override them)."""
    if event not in EVENTS:
        raise ValueError(f"unknown record event {event!r}; expected one of {EVENTS}")
    if event == "trial_end" and fields.get("status") not in STATUSES:
        raise ValueError(f"trial_end needs status in {STATUSES}, got {fields.get('status')!r}")
    common = {"v": SCHEMA_VERSION, "event": event, "search_id": search_id,
              "trial_id": str(trial_id), "time": time_, "worker_id": worker_id}
    return {**common, **{k: v for k, v in fields.items() if k not in common}}


def record_line(record: dict[str, Any]) -> str:
    """A record as one ``trials.jsonl`` line."""
    return json.dumps(record, sort_keys=False, default=json_default) + "\n"


def json_default(obj: Any) -> Any:
    """``json.dumps(default=)`` for numpy scalars and arrays in records."""
    # numpy scalars and arrays, without importing numpy here.
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"cannot record a value of type {type(obj).__name__}")


def read_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """Yield the valid records of a trials.jsonl; bad lines are skipped with a RecordWarning."""
    path = os.fspath(path)
    with open(path, "rb") as fh:
        data = fh.read()
    lines = data.split(b"\n")
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        last = lineno == len(lines)  # no trailing newline: the writer was cut off
        try:
            record = json.loads(raw)
            if not isinstance(record, dict) or record.get("event") not in EVENTS:
                raise ValueError("not a trial record")
        except ValueError as exc:
            what = "truncated last line" if last else f"unreadable line {lineno}"
            warnings.warn(f"{path}: {what} skipped ({exc})", RecordWarning, stacklevel=2)
            continue
        yield record
