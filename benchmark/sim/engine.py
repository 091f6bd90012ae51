"""Event-driven simulation of a cluster of workers driven by a real keras-tuner oracle.

Nothing sleeps: the clock jumps from event to event. Events sit in a heap of
``(time, sequence, worker)``; an event is the end of one epoch of the trial a worker runs. On
each event the worker reports that epoch to the oracle (``update_trial(trial_id, {objective:
loss, "node_hours": trial node-hours so far}, step=epoch)``); after the trial's last epoch, or
when ``update_trial`` returns the trial with status STOPPED (early stopping), it calls
``end_trial`` and asks for the next trial (``create_trial(tuner_id)``) at the same instant.
Events at the same instant are handled in the order they were scheduled, so a run is a pure
function of the oracle, the curves and the worker count. A worker answered IDLE
asks again at the time of the next event (whatever worker it belongs to); a worker answered
STOPPED leaves. The simulation ends when every worker has left (the oracle stopped, its
``max_trials`` is used up, the simulator's own ``max_trials`` cap is reached, or the node-hour
budget is spent), or when the wall-clock limit ``budget_seconds`` runs out (events after it are
dropped; trials running then are cut after their last whole epoch and get no end record, as a
job killed at its wall-time limit).

The node-hour budget is charged as in the real searches (:mod:`tuners.budget`): on ALLOCATED
node-hours, every node the search holds (the workers' and, with ``chief_node``, the chief's)
from the start, idle or not; before each new trial the issuer asks whether the budget is spent,
and if so the worker leaves while running trials finish (an overrun of at most one trial per
worker). The run's ``stop_reason`` uses the real searches' words (``tuners.oracles``).

Costs besides epochs: a new trial first spends its configuration's ``setup_seconds`` (model
build, data, tracing) and a continuation its ``restore_seconds`` (rebuild, trace, checkpoint
load), both from the curve source when it has them and times ``setup_time_scale`` (default:
``time_scale``, the factor on epochs)
(``setup_costs=False`` makes them free, to show how much they matter).

Trials follow keras-tuner's reserved hyperparameters: ``tuner/epochs`` is the epoch count to
reach (default: ``max_epochs``), ``tuner/initial_epoch`` where training resumes (default 0)
and ``tuner/trial_id`` the parent whose checkpoint would be loaded. Losses come from a
:class:`benchmark.sim.curves.CurveModel` (any object with ``val_losses`` and ``epoch_seconds`` -
injectable, e.g. a plain function wrapped in :class:`FunctionCurves`), so a continuation sees
the losses its parent would have reached.

Conventions shared with the real search (:mod:`tuners.trial_runner`): the oracle gets
``step = epoch`` with ``epoch`` the number of epochs trained (1-based), the same number the
``epoch`` records carry, and the trial's cumulative node-hours as the metric ``node_hours``
(which the ASHA oracles count against their node-hour budget).

Speed: keras-tuner's base Oracle writes ``trial.json``/``oracle.json`` on every call. Per
oracle INSTANCE, :func:`quiet_oracle` replaces ``_save_trial`` and ``save`` by no-ops and turns
the console display off, so thousands of trials run in seconds and nothing is written outside
the run directory. keras-tuner's ``MetricsTracker.update`` rescans every earlier epoch twice
(best value before and after) to compute a flag that ``Oracle.update_trial`` discards, which
makes a 100-epoch trial cost ~10^4 numpy calls; :func:`fast_metrics` replaces that method on
each trial's own tracker by one that stores the same observation without the scans (the
tracker's state, and so every oracle decision, is unchanged); :func:`fast_oracle` does the same
for the search-space copy and the failure check (``SimCluster(fast=False)`` keeps all of
keras-tuner's own code paths; a test checks both give the same decisions). Records are kept
in memory and written once, atomically, by the caller.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from benchmark.sim.curves import configuration

RUNNING, IDLE, STOPPED = "RUNNING", "IDLE", "STOPPED"
NODE_HOURS = "node_hours"  # cumulative trial cost reported with the objective


class SimulationError(RuntimeError):
    """The simulated search cannot go on (e.g. every worker IDLE with nothing running)."""


#: per-instance persistence hooks replaced by no-ops: keras-tuner's trial file and state file,
#: and the ASHA oracles' journal line and snapshot (tuners.asha)
PERSISTENCE_HOOKS = ("_save_trial", "save", "snapshot", "_append")


def quiet_oracle(oracle) -> Any:
    """Make a keras-tuner oracle keep its state in memory only (per instance) and not print.

    The hooks in :data:`PERSISTENCE_HOOKS` that the oracle has become no-ops on this instance;
    in case a later version writes through another path, the oracle also gets a private
    scratch project directory (removed with the oracle), so nothing lands in the working tree.
    """
    import tempfile

    scratch = tempfile.TemporaryDirectory(prefix="simulated-oracle-")
    oracle._simulation_scratch = scratch  # lives (and is cleaned up) with the oracle
    oracle._set_project_dir(scratch.name, "oracle")
    for hook in PERSISTENCE_HOOKS:
        if hasattr(oracle, hook):
            setattr(oracle, hook, lambda *args, **kwargs: None)
    oracle._display.verbose = 0
    return oracle


def fast_oracle(oracle) -> Any:
    """Per-instance replacements of two keras-tuner book-keeping costs that grow with the search.

    - ``hyperparameters.copy`` (called by every ``create_trial``, IDLE answers included) goes
      through Keras' generic deserialiser (about 1 ms for the reference space); the replacement
      rebuilds each hyperparameter with its own class's ``from_config``, the same objects
      and values.
    - ``_check_consecutive_failures`` rescans the whole end order on every ``end_trial``
      (quadratic in trials); the replacement counts only the trailing failures, which is
      equivalent because the check runs after every end, so an earlier run of failures at the
      limit would already have raised. Only when the oracle's class does not override the
      check (the ASHA oracles already keep a running count, and record rung results there).
    """
    space = oracle.hyperparameters
    space.copy = types.MethodType(_copy_space, space)
    if type(oracle)._check_consecutive_failures is _base_failure_check():  # not overridden
        oracle._check_consecutive_failures = types.MethodType(_check_trailing_failures, oracle)
    return oracle


def _base_failure_check():
    # imported when an oracle exists (keras-tuner imports TensorFlow): importing this module
    # stays light, so the replay's command-line errors come before any heavy import
    from keras_tuner.src.engine.oracle import Oracle

    return Oracle._check_consecutive_failures


def _copy_space(space):
    out = type(space)()
    for hp in space.space:
        twin = type(hp).from_config(hp.get_config())
        out._hps[twin.name].append(twin)
        out._space.append(twin)
    out.values = dict(space.values)
    return out


def _check_trailing_failures(oracle) -> None:
    limit = oracle.max_consecutive_failed_trials
    failures = 0
    for trial_id in reversed(oracle.end_order):
        trial = oracle.trials[trial_id]
        if trial.status != "FAILED":
            return
        failures += 1
        if failures == limit:
            raise RuntimeError("Number of consecutive failures exceeded the limit "
                               f"of {limit}.\n" + (trial.message or ""))


def _store_observation(tracker, name, value, step=0):
    # Same state change as keras-tuner's MetricsTracker.update, without the best-value scans.
    value = float(value)
    if not tracker.exists(name):
        tracker.register(name)
    tracker.metrics[name].update(value, step=step)
    return None


def fast_metrics(trial) -> Any:
    """Give this trial's metrics tracker an O(1) ``update`` (see the module docstring)."""
    trial.metrics.update = types.MethodType(_store_observation, trial.metrics)
    return trial


