"""Read search run directories into pandas, with every problem turned into a named warning.

What a run directory must hold for the reports (written by the search runner, rank 0 only):

``params.yaml`` (required)
  The whole config tree: sections ``data``, ``model``, ``train``, ``search``, ``launch`` and the
  top-level keys ``experiment`` (name), ``search_id`` and ``simulated`` (bool). Read here:
  ``search.tuner`` (required), ``search.seed``, ``search.objective`` (default ``val_loss``),
  ``search.node_hour_budget`` (0 or absent: none), ``launch.workers`` (concurrent trials),
  ``launch.ranks_per_worker``, ``launch.ranks_per_node`` and ``launch.nodes`` (nodes held).
  If ``launch.nodes`` is absent it is ``ceil(workers * ranks_per_worker / ranks_per_node)``
  (the log's ``number_of_nodes`` wins when present). The objective is minimised: a run with
  ``search.direction: max`` is skipped with a warning.
``trials.jsonl`` (required; schema in :mod:`tuners.records`)
  ``epoch`` records give the objective after each epoch and the epoch's ``wall_seconds`` and
  ``nodes``; ``trial_start`` / ``trial_end`` give the trial counts.
``mllog.txt`` or ``mllog.jsonl`` (expected; format in :mod:`tuners.mllog`)
  ``run_start`` / ``run_stop`` and ``number_of_nodes`` give the run wall time and the allocated
  node-hours. Without it the run is still reported, with a warning naming the missing file:
  the run then spans from its first ``trial_start`` to its last record, on ``launch.nodes``.
``best/physics.json``, ``best/predictions.npz`` (optional; see :mod:`reports.physics`).

Node-hour accounting (both are reported):
  * trial node-hours: the sum over epoch records of ``wall_seconds * nodes / 3600`` - the time
    workers spent training and evaluating trials, in the order the records were written;
  * (run table only) trial_end node-hours: the ``node_hours`` of trial_end records, i.e. whole
    trials including model building and checkpointing between epochs;
  * allocated node-hours: run wall time x nodes held, from the log - includes idle workers
    (waiting for a synchronous rung, start-up, the oracle) and so is what a search costs.
A trial's result is its objective at its last epoch (the ``trial_end`` metrics of a COMPLETED
trial: the epoch whose weights its checkpoint holds), as the oracles rank it. The anytime curve
of a run is the best-so-far result after each trial end, against both axes; the allocated axis
at a trial end is the node-hours held from ``run_start`` until the record's ``time``. The best
objective of any epoch is kept only as a secondary column (``best_epoch_loss``). Epochs with a
non-finite objective (diverged) count node-hours but never improve the best.

Robustness: a truncated or unreadable line in ``trials.jsonl`` or the log, a missing required
file, records of another ``search_id`` inside a run, or two directories with the same
``search_id`` give a :class:`RunWarning` naming the file; the valid part is kept. A directory
without ``params.yaml`` or ``trials.jsonl`` is skipped. Mixed experiments are handled by
:func:`select_experiment`: the report covers one experiment (the one with the most runs unless
named) and lists the runs it leaves out.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import yaml

from tuners import mllog
from tuners.records import TRIALS_FILE, read_records

PARAMS_FILE = "params.yaml"
PHYSICS_FILE = os.path.join("best", "physics.json")
PREDICTIONS_FILE = os.path.join("best", "predictions.npz")


class RunWarning(UserWarning):
    """A run directory is incomplete or inconsistent; the message names the file."""


@dataclasses.dataclass
class Run:
    """One search run, read from its directory."""

    path: str
    experiment: str
    search_id: str
    tuner: str
    seed: Any
    workers: int
    nodes: float
    ranks_per_worker: int
    ranks_per_node: int
    budget_node_hours: float          # NaN when the search had no node-hour budget
    objective: str
    simulated: bool
    params: dict
    epochs: pd.DataFrame              # one row per epoch record, time-ordered, with curves
    trials: pd.DataFrame              # one row per trial_start / trial_end record
    wall_seconds: float
    allocated_node_hours: float
    timing_source: str                # "mllog" or "trials.jsonl (no mllog)"
    run_start: float                  # unix seconds
    mllog_trial_node_hours: float     # from trial_start/trial_stop log intervals (NaN if none)
    results: pd.DataFrame = dataclasses.field(default_factory=lambda: _result_frame([], "", 0.0,
                                                                                   None, 1.0))
    stopped_by: str = "unknown"       # the limit that ended the search (log's run_stop)
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def trial_node_hours(self) -> float:
        return float(self.epochs["node_hours"].sum()) if len(self.epochs) else 0.0

    @property
    def best_loss(self) -> float:
        """The best trial result: the smallest objective a completed trial ended with (its last
        epoch, whose weights its checkpoint holds)."""
        finite = self.results["objective"][np.isfinite(self.results["objective"])]
        return float(finite.min()) if len(finite) else math.nan

    @property
    def best_epoch_loss(self) -> float:
        """Secondary: the smallest objective of any epoch of any trial, which may belong to no
        saved model (a trial that dipped and ended worse)."""
        finite = self.epochs["objective"][np.isfinite(self.epochs["objective"])]
        return float(finite.min()) if len(finite) else math.nan

    def setup_seconds(self) -> float:
        """Sum over ended trials of their set-up seconds (build, data, restore; NaN if none
        recorded)."""
        return _sum_column(self.trials, "setup_seconds")

    def trace_seconds(self) -> float:
        """Sum over ended trials of their estimated tracing seconds (NaN if none recorded)."""
        return _sum_column(self.trials, "trace_seconds")

    @property
    def trial_end_node_hours(self) -> float:
        """Sum of ``node_hours`` of trial_end records: whole trials, including model building,
        data loading and checkpointing outside the epochs (NaN if no trial ended)."""
        ends = self.trials[self.trials["event"] == "trial_end"]["node_hours"]
        ends = pd.to_numeric(ends, errors="coerce").dropna()
        return float(ends.sum()) if len(ends) else math.nan

    def trial_counts(self) -> dict[str, int]:
        """started = trial_start records (a continued trial counts again); ended by status."""
        t = self.trials
        counts = {"started": int((t["event"] == "trial_start").sum())}
        ends = t[t["event"] == "trial_end"]
        for status in ("COMPLETED", "FAILED", "INVALID"):
            counts[status.lower()] = int((ends["status"] == status).sum())
        return counts

    @property
    def has_physics(self) -> bool:
        return os.path.exists(os.path.join(self.path, PHYSICS_FILE)) or os.path.exists(
            os.path.join(self.path, PREDICTIONS_FILE))


def _warn(messages: list[str], text: str) -> None:
    messages.append(text)
    warnings.warn(text, RunWarning, stacklevel=3)


def _get(tree: dict, dotted: str, default: Any = None) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


def _collect(fn, *args) -> tuple[Any, list[str]]:
    """Call fn, returning (result, [messages of the warnings it raised])."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args)
    return result, [str(w.message) for w in caught]


def read_params(path: str) -> dict:
    with open(path, encoding="utf-8") as fh:
        tree = yaml.safe_load(fh)
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return tree


def _epoch_frame(records: list[dict], objective: str, run_start: float,
                 timing: mllog.RunTiming | None, nodes_held: float) -> pd.DataFrame:
    rows = []
    for r in records:
        if r.get("event") != "epoch":
            continue
        nodes = float(r.get("nodes") or 1)
        wall = float(r.get("wall_seconds") or 0.0)
        value = (r.get("metrics") or {}).get(objective)
        try:
            value = float(value)
        except (TypeError, ValueError):
            value = math.nan
        rows.append({"trial_id": str(r.get("trial_id")), "epoch": r.get("epoch"),
                     "time": float(r.get("time", math.nan)), "wall_seconds": wall,
                     "nodes": nodes, "node_hours": wall * nodes / 3600.0,
                     "objective": value, "worker_id": r.get("worker_id")})
    cols = ["trial_id", "epoch", "time", "wall_seconds", "nodes", "node_hours", "objective",
            "worker_id"]
    df = pd.DataFrame(rows, columns=cols)
    df = df.sort_values("time", kind="stable").reset_index(drop=True)
    df["cum_trial_node_hours"] = df["node_hours"].cumsum()
    df["best_so_far"] = df["objective"].where(np.isfinite(df["objective"])).cummin().ffill()
    _add_allocation(df, run_start, timing, nodes_held)
    return df