@dataclasses.dataclass
class FunctionCurves:
    """A curve source from plain functions: ``loss(values, epoch)`` and seconds per epoch."""

    loss: Callable[[Mapping[str, Any], int], float]
    seconds: float | Callable[[Mapping[str, Any]], float] = 1.0

    def val_losses(self, values, initial_epoch: int, epochs: int) -> list[float]:
        return [float(self.loss(configuration(values), e))
                for e in range(initial_epoch + 1, epochs + 1)]

    def epoch_seconds(self, values) -> float:
        s = self.seconds
        return float(s(configuration(values)) if callable(s) else s)


def node_speedup(nodes: float, efficiency: float = 0.9) -> float:
    """Data-parallel speed-up of a worker on ``nodes`` nodes with a per-extra-node efficiency."""
    if nodes <= 1:
        return float(nodes)
    return 1.0 + (nodes - 1.0) * efficiency


@dataclasses.dataclass
class TrialRun:
    """One simulated trial: what the oracle asked and what the worker did."""

    trial_id: str
    worker: int
    values: dict[str, Any]
    parent_id: str | None
    initial_epoch: int
    target_epochs: int
    rung: int | None
    bracket: int | None
    start: float
    epoch_seconds: float
    losses: list[float]
    setup_seconds: float = 0.0     # before the first epoch: build + trace, or the restore
    epochs_done: int = 0           # epochs trained in this trial (not counting the parent's)
    end: float | None = None       # None: cut by the budget
    status: str = "RUNNING"

    @property
    def decision(self) -> tuple[str, str | None, int, int]:
        """(trial_id, parent, initial_epoch, target_epochs): what the oracle decided."""
        return (self.trial_id, self.parent_id, self.initial_epoch, self.target_epochs)


@dataclasses.dataclass
class SimResult:
    """Outcome of a simulated search (times in simulated seconds since its start)."""

    trials: list[TrialRun]
    makespan: float
    busy_seconds: float
    workers: int
    nodes_per_worker: float
    stop_reason: str
    #: (time, best trial result so far) at each improvement; a trial's result is its objective
    #: at its last epoch (as every oracle and report scores it), known when the trial ends
    best_curve: list[tuple[float, float]]
    events: int
    chief_nodes: float = 0.0                # nodes the chief holds of its own

    @property
    def nodes(self) -> float:
        """Every node the search holds: the workers' and the chief's own."""
        return self.workers * self.nodes_per_worker + self.chief_nodes

    @property
    def busy_fraction(self) -> float:
        """Worker time spent on trials (setup and epochs) over worker time held."""
        held = self.makespan * self.workers
        return self.busy_seconds / held if held > 0 else 0.0

    @property
    def allocated_node_hours(self) -> float:
        return self.makespan * self.nodes / 3600.0

    @property
    def best_loss(self) -> float:
        return self.best_curve[-1][1] if self.best_curve else math.inf

    @property
    def epochs(self) -> int:
        return sum(t.epochs_done for t in self.trials)

    def decisions(self) -> list[tuple[str, str | None, int, int]]:
        return [t.decision for t in self.trials]

    def time_to_reach(self, target: float) -> float:
        """Simulated seconds until the best loss first is <= target (inf if never)."""
        for t, best in self.best_curve:
            if best <= target:
                return t
        return math.inf

    def node_hours_to_reach(self, target: float) -> float:
        """Allocated node-hours (all nodes held, busy or idle) until the target is reached."""
        return self.time_to_reach(target) * self.nodes / 3600.0