def _add_allocation(df: pd.DataFrame, run_start: float, timing: mllog.RunTiming | None,
                    nodes_held: float) -> None:
    """Columns ``alloc_node_hours`` and ``elapsed_seconds`` at each row's ``time``: from the
    log's segments, else from the run start on ``nodes_held`` nodes."""
    if timing is not None:
        df["alloc_node_hours"] = [timing.allocated_node_hours_until(t) for t in df["time"]]
        df["elapsed_seconds"] = [timing.elapsed_seconds(t) for t in df["time"]]
    else:
        df["elapsed_seconds"] = (df["time"] - run_start).clip(lower=0.0)
        df["alloc_node_hours"] = df["elapsed_seconds"] * nodes_held / 3600.0


def _trial_frame(records: list[dict]) -> pd.DataFrame:
    rows = [{"event": r["event"], "trial_id": str(r.get("trial_id")), "status": r.get("status"),
             "time": r.get("time"), "worker_id": r.get("worker_id"),
             "node_hours": r.get("node_hours"), "setup_seconds": r.get("setup_seconds"),
             "trace_seconds": r.get("trace_seconds")}
            for r in records if r.get("event") in ("trial_start", "trial_end")]
    return pd.DataFrame(rows, columns=["event", "trial_id", "status", "time", "worker_id",
                                       "node_hours", "setup_seconds", "trace_seconds"])


def _sum_column(frame: pd.DataFrame, column: str) -> float:
    values = pd.to_numeric(frame.loc[frame["event"] == "trial_end", column],
                           errors="coerce").dropna()
    return float(values.sum()) if len(values) else math.nan