class SimCluster:
    """``workers`` simulated workers, each holding ``nodes_per_worker`` nodes, on one oracle.

    ``budget_seconds`` caps the simulated wall clock (None: run until the oracle stops);
    ``budget_node_hours`` is the search's budget of allocated node-hours (see the module
    docstring), held on ``workers x nodes_per_worker`` nodes plus one with ``chief_node``;
    ``max_trials`` caps the trials started (the oracle is not asked for more; its own
    ``max_trials`` is left alone because keras-tuner derives the trial-id width from it).
    ``start_offsets`` (seconds, one per worker; default all 0) is when each worker first asks
    for a trial, as workers of a real job that start one after another.
    ``on_record(kind, run, **fields)`` is called for every trial_start / epoch / trial_end with
    the simulated time in ``fields["time"]``; the caller turns them into records.
    """

    def __init__(self, oracle, curves, *, workers: int, max_epochs: int,
                 nodes_per_worker: float = 1.0, ranks_per_worker: int = 1,
                 budget_seconds: float | None = None, objective: str = "val_loss",
                 parallel_efficiency: float = 0.9, time_scale: float = 1.0,
                 on_record: Callable[..., None] | None = None, tuner_prefix: str = "worker",
                 fast: bool = True, max_trials: int | None = None,
                 budget_node_hours: float | None = None, chief_node: bool = False,
                 setup_costs: bool = True, start_offsets: Sequence[float] | None = None,
                 setup_time_scale: float | None = None):
        if not (isinstance(workers, int) and workers >= 1):
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        offsets = [0.0] * workers if start_offsets is None else [float(x) for x in start_offsets]
        if len(offsets) != workers or not all(x >= 0 and math.isfinite(x) for x in offsets):
            raise ValueError(f"start_offsets must be {workers} finite numbers >= 0, got "
                             f"{start_offsets!r}")
        if not (isinstance(max_epochs, int) and max_epochs >= 1):
            raise ValueError(f"max_epochs must be an integer >= 1, got {max_epochs!r}")
        if nodes_per_worker <= 0:
            raise ValueError(f"nodes_per_worker must be > 0, got {nodes_per_worker!r}")
        if budget_seconds is not None and budget_seconds <= 0:
            raise ValueError(f"budget_seconds must be > 0, got {budget_seconds!r}")
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale!r}")
        if setup_time_scale is not None and not setup_time_scale > 0:
            raise ValueError(f"setup_time_scale must be > 0, got {setup_time_scale!r}")
        if budget_node_hours is not None and not budget_node_hours >= 0:
            raise ValueError(f"budget_node_hours must be >= 0, got {budget_node_hours!r}")
        self.oracle = oracle
        self.curves = curves
        self.workers = workers
        self.max_epochs = max_epochs
        self.nodes_per_worker = float(nodes_per_worker)
        self.ranks_per_worker = ranks_per_worker
        self.budget_seconds = budget_seconds
        self.objective = objective
        self.speedup = node_speedup(self.nodes_per_worker, parallel_efficiency)
        self.time_scale = time_scale
        self.setup_time_scale = time_scale if setup_time_scale is None else setup_time_scale
        self.on_record = on_record
        self.tuner_ids = [f"{tuner_prefix}{i}" for i in range(workers)]
        self.fast = fast
        self.max_trials = max_trials
        self.chief_nodes = 1.0 if chief_node else 0.0
        self.setup_costs = setup_costs
        self.start_offsets = offsets
        self.now = 0.0
        from tuners.budget import AllocationBudget

        self.allocation = AllocationBudget(
            budget_node_hours or 0.0, workers * self.nodes_per_worker + self.chief_nodes,
            start=0.0, clock=lambda: self.now)
        if fast:
            fast_oracle(oracle)

    # -- helpers -----------------------------------------------------------------------------

    def _record(self, kind: str, run: TrialRun, **fields) -> None:
        if self.on_record is not None:
            self.on_record(kind, run, **fields)

    def _start(self, worker: int, trial, now: float) -> TrialRun:
        values = dict(trial.hyperparameters.values)
        initial = int(values.get("tuner/initial_epoch", 0) or 0)
        target = int(values.get("tuner/epochs", self.max_epochs) or self.max_epochs)
        if target < initial:
            raise SimulationError(f"trial {trial.trial_id}: tuner/epochs={target} is below "
                                  f"tuner/initial_epoch={initial}")
        parent = values.get("tuner/trial_id")
        parent = None if parent in (None, "") else str(parent)
        rung = values.get("tuner/rung", values.get("tuner/round"))
        bracket = values.get("tuner/bracket")
        seconds = self.curves.epoch_seconds(values) * self.time_scale / self.speedup
        if not (seconds > 0 and math.isfinite(seconds)):
            raise SimulationError(f"trial {trial.trial_id}: epoch time {seconds!r} is not a "
                                  "positive number")
        losses = self.curves.val_losses(values, initial, target) if target > initial else []
        setup = 0.0
        if self.setup_costs and target > initial:
            cost = getattr(self.curves, "restore_seconds" if initial else "setup_seconds", None)
            setup = float(cost(values)) * self.setup_time_scale if cost is not None else 0.0
            if not (setup >= 0 and math.isfinite(setup)):
                raise SimulationError(f"trial {trial.trial_id}: setup time {setup!r} is not a "
                                      "number >= 0")
        run = TrialRun(trial_id=str(trial.trial_id), worker=worker, values=values,
                       parent_id=parent, initial_epoch=initial, target_epochs=target,
                       rung=None if rung is None else int(rung),
                       bracket=None if bracket is None else int(bracket), start=now,
                       epoch_seconds=seconds, losses=losses, setup_seconds=setup)
        self._record("trial_start", run, time=now)
        return run

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> SimResult:
        oracle = self.oracle
        heap: list[tuple[float, int, int]] = []
        seq = 0
        running: dict[int, TrialRun] = {}
        trial_objs: dict[int, Any] = {}
        idle: list[int] = []
        gone: set[int] = set()
        trials: list[TrialRun] = []
        best = math.inf
        best_curve: list[tuple[float, float]] = []
        busy = 0.0
        events = 0
        now = 0.0
        stop_reason = "oracle_stopped"
        budget = self.budget_seconds

        def ask(worker: int, t: float) -> None:
            nonlocal seq, stop_reason
            if self.max_trials is not None and len(trials) >= self.max_trials:
                gone.add(worker)  # our own cap: the oracle is not asked again
                stop_reason = "max_trials"
                return
            self.now = t
            if self.allocation.spent():  # as the real issuer: no new trial once spent
                gone.add(worker)
                stop_reason = "node_hour_budget"
                return
            trial = oracle.create_trial(self.tuner_ids[worker])
            status = trial.status
            if status == RUNNING:
                if self.fast:
                    fast_metrics(trial)
                run = self._start(worker, trial, t)
                trials.append(run)
                running[worker] = run
                trial_objs[worker] = trial
                if run.target_epochs == run.initial_epoch:
                    finish(worker, t)
                    return
                seq += 1
                heapq.heappush(heap, (t + run.setup_seconds + run.epoch_seconds, seq, worker))
            elif status == IDLE:
                idle.append(worker)
            elif status == STOPPED:
                gone.add(worker)
            else:
                raise SimulationError(f"oracle answered unknown status {status!r} to "
                                      f"{self.tuner_ids[worker]}")

        def finish(worker: int, t: float) -> None:
            nonlocal best
            run = running.pop(worker)
            trial = trial_objs.pop(worker)
            run.end = t
            if run.epochs_done and run.losses[run.epochs_done - 1] < best:
                best = run.losses[run.epochs_done - 1]
                best_curve.append((t, best))
            # Nothing to train (tuner/epochs == tuner/initial_epoch) fails, as in the real runner.
            run.status = "COMPLETED" if run.epochs_done else "FAILED"
            trial.status = run.status
            oracle.end_trial(trial)
            score = getattr(oracle.trials[run.trial_id], "score", None)
            self._record("trial_end", run, time=t, score=score)
            ask(worker, t)

        for w in range(self.workers):
            if self.start_offsets[w] > 0:  # a worker that joins later: its join is an event
                seq += 1
                heapq.heappush(heap, (self.start_offsets[w], seq, w))
            else:
                ask(w, 0.0)
        if not heap and idle:
            raise SimulationError("the oracle answered IDLE to every worker at the start")

        while heap:
            t, _, worker = heapq.heappop(heap)
            if budget is not None and t > budget:
                now = budget
                stop_reason = "budget"
                break
            now = t
            if worker not in running:  # a late worker joins: it asks for its first trial
                ask(worker, t)
                if idle:
                    waiting, idle[:] = list(idle), []
                    for w in waiting:
                        ask(w, t)
                continue
            events += 1
            run = running[worker]
            run.epochs_done += 1
            epoch = run.initial_epoch + run.epochs_done
            loss = run.losses[run.epochs_done - 1]
            busy += run.epoch_seconds + (run.setup_seconds if run.epochs_done == 1 else 0.0)
            spent = (t - run.start) * self.nodes_per_worker / 3600.0
            updated = oracle.update_trial(run.trial_id, {self.objective: loss, NODE_HOURS: spent},
                                          step=epoch)
            self._record("epoch", run, time=t, epoch=epoch, loss=loss)
            stop_early = getattr(updated, "status", None) == STOPPED
            if epoch >= run.target_epochs or stop_early:
                finish(worker, t)
            else:
                seq += 1
                heapq.heappush(heap, (t + run.epoch_seconds, seq, worker))
            if idle:
                waiting, idle[:] = list(idle), []
                for w in waiting:
                    ask(w, t)
            if not heap and idle:
                raise SimulationError(
                    f"the oracle answered IDLE to {len(idle)} worker(s) at t={t:.1f}s while no "
                    "trial is running; the search cannot continue")
        else:
            if stop_reason == "oracle_stopped":
                from tuners.oracles import stop_reason as oracle_stop_reason

                stop_reason = oracle_stop_reason(oracle)
        if stop_reason == "budget":
            # Partial epochs (and setups) in flight at the deadline still held their nodes.
            for run in running.values():
                last = run.start + (run.setup_seconds + run.epochs_done * run.epoch_seconds
                                    if run.epochs_done else 0.0)
                busy += max(0.0, now - last)
                run.status = "CUT"
        return SimResult(trials=trials, makespan=now, busy_seconds=busy, workers=self.workers,
                         nodes_per_worker=self.nodes_per_worker, stop_reason=stop_reason,
                         best_curve=best_curve, events=events, chief_nodes=self.chief_nodes)