def _result_frame(records: list[dict], objective: str, run_start: float,
                  timing: mllog.RunTiming | None, nodes_held: float,
                  epochs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per COMPLETED trial_end: the trial's result (objective at its last epoch) and
    when it was known, on both node-hour axes; ``best_so_far`` over the results in time order.

    This is the curve every table and plot uses: at any moment the best model a search can
    hand over is the best checkpoint of an ended trial.
    """
    rows = []
    for r in records:
        if r.get("event") != "trial_end" or r.get("status") != "COMPLETED":
            continue
        try:
            value = float((r.get("metrics") or {}).get(objective))
        except (TypeError, ValueError):
            value = math.nan
        rows.append({"trial_id": str(r.get("trial_id")), "time": float(r.get("time", math.nan)),
                     "epochs": r.get("epochs"), "objective": value})
    cols = ["trial_id", "time", "epochs", "objective"]
    df = pd.DataFrame(rows, columns=cols).astype({"time": float, "objective": float})
    df = df.sort_values("time", kind="stable").reset_index(drop=True)
    df["best_so_far"] = df["objective"].where(np.isfinite(df["objective"])).cummin()
    _add_allocation(df, run_start, timing, nodes_held)
    if epochs is not None and len(epochs):
        times = epochs["time"].to_numpy(dtype=float)
        cum = epochs["cum_trial_node_hours"].to_numpy(dtype=float)
        idx = np.searchsorted(times, df["time"].to_numpy(dtype=float), side="right") - 1
        df["cum_trial_node_hours"] = np.where(idx >= 0, cum[np.clip(idx, 0, None)], 0.0)
    else:
        df["cum_trial_node_hours"] = 0.0
    return df


def _stopped_by(events: list) -> str:
    """The ``stopped_by`` of the log's last run_stop ('unknown' if it has none)."""
    stops = [e for e in events if e.key == mllog.RUN_STOP]
    if not stops:
        return "unknown"
    meta = stops[-1].metadata or {}
    return str(meta.get("stopped_by") or meta.get("status") or "unknown")


def read_run(path: str | os.PathLike) -> Run | None:
    """Read one run directory; None (with a RunWarning naming the file) if it is unusable."""
    path = os.fspath(path)
    messages: list[str] = []
    params_path = os.path.join(path, PARAMS_FILE)
    trials_path = os.path.join(path, TRIALS_FILE)
    if not os.path.isdir(path):
        _warn(messages, f"{path}: not a directory; run skipped")
        return None
    if not os.path.exists(params_path):
        _warn(messages, f"{params_path}: missing; run skipped")
        return None
    try:
        params = read_params(params_path)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        _warn(messages, f"{params_path}: unreadable ({exc}); run skipped")
        return None
    tuner = _get(params, "search.tuner")
    if not tuner:
        _warn(messages, f"{params_path}: search.tuner missing; run skipped")
        return None
    if str(_get(params, "search.direction", "min")) != "min":
        _warn(messages, f"{params_path}: search.direction is "
                        f"{_get(params, 'search.direction')!r}; reports compare minimised "
                        "objectives only; run skipped")
        return None
    if not os.path.exists(trials_path):
        _warn(messages, f"{trials_path}: missing; run skipped")
        return None

    records, caught = _collect(lambda p: list(read_records(p)), trials_path)
    for text in caught:
        _warn(messages, text)
    search_id = str(params.get("search_id") or os.path.basename(os.path.normpath(path)))
    foreign = [r for r in records if str(r.get("search_id")) != search_id]
    if foreign:
        others = sorted({str(r.get("search_id")) for r in foreign})
        _warn(messages, f"{trials_path}: {len(foreign)} record(s) of other search_id "
                        f"{', '.join(others)} (expected {search_id}) skipped")
        records = [r for r in records if str(r.get("search_id")) == search_id]

    workers = int(_get(params, "launch.workers", 1) or 1)
    rpw = int(_get(params, "launch.ranks_per_worker", 1) or 1)
    rpn = int(_get(params, "launch.ranks_per_node", 1) or 1)
    nodes = _get(params, "launch.nodes")
    nodes = float(nodes) if nodes else float(math.ceil(workers * rpw / rpn))
    budget = _get(params, "search.node_hour_budget")
    budget = float(budget) if budget else math.nan
    objective = str(_get(params, "search.objective", "val_loss") or "val_loss")

    timing, stopped_by = None, "unknown"
    log_path = mllog.find_mllog(path)
    if log_path is None:
        _warn(messages, f"{os.path.join(path, mllog.MLLOG_FILES[0])}: missing; run wall time "
                        "and allocated node-hours taken from trials.jsonl times x launch.nodes")
    else:
        try:
            events, caught = _collect(mllog.read_mllog, log_path)
            stopped_by = _stopped_by(events)
            timing, more = _collect(lambda ev: mllog.run_timing(ev, log_path, nodes), events)
            for text in caught + more:
                _warn(messages, text)
        except (OSError, mllog.MLLogError) as exc:
            _warn(messages, f"{log_path}: {exc}; run wall time taken from trials.jsonl")
            timing = None
    times = [float(r["time"]) for r in records if "time" in r]
    starts = [float(r.get("start_time", r["time"])) for r in records
              if r.get("event") == "trial_start" and "time" in r]
    if timing is not None:
        run_start, wall = timing.start_s, timing.wall_seconds
        allocated, source = timing.allocated_node_hours, "mllog"
        log_nh = sum(timing.trial_node_hours.values()) if timing.trial_node_hours else math.nan
        if timing.nodes and timing.nodes != nodes and _get(params, "launch.nodes"):
            _warn(messages, f"{log_path}: number_of_nodes {timing.nodes:g} differs from "
                            f"launch.nodes {nodes:g} in {params_path}; the log is used")
        nodes = timing.nodes
    else:
        run_start = min(starts or times or [0.0])
        wall = (max(times) - run_start) if times else 0.0
        allocated, source, log_nh = wall * nodes / 3600.0, "trials.jsonl (no mllog)", math.nan

    epochs = _epoch_frame(records, objective, run_start, timing, nodes)
    return Run(path=path, experiment=str(params.get("experiment") or "unnamed"),
               search_id=search_id, tuner=str(tuner), seed=_get(params, "search.seed"),
               workers=workers, nodes=nodes, ranks_per_worker=rpw, ranks_per_node=rpn,
               budget_node_hours=budget, objective=objective,
               simulated=bool(params.get("simulated", False)), params=params,
               epochs=epochs, trials=_trial_frame(records), wall_seconds=float(wall),
               allocated_node_hours=float(allocated), timing_source=source,
               run_start=float(run_start), mllog_trial_node_hours=float(log_nh),
               results=_result_frame(records, objective, run_start, timing, nodes, epochs),
               stopped_by=stopped_by, warnings=messages)


def find_run_dirs(roots: Iterable[str | os.PathLike]) -> list[str]:
    """Each root that holds params.yaml or trials.jsonl, else its subdirectories that do."""
    found = []
    for root in roots:
        root = os.fspath(root)
        if any(os.path.exists(os.path.join(root, n)) for n in (PARAMS_FILE, TRIALS_FILE)):
            found.append(root)
            continue
        if not os.path.isdir(root):
            found.append(root)  # read_run reports it
            continue
        subs = sorted(os.path.join(root, d) for d in os.listdir(root)
                      if os.path.isdir(os.path.join(root, d)))
        runs = [d for d in subs if any(os.path.exists(os.path.join(d, n))
                                       for n in (PARAMS_FILE, TRIALS_FILE))]
        found.extend(runs if runs else [root])
    return found


def read_runs(roots: Sequence[str | os.PathLike]) -> tuple[list[Run], list[str]]:
    """Read every run under ``roots``; returns (runs, warning messages). Duplicates are dropped."""
    runs: list[Run] = []
    messages: list[str] = []
    seen: dict[str, str] = {}
    for directory in find_run_dirs(roots):
        run, caught = _collect(read_run, directory)
        messages.extend(caught)
        for text in caught:
            warnings.warn(text, RunWarning, stacklevel=2)
        if run is None:
            continue
        if run.search_id in seen:
            text = (f"{os.path.join(run.path, PARAMS_FILE)}: search_id {run.search_id} already "
                    f"read from {seen[run.search_id]}; duplicate skipped")
            messages.append(text)
            warnings.warn(text, RunWarning, stacklevel=2)
            continue
        seen[run.search_id] = run.path
        runs.append(run)
    return runs, messages


def select_experiment(runs: list[Run], experiment: str | None = None
                      ) -> tuple[str | None, list[Run], list[str]]:
    """Keep one experiment: ``experiment`` if given, else the one with most runs (ties: name).

    Returns (experiment, kept runs, warning messages naming each left-out run's params.yaml).
    """
    if not runs:
        return experiment, [], []
    counts: dict[str, int] = {}
    for r in runs:
        counts[r.experiment] = counts.get(r.experiment, 0) + 1
    if experiment is None:
        experiment = sorted(counts, key=lambda k: (-counts[k], k))[0]
    kept = [r for r in runs if r.experiment == experiment]
    messages = []
    for r in runs:
        if r.experiment != experiment:
            text = (f"{os.path.join(r.path, PARAMS_FILE)}: experiment {r.experiment!r} differs "
                    f"from the reported experiment {experiment!r}; run left out")
            messages.append(text)
            warnings.warn(text, RunWarning, stacklevel=2)
    if kept and len({r.simulated for r in kept}) > 1:
        text = (f"experiment {experiment!r} mixes simulated and real runs; "
                "their node-hours are not comparable")
        messages.append(text)
        warnings.warn(text, RunWarning, stacklevel=2)
    return experiment, kept, messages
