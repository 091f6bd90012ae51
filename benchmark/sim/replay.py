"""Replay hyperparameter searches on a simulated cluster and compare the algorithms.

The real oracles (keras-tuner's RandomSearchOracle and HyperbandOracle, our ASHA and ASHA+BO
from :func:`tuners.oracles.make_oracle`) take every decision; workers, epochs and losses are
simulated (:mod:`benchmark.sim.engine`, :mod:`benchmark.sim.curves`). Every (tuner, workers, seed)
gets a run directory ``sim-<tuner>-w<workers>-s<seed>`` that the reports read like a real one:

``params.yaml``   the config tree (``benchmark.config.write_params``) with ``simulated: true``
                  and ``search_id``;
``trials.jsonl``  trial_start / epoch / trial_end records (:mod:`tuners.records`) with
                  ``"simulated": true``; ``time`` is the simulated second since the start plus
                  :data:`SIM_EPOCH` (a fixed unix time, so reruns write identical files);
``mllog.txt``     the MLCommons-style log (:mod:`tuners.mllog`): run_start/run_stop,
                  number_of_nodes, trial_start/trial_stop, epoch_start/epoch_stop, eval_loss;
``simulation.json``  the run's summary (makespan, busy fraction, best-so-far curve, ...).
Files are written whole and atomically at the end of each run.

Budget: as in the real searches (:mod:`tuners.budget`), charged on ALLOCATED node-hours: the
``workers x nodes_per_worker`` nodes (plus the chief's with ``--chief_node``) from the start,
idle or not; no new trial once the budget is spent, running trials finish. It is the only
limit (no trial cap; Hyperband iterates until the allocation is spent), and every run writes
which limit stopped it (``stopped_by`` in the log's ``run_stop``).

Presets, named for the study whose scheduler settings they replay (one definition each, in
:data:`benchmark.experiments.SCHEDULER_SETTINGS`, shared with ``benchmark.run``): ``delphes``
(max 100 epochs, grace 5, eta 3: the ``delphes_paper`` experiment) and ``cms`` (max 100, grace
10, eta 4). Both: the reference study's search on JUWELS Booster, 12 nodes of 4 GPUs, one trial
per node (12 workers, 4 ranks each), one bracket, 10 random warm-up points for ASHA+BO, the
reference search space, a budget of the reference job's 6 h x 12 nodes = 72 node-hours per
search, 20 seeds. The surrogate's epoch takes ``base_epoch_seconds`` (60 s) at the space's
centre on one node.

A recorded table (``--curves``) is replayed as recorded: epoch, setup (build + trace) and
restore seconds per configuration, times ``--time_scale`` (required with a table: the factor
from the recording machine to the target system, whose median epoch time the report states);
``--nosetup_costs`` makes setup and restore free to show how much they matter. A preset whose
``max_epochs`` exceeds the table's recorded epochs is refused (exit 2) unless
``--extrapolate=power_law``; then every search is also replayed with ``max_epochs`` capped at
the recorded length and the report adds a sensitivity table (the tuners' ranking with and
without extrapolation). Per-epoch noise is drawn around the recorded curve, seeded by the seed
and the recorded configuration.

Comparison (printed and written as ``comparison.csv`` / ``comparison.md`` in the output dir).
A trial's result is its loss at its last epoch; a run's best loss is the best such result so
far. First (``intervals.csv``), against a target fixed in advance by the report's rule (the
:data:`reports.tables.TARGET_QUANTILE` quantile of the final losses of every run at that worker
count): per tuner the allocated node-hours to reach it and the final loss, medians over seeds
with bootstrap 95% intervals (:mod:`reports.stats`). Then, per seed, the target is the best loss Random Search reached with its whole budget; per tuner
the median and inter-quartile range over seeds of the allocated node-hours until its best loss
first reaches that target (seeds where it never does count as infinite, and the number of
seeds that reach it is shown), the same as a fraction of Random's budget, the per-seed ratio to
the node-hours Random itself took to find that loss, and the final best loss. The tuners of
one seed share the oracle seed, so their random draws start alike (common random numbers:
ASHA's first configurations are Random's first ones), and the same loss noise;
``--nocommon_draws`` gives every tuner its own oracle seed (seed + 100000 x (1 + tuner index),
kept in ``simulation.json`` as ``oracle_seed``; ``search.seed`` stays the pairing seed). ``per_seed.csv`` holds the per-seed numbers.

    python -m benchmark.sim.replay --tuner=random,hyperband,asha,asha_bo --preset=delphes \
        --seeds=20 --output_dir=runs/sim
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags

from benchmark.config import Config, LaunchConfig, write_params
from benchmark.experiments import SCHEDULER_SETTINGS, SchedulerSettings
from benchmark.sim.curves import EXTRAPOLATIONS, CurveError, Surrogate, configuration, load_curves
from benchmark.sim.engine import SimCluster, SimResult, TrialRun, quiet_oracle
from mlpf_tf.configbase import ConfigError, atomic_write_text
from tuners import mllog
from tuners.config import TUNERS, SearchConfig
from tuners.records import SCHEMA_VERSION, TRIALS_FILE

SIM_EPOCH = 1_600_000_000.0  # unix time of the simulated start of every run
SIM_FILE = "simulation.json"


@dataclasses.dataclass(frozen=True)
class Setup:
    """The simulated search setting (a preset, then flags)."""

    workers: tuple[int, ...] = (12,)
    nodes_per_worker: float = 1.0
    ranks_per_node: int = 4
    max_epochs: int = 100
    min_epochs: int = 5
    reduction_factor: int = 3
    brackets: int = 1
    num_initial_points: int = 10
    budget_node_hours: float = 72.0
    seeds: int = 20
    first_seed: int = 1
    space: str = "reference"
    base_epoch_seconds: float = 60.0
    noise: float = 0.005
    landscape_seed: int = 0
    time_scale: float | None = None   # required with a table; the surrogate's default is 1
    setup_time_scale: float | None = None  # factor on setup/restore seconds (None: time_scale)
    parallel_efficiency: float = 0.9
    common_draws: bool = True
    chief_node: bool = False
    setup_costs: bool = True
    extrapolate: str = ""             # "" refuses epochs beyond a table's recording
    preset: str = "delphes"

    @classmethod
    def from_settings(cls, settings: SchedulerSettings) -> Setup:
        """The reference search (12 nodes x 4 GPUs, 72 node-hours) with a study's settings."""
        return cls(preset=settings.name, **settings.search())

    @property
    def ranks_per_worker(self) -> int:
        return max(1, int(round(self.nodes_per_worker * self.ranks_per_node)))

    def budget_seconds(self, workers: int) -> float:
        """Wall seconds the budget buys on ``workers`` workers (and the chief's node)."""
        nodes = workers * self.nodes_per_worker + (1.0 if self.chief_node else 0.0)
        return self.budget_node_hours * 3600.0 / nodes


PRESETS = {name: Setup.from_settings(s) for name, s in SCHEDULER_SETTINGS.items()}


def search_config(setup: Setup, tuner: str, seed: int) -> SearchConfig:
    """The ``search`` section of one simulated run."""
    cfg = SearchConfig(
        tuner=tuner, max_epochs=setup.max_epochs, min_epochs=setup.min_epochs,
        reduction_factor=setup.reduction_factor, brackets=setup.brackets,
        num_initial_points=setup.num_initial_points,
        # the budget is the only limit, as in a real comparison: no trial cap, Hyperband
        # iterates until the simulated allocation is spent
        max_trials=0, node_hour_budget=setup.budget_node_hours, hyperband_iterations=0,
        seed=seed, space=setup.space)
    cfg.validate()
    return cfg


def make_curves(setup: Setup, space, seed: int, curves_path: str = ""):
    """The learning-curve source of one run: the table at ``curves_path`` or the surrogate."""
    if curves_path:
        return load_curves(curves_path, space=space, noise=setup.noise, noise_seed=seed,
                           extrapolate=setup.extrapolate or None)
    return Surrogate(space, noise_seed=seed, landscape_seed=setup.landscape_seed,
                     noise=setup.noise, base_epoch_seconds=setup.base_epoch_seconds)


class RunLog:
    """Turns the simulator's callbacks into trials.jsonl records and mllog lines, in memory."""

    def __init__(self, search_id: str, nodes_per_worker: float, ranks: int, objective: str):
        self.search_id = search_id
        self.nodes = nodes_per_worker
        self.ranks = ranks
        self.objective = objective
        self.records: list[dict[str, Any]] = []
        self.log: list[mllog.MLLogEvent] = []

    def _record(self, event: str, run: TrialRun, t: float, **fields: Any) -> None:
        record = {"v": SCHEMA_VERSION, "event": event, "search_id": self.search_id,
                  "trial_id": run.trial_id, "time": SIM_EPOCH + t, "worker_id": str(run.worker)}
        record.update(fields)
        record["simulated"] = True
        self.records.append(record)

    def _mllog(self, event_type: str, key: str, t: float, value: Any = None, **meta: Any) -> None:
        self.log.append(mllog.MLLogEvent(key=key, value=value,
                                         time_ms=int(round((SIM_EPOCH + t) * 1000)),
                                         event_type=event_type, metadata=meta))

    def trial_meta(self, run: TrialRun) -> dict[str, Any]:
        return {"trial_id": run.trial_id, "worker_id": str(run.worker), "nodes": self.nodes}

    def __call__(self, kind: str, run: TrialRun, *, time: float, **fields: Any) -> None:
        hps = configuration(run.values)
        if kind == "trial_start":
            self._record("trial_start", run, time, parent_id=run.parent_id, hyperparameters=hps,
                         rung=run.rung, initial_epoch=run.initial_epoch,
                         target_epochs=run.target_epochs, nodes=self.nodes, ranks=self.ranks,
                         bracket=run.bracket, start_time=SIM_EPOCH + time)
            self._mllog(mllog.INTERVAL_START, mllog.TRIAL_START, time, **self.trial_meta(run))
        elif kind == "epoch":
            epoch, loss = fields["epoch"], fields["loss"]
            self._mllog(mllog.INTERVAL_START, mllog.EPOCH_START, time - run.epoch_seconds,
                        **self.trial_meta(run), epoch_num=epoch)
            self._record("epoch", run, time, epoch=epoch, metrics={self.objective: loss},
                         wall_seconds=run.epoch_seconds, nodes=self.nodes, ranks=self.ranks,
                         node_hours=run.epoch_seconds * self.nodes / 3600.0)
            self._mllog(mllog.INTERVAL_END, mllog.EPOCH_STOP, time, **self.trial_meta(run),
                        epoch_num=epoch)
            self._mllog(mllog.POINT_IN_TIME, mllog.EVAL_LOSS, time, loss,
                        trial_id=run.trial_id, epoch_num=epoch)
        elif kind == "trial_end":
            wall = time - run.start
            last = {self.objective: run.losses[run.epochs_done - 1]} if run.epochs_done else {}
            self._record("trial_end", run, time, status=run.status, parent_id=run.parent_id,
                         setup_seconds=run.setup_seconds,
                         hyperparameters=hps, rung=run.rung, initial_epoch=run.initial_epoch,
                         epochs=run.initial_epoch + run.epochs_done, metrics=last,
                         objective=self.objective, start_time=SIM_EPOCH + run.start,
                         wall_seconds=wall, nodes=self.nodes, ranks=self.ranks,
                         node_hours=wall * self.nodes / 3600.0,
                         error=None if run.status == "COMPLETED" else "nothing to train",
                         target_epochs=run.target_epochs, score=fields.get("score"),
                         stopped_early=run.initial_epoch + run.epochs_done < run.target_epochs)
            self._mllog(mllog.INTERVAL_END, mllog.TRIAL_STOP, time, **self.trial_meta(run),
                        status=run.status)

    def write(self, run_dir: str, result: SimResult, *, workers: int, nodes: float,
              accelerators_per_node: int, seed: int) -> None:
        head = [
            mllog.MLLogEvent(mllog.RUN_START, None, int(SIM_EPOCH * 1000), mllog.INTERVAL_START,
                             metadata={"search_id": self.search_id, "simulated": True}),
            mllog.MLLogEvent(mllog.NUMBER_OF_NODES, nodes, int(SIM_EPOCH * 1000)),
            mllog.MLLogEvent(mllog.ACCELERATORS_PER_NODE, accelerators_per_node,
                             int(SIM_EPOCH * 1000)),
            mllog.MLLogEvent(mllog.NUMBER_OF_WORKERS, workers, int(SIM_EPOCH * 1000)),
            mllog.MLLogEvent(mllog.SEED, seed, int(SIM_EPOCH * 1000)),
        ]
        stop_ms = int(round((SIM_EPOCH + result.makespan) * 1000))
        tail = [mllog.MLLogEvent(mllog.RUN_STOP, None, stop_ms, mllog.INTERVAL_END,
                                 metadata={"status": "success",
                                           "stopped_by": result.stop_reason})]
        events = sorted(self.log, key=lambda e: e.time_ms)  # stable: same-time order kept
        lines = "".join(e.to_line() + "\n" for e in head + events + tail)
        atomic_write_text(os.path.join(run_dir, "mllog.txt"), lines)
        text = "".join(json.dumps(r, default=_json_default) + "\n" for r in self.records)
        atomic_write_text(os.path.join(run_dir, TRIALS_FILE), text)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"cannot record a value of type {type(obj).__name__}")


@dataclasses.dataclass
class RunSummary:
    """What the comparison needs from one simulated run."""

    tuner: str
    workers: int
    seed: int
    result: SimResult
    wall_seconds: float
    run_dir: str | None
    oracle_seed: int | None = None

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {"tuner": self.tuner, "workers": self.workers, "seed": self.seed,
                "simulated": True, "makespan_seconds": r.makespan,
                "allocated_node_hours": r.allocated_node_hours,
                "busy_fraction": r.busy_fraction, "stop_reason": r.stop_reason,
                "trials": len(r.trials), "epochs": r.epochs, "best_loss": r.best_loss,
                "best_curve": [[t, loss] for t, loss in r.best_curve],
                "oracle_seed": self.oracle_seed,
                "simulator_wall_seconds": self.wall_seconds}


def simulate_run(setup: Setup, tuner: str, workers: int, seed: int, *, curves_path: str = "",
                 output_dir: str | None = None, experiment: str | None = None) -> RunSummary:
    """Simulate one search; write its run directory under ``output_dir`` when given."""
    from tuners.oracles import make_oracle
    from tuners.space import build_space

    experiment = experiment or f"sim_{setup.preset}"
    search_cfg = search_config(setup, tuner, seed)
    space = build_space(setup.space)
    oracle_seed = seed if setup.common_draws else seed + 100_000 * (1 + TUNERS.index(tuner))
    oracle = quiet_oracle(make_oracle(search_cfg, space, seed=oracle_seed))
    curves = make_curves(setup, build_space(setup.space), seed, curves_path)
    name = f"sim-{tuner}-w{workers}-s{seed}"
    search_id = f"{experiment}-{name}"
    log = RunLog(search_id, setup.nodes_per_worker, setup.ranks_per_worker, search_cfg.objective)
    cluster = SimCluster(oracle, curves, workers=workers, max_epochs=setup.max_epochs,
                         nodes_per_worker=setup.nodes_per_worker,
                         ranks_per_worker=setup.ranks_per_worker,
                         budget_node_hours=setup.budget_node_hours,
                         chief_node=setup.chief_node, setup_costs=setup.setup_costs,
                         objective=search_cfg.objective,
                         parallel_efficiency=setup.parallel_efficiency,
                         time_scale=setup.time_scale or 1.0,
                         setup_time_scale=setup.setup_time_scale,
                         on_record=log if output_dir else None)
    t0 = time.perf_counter()
    result = cluster.run()
    wall = time.perf_counter() - t0
    run_dir = None
    summary = RunSummary(tuner, workers, seed, result, wall, None, oracle_seed)
    if output_dir:
        run_dir = os.path.join(output_dir, name)
        os.makedirs(run_dir, exist_ok=True)
        launch = LaunchConfig(workers=workers, ranks_per_worker=setup.ranks_per_worker,
                              ranks_per_node=setup.ranks_per_node,
                              accelerators_per_node=setup.ranks_per_node, threads_per_rank=0,
                              output_dir=output_dir, run_name=name, system="simulated",
                              chief_node=setup.chief_node)
        config = paper_tree(experiment).override(
            {"search": search_cfg.to_dict(), "launch": launch.to_dict()}).validate()
        write_params(config, run_dir, search_id=search_id, simulated=True)
        log.write(run_dir, result, workers=workers, nodes=result.nodes,
                  accelerators_per_node=setup.ranks_per_node, seed=seed)
        summary.run_dir = run_dir
        atomic_write_text(os.path.join(run_dir, SIM_FILE),
                          json.dumps(summary.to_json(), indent=1) + "\n")
    return summary


def paper_tree(experiment: str) -> Config:
    """The reference study's data/model/train sections (registry ``delphes_paper``) that a
    simulated run stands for; search and launch are set per run."""
    from benchmark import experiments

    base = Config(experiment=experiment)
    return base.override({k: v for k, v in experiments.get("delphes_paper").overrides.items()
                          if k in ("data", "model", "train")})


def run_decisions(run_dir: str) -> list[tuple[str, str | None, int, int]]:
    """(trial_id, parent, initial_epoch, target_epochs) of a run's trials, in start order."""
    from tuners.records import read_records

    return [(r["trial_id"], r.get("parent_id") or None, int(r.get("initial_epoch") or 0),
             int(r["target_epochs"]))
            for r in read_records(os.path.join(run_dir, TRIALS_FILE))
            if r["event"] == "trial_start"]


def replay_run(run_dir: str, workers: int = 1, max_trials: int | None = None) -> SimResult:
    """Re-run a finished search's oracle (from its params.yaml) on the losses it recorded.

    ``max_trials`` (default: the run's completed trials) stops the replay where the run's
    curves end (a run cut by its budget has no losses beyond its last epochs). With one
    worker the decisions must equal :func:`run_decisions` of the run, trial by trial.
    """
    from benchmark.config import load_params
    from benchmark.sim.curves import RunCurves
    from tuners.oracles import make_oracle
    from tuners.space import build_space

    config, _ = load_params(run_dir)
    search = config.search
    oracle = quiet_oracle(make_oracle(search, build_space(search.space)))
    curves = RunCurves(run_dir, objective=search.objective)
    if max_trials is None:
        max_trials = curves.completed_trials
    # As benchmark.run: a trial without tuner/epochs trains search.max_epochs epochs.
    return SimCluster(oracle, curves, workers=workers, max_epochs=search.max_epochs,
                      objective=search.objective, max_trials=max_trials).run()


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------


def per_seed_table(runs: Sequence[RunSummary], budget_node_hours: float):
    """One row per run: best loss, Random's target for its seed, node-hours to reach it."""
    import pandas as pd

    from reports.stats import quantile
    from reports.tables import TARGET_QUANTILE

    target = {(r.workers, r.seed): r.result.best_loss for r in runs if r.tuner == "random"}
    pooled = {w: quantile([r.result.best_loss for r in runs if r.workers == w], TARGET_QUANTILE)
              for w in {r.workers for r in runs}}
    rows = []
    for r in runs:
        goal = target.get((r.workers, r.seed), math.nan)
        nh = r.result.node_hours_to_reach(goal) if math.isfinite(goal) else math.nan
        fixed = pooled[r.workers]
        rows.append({"tuner": r.tuner, "workers": r.workers, "seed": r.seed,
                     "best_loss": r.result.best_loss, "random_best_loss": goal,
                     "node_hours_to_random_best": nh, "pooled_target": fixed,
                     "node_hours_to_pooled_target": (r.result.node_hours_to_reach(fixed)
                                                     if math.isfinite(fixed) else math.nan),
                     "fraction_of_random_budget": nh / budget_node_hours,
                     "allocated_node_hours": r.result.allocated_node_hours,
                     "trials": len(r.result.trials), "epochs": r.result.epochs,
                     "busy_fraction": r.result.busy_fraction,
                     "simulator_wall_seconds": r.wall_seconds})
    return pd.DataFrame(rows)


def _quantiles(values) -> tuple[float, float, float]:
    arr = np.asarray(values, dtype=float)
    if arr.size == 0 or np.all(np.isnan(arr)):
        return math.nan, math.nan, math.nan
    arr = arr[~np.isnan(arr)]
    # inf (never reached) sorts last; the quantiles are order statistics, so inf is honoured.
    q25, q50, q75 = np.quantile(arr, [0.25, 0.5, 0.75], method="inverted_cdf")
    return float(q50), float(q25), float(q75)


def comparison_table(per_seed):
    """Per (workers, tuner): medians and IQRs over seeds (see the module docstring)."""
    import pandas as pd

    rows = []
    order = {t: i for i, t in enumerate(TUNERS)}
    random_nh = {(w, s): nh for w, s, t, nh in zip(per_seed.workers, per_seed.seed,
                                                   per_seed.tuner,
                                                   per_seed.node_hours_to_random_best)
                 if t == "random"}
    for (workers, tuner), group in sorted(per_seed.groupby(["workers", "tuner"]),
                                          key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))):
        nh = _quantiles(group["node_hours_to_random_best"])
        frac = _quantiles(group["fraction_of_random_budget"])
        loss = _quantiles(group["best_loss"])
        reached = int(np.isfinite(group["node_hours_to_random_best"]).sum())
        ratio = _quantiles([nh_t / random_nh.get((w, s), math.nan)
                            for w, s, nh_t in zip(group.workers, group.seed,
                                                  group.node_hours_to_random_best)])
        rows.append({"workers": workers, "tuner": tuner, "seeds": len(group),
                     "reached": reached,
                     "nh_to_random_best_median": nh[0], "nh_q25": nh[1], "nh_q75": nh[2],
                     "fraction_of_random_budget_median": frac[0],
                     "ratio_to_random_median": ratio[0], "ratio_q25": ratio[1],
                     "ratio_q75": ratio[2],
                     "best_loss_median": loss[0], "best_loss_q25": loss[1],
                     "best_loss_q75": loss[2],
                     "trials_median": float(group["trials"].median()),
                     "busy_fraction_median": float(group["busy_fraction"].median())})
    return pd.DataFrame(rows)


def interval_table(per_seed):
    """Per (workers, tuner) against a target fixed in advance (the pooled-quantile rule of
    :mod:`reports.tables`: a quantile of the final losses of every run at that scale): the
    allocated node-hours to reach it and the final loss, medians with bootstrap 95% intervals
    over seeds (:func:`reports.stats.bootstrap_median`); never reaching it counts as inf."""
    import pandas as pd

    from reports.stats import bootstrap_median

    rows = []
    order = {t: i for i, t in enumerate(TUNERS)}
    for (workers, tuner), group in sorted(per_seed.groupby(["workers", "tuner"]),
                                          key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))):
        nh = bootstrap_median(group["node_hours_to_pooled_target"])
        loss = bootstrap_median(group["best_loss"])
        rows.append({"workers": workers, "tuner": tuner, "seeds": len(group),
                     "target": float(group["pooled_target"].iloc[0]),
                     "reached": int(np.isfinite(group["node_hours_to_pooled_target"]).sum()),
                     "nh_to_target": nh[0], "nh_low": nh[1], "nh_high": nh[2],
                     "final_loss": loss[0], "loss_low": loss[1], "loss_high": loss[2]})
    return pd.DataFrame(rows)


def interval_markdown(table) -> str:
    from reports.tables import TARGET_QUANTILE

    head = (f"Target fixed in advance: the {TARGET_QUANTILE:g} quantile of the final losses of "
            "every run at that worker count (all tuners, all seeds). Medians over seeds with "
            "bootstrap 95% intervals.\n\n"
            "| workers | tuner | target | allocated node-hours to target [95% CI] | reached | "
            "final loss [95% CI] |\n|---|---|---|---|---|---|\n")
    lines = [f"| {r.workers} | {r.tuner} | {r.target:.4f} | {_fmt(r.nh_to_target, 2)} "
             f"[{_fmt(r.nh_low, 2)}, {_fmt(r.nh_high, 2)}] | {r.reached}/{r.seeds} | "
             f"{r.final_loss:.4f} [{r.loss_low:.4f}, {r.loss_high:.4f}] |"
             for r in table.itertuples()]
    return head + "\n".join(lines) + "\n"


def markdown_table(table, budget_node_hours: float) -> str:
    """The comparison as a Markdown table."""
    head = ("| workers | tuner | node-hours to Random's best: median [IQR] | of Random's "
            f"{budget_node_hours:g} nh | per seed / Random's own: median [IQR] | reached | "
            "best loss: median [IQR] | trials | busy |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for _, r in table.iterrows():
        lines.append(
            f"| {r.workers} | {r.tuner} | {_fmt(r.nh_to_random_best_median)} "
            f"[{_fmt(r.nh_q25)}, {_fmt(r.nh_q75)}] | "
            f"{_fmt(r.fraction_of_random_budget_median, 3)} | "
            f"{_fmt(r.ratio_to_random_median, 2)} [{_fmt(r.ratio_q25, 2)}, "
            f"{_fmt(r.ratio_q75, 2)}] | {r.reached}/{r.seeds} | "
            f"{r.best_loss_median:.4f} [{r.best_loss_q25:.4f}, {r.best_loss_q75:.4f}] | "
            f"{r.trials_median:g} | {r.busy_fraction_median:.3f} |")
    return head + "\n".join(lines) + "\n"


def _fmt(x: float, digits: int = 1) -> str:
    if math.isinf(x):
        return "never"
    if math.isnan(x):
        return "n/a"
    return f"{x:.{digits}f}"


def sensitivity_table(extrapolated, capped):
    """Per (workers, tuner): the tuners' ranks with extrapolated epochs and with epochs capped
    at the recorded length (1 = best; by median final best loss, and by median node-hours to
    Random's best), from the two comparison tables."""
    import pandas as pd

    def ranks(table):
        out = {}
        for workers, group in table.groupby("workers"):
            by_loss = group["best_loss_median"].rank(method="min")
            by_nh = group["nh_to_random_best_median"].rank(method="min", na_option="bottom")
            for i, tuner in enumerate(group["tuner"]):
                out[(workers, tuner)] = (int(by_loss.iloc[i]), int(by_nh.iloc[i]),
                                         float(group["best_loss_median"].iloc[i]))
        return out

    a, b = ranks(extrapolated), ranks(capped)
    rows = []
    for key in a:
        if key not in b:
            continue
        rows.append({"workers": key[0], "tuner": key[1],
                     "rank_loss_extrapolated": a[key][0], "rank_loss_capped": b[key][0],
                     "rank_nh_extrapolated": a[key][1], "rank_nh_capped": b[key][1],
                     "best_loss_extrapolated": a[key][2], "best_loss_capped": b[key][2]})
    return pd.DataFrame(rows)


def sensitivity_markdown(table, max_epochs: int, recorded: int, method: str) -> str:
    """The sensitivity table as Markdown, with a line saying whether the ranking changed."""
    head = (f"## Sensitivity to extrapolation\n\nmax_epochs {max_epochs} with epochs "
            f"{recorded + 1}..{max_epochs} extrapolated ({method}) vs max_epochs capped at the "
            f"{recorded} recorded epochs. Ranks: 1 = best.\n\n"
            "| workers | tuner | rank by loss: extrapolated | capped | rank by node-hours to "
            "Random's best: extrapolated | capped | best loss: extrapolated | capped |\n"
            "|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r.workers} | {r.tuner} | {r.rank_loss_extrapolated} | {r.rank_loss_capped} | "
             f"{r.rank_nh_extrapolated} | {r.rank_nh_capped} | {r.best_loss_extrapolated:.4f} "
             f"| {r.best_loss_capped:.4f} |" for r in table.itertuples()]
    same = bool(len(table)) and all(
        (table.rank_loss_extrapolated == table.rank_loss_capped)
        & (table.rank_nh_extrapolated == table.rank_nh_capped))
    verdict = ("The ranking is the same with and without extrapolation." if same else
               "The ranking CHANGES with extrapolation: read the extrapolated table with care.")
    return head + "\n".join(lines) + "\n\n" + verdict + "\n"


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

FLAGS = flags.FLAGS


def define_flags() -> None:
    if "tuner" in FLAGS:
        return
    flags.DEFINE_list("tuner", list(TUNERS), f"tuners to simulate ({', '.join(TUNERS)})")
    flags.DEFINE_list("workers", None, "worker counts (default: the preset's)")
    flags.DEFINE_integer("seeds", None, "number of seeds, first_seed .. first_seed+seeds-1")
    flags.DEFINE_integer("first_seed", None, "first seed (>= 1)")
    flags.DEFINE_string("curves", "", "learning-curve table (CSV or CSV.gz, see "
                        "benchmark.sim.curves); empty = the parametric surrogate")
    flags.DEFINE_enum("preset", "delphes", list(PRESETS), "scheduler settings replayed: "
                      + "; ".join(f"{s.name}: {s.description}"
                                  for s in SCHEDULER_SETTINGS.values()))
    flags.DEFINE_string("output_dir", "runs/simulated", "parent of the run directories")
    flags.DEFINE_float("budget_node_hours", None, "allocated node-hours per search")
    flags.DEFINE_float("nodes_per_worker", None, "nodes held by one worker")
    flags.DEFINE_integer("max_epochs", None, "epochs of a fully trained trial")
    flags.DEFINE_integer("min_epochs", None, "ASHA grace period (bottom rung epochs)")
    flags.DEFINE_integer("reduction_factor", None, "eta of ASHA and Hyperband")
    flags.DEFINE_integer("num_initial_points", None, "ASHA+BO random warm-up points")
    flags.DEFINE_string("space", None, "search space (reference | reduced; default: the "
                        "preset's, or the one a --curves table was recorded on)")
    flags.DEFINE_float("base_epoch_seconds", None, "surrogate: seconds per epoch on one node")
    flags.DEFINE_float("noise", None, "relative noise of the per-epoch losses")
    flags.DEFINE_integer("landscape_seed", None, "surrogate: seed of the loss landscape")
    flags.DEFINE_float("time_scale", None, "factor on every epoch, setup and restore time "
                       "(table -> target system); required with --curves")
    flags.DEFINE_float("setup_time_scale", None, "factor on a table's setup and restore seconds "
                       "alone (default: --time_scale); a table recorded on a small sample has "
                       "setups worth many of its epochs, which the target system need not")
    flags.DEFINE_boolean("common_draws", None, "tuners of one seed share the oracle seed "
                         "(common random numbers; default: the preset's, true)")
    flags.DEFINE_boolean("chief_node", None, "the chief holds a node of its own (charged)")
    flags.DEFINE_boolean("setup_costs", None, "charge the table's setup and restore seconds "
                         "(--nosetup_costs: free, to show how much they matter)")
    flags.DEFINE_string("extrapolate", None, "how to make up epochs beyond the table's "
                        f"recording ({', '.join(EXTRAPOLATIONS)}); default: refuse")
    flags.DEFINE_boolean("write_runs", True, "write run directories (off: only the comparison)")
    flags.DEFINE_boolean("tables_only", False, "rebuild the comparison from "
                         "<output_dir>/per_seed.csv without simulating")


_SETUP_FLAGS = ("budget_node_hours", "nodes_per_worker", "max_epochs", "min_epochs",
                "reduction_factor", "num_initial_points", "space", "base_epoch_seconds",
                "noise", "landscape_seed", "time_scale", "setup_time_scale", "seeds", "first_seed", "common_draws",
                "chief_node", "setup_costs", "extrapolate")


def setup_from_flags() -> Setup:
    """The preset with the flags given on top; errors name the flag."""
    setup = PRESETS[FLAGS.preset]
    changes: dict[str, Any] = {n: FLAGS[n].value for n in _SETUP_FLAGS
                               if FLAGS[n].value is not None}
    if FLAGS.workers:
        try:
            changes["workers"] = tuple(int(w) for w in FLAGS.workers)
        except ValueError:
            raise ConfigError(f"--workers={','.join(FLAGS.workers)}: expected integers") from None
        if any(w < 1 for w in changes["workers"]):
            raise ConfigError(f"--workers={','.join(FLAGS.workers)}: must be >= 1")
    if FLAGS.curves and FLAGS.space is None and os.path.isfile(FLAGS.curves):
        # a table recorded by benchmark.sim.record names its space: replay that one
        from benchmark.sim.curves import read_table_text

        recorded_space = read_table_text(FLAGS.curves)[0].get("space")
        if recorded_space:
            changes["space"] = recorded_space
    setup = dataclasses.replace(setup, **changes)
    validate_setup(setup, FLAGS.curves)
    unknown = [t for t in FLAGS.tuner if t not in TUNERS]
    if unknown:
        raise ConfigError(f"--tuner={','.join(FLAGS.tuner)}: unknown {', '.join(unknown)}; "
                          f"known: {', '.join(TUNERS)}")
    return setup


def validate_setup(setup: Setup, curves_path: str = ""):
    """Check a setting before any simulation; returns the table (None: the surrogate).

    With a table: ``time_scale`` is required, and a ``max_epochs`` beyond the recorded epochs
    is refused unless ``extrapolate`` names a method. Errors are one line naming the flag.
    """
    for name in ("budget_node_hours", "nodes_per_worker", "base_epoch_seconds"):
        value = getattr(setup, name)
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"--{name}={value!r}: must be a positive number")
    for name in ("time_scale", "setup_time_scale"):
        value = getattr(setup, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"--{name}={value!r}: must be a positive number")
    if setup.seeds < 1 or setup.first_seed < 1:
        raise ConfigError(f"--seeds={setup.seeds} / --first_seed={setup.first_seed}: "
                          "must be >= 1")
    if setup.noise < 0:
        raise ConfigError(f"--noise={setup.noise!r}: must be >= 0")
    if setup.extrapolate and setup.extrapolate not in EXTRAPOLATIONS:
        raise ConfigError(f"--extrapolate={setup.extrapolate}: unknown method; known: "
                          f"{', '.join(EXTRAPOLATIONS)}")
    if not curves_path:
        return None
    if not os.path.isfile(curves_path):
        raise ConfigError(f"--curves={curves_path}: no such file")
    table = load_curves(curves_path)
    if setup.time_scale is None:
        raise ConfigError(
            f"--curves={curves_path}: --time_scale is required with a table (the factor from "
            f"its median epoch of {table.median_epoch_seconds():.3g} s on the recording "
            "machine to the target system's epoch time)")
    recorded = table.recorded_epochs
    if setup.max_epochs > recorded and not setup.extrapolate:
        raise ConfigError(
            f"--curves={curves_path}: recorded for {recorded} epochs, but preset "
            f"{setup.preset!r} trains up to max_epochs={setup.max_epochs}; give "
            f"--extrapolate={EXTRAPOLATIONS[0]} (the report then ranks the tuners with and "
            f"without it) or --max_epochs<={recorded}")
    return table


def capped_setup(setup: Setup, recorded: int) -> Setup:
    """The same setting with training capped at the recorded epochs (no extrapolation)."""
    return dataclasses.replace(setup, max_epochs=recorded,
                               min_epochs=min(setup.min_epochs, recorded), extrapolate="")


def simulate_all(setup: Setup, tuners: Sequence[str], curves_path: str,
                 output_dir: str | None, log=print) -> list[RunSummary]:
    """Every (workers, tuner, seed) of a setting; one progress line per (workers, tuner)."""
    runs: list[RunSummary] = []
    seeds = range(setup.first_seed, setup.first_seed + setup.seeds)
    for workers in setup.workers:
        for tuner in tuners:
            t0, c0 = time.perf_counter(), time.process_time()
            trials = epochs = 0
            engine = 0.0
            for seed in seeds:
                summary = simulate_run(setup, tuner, workers, seed, curves_path=curves_path,
                                       output_dir=output_dir)
                runs.append(summary)
                trials += len(summary.result.trials)
                epochs += summary.result.epochs
                engine += summary.wall_seconds
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            log(f"  {tuner:9s} w={workers:<4d} {len(seeds)} seeds: {trials} trials, {epochs} "
                f"epochs in {wall:.1f} s wall, {cpu:.1f} s CPU ({trials / wall:.0f} trials/s "
                f"wall, {trials / max(cpu, 1e-9):.0f} trials per CPU-s; simulation loop "
                f"{engine:.1f} s)")
    return runs


def describe_costs(setup: Setup, table) -> str:
    """The report's sentence on the target system's times and what is charged."""
    if table is None:
        return (f"curves: parametric surrogate ({setup.base_epoch_seconds:g} s per epoch at "
                "the space's centre; no setup costs)")
    scale = setup.time_scale or 1.0
    setup_scale = scale if setup.setup_time_scale is None else setup.setup_time_scale
    setup_note = (f"median setup {table.median_setup_seconds() * setup_scale:.3g} s per new "
                  f"trial (recorded {table.median_setup_seconds():.3g} s x {setup_scale:.3g}), "
                  "restores likewise" if setup.setup_costs else
                  "setup and restore costs OFF (--nosetup_costs)")
    return (f"curves: {table.source} ({len(table.curves)} configurations, "
            f"{table.recorded_epochs} recorded epochs); target system: median epoch "
            f"{table.median_epoch_seconds() * scale:.3g} s (recorded "
            f"{table.median_epoch_seconds():.3g} s x time_scale {scale:g}), {setup_note}")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        setup = setup_from_flags()
        table = validate_setup(setup, FLAGS.curves)
    except ConfigError as exc:  # one line, exit 2, before any simulation
        print(f"benchmark.sim.replay: error: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    except (CurveError, ValueError, OSError, UnicodeDecodeError) as exc:
        print(f"benchmark.sim.replay: error: --curves={FLAGS.curves}: not a learning-curve "
              f"table: {' '.join(str(exc).split())}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.tables_only:
        import pandas as pd

        path = os.path.join(FLAGS.output_dir, "per_seed.csv")
        if not os.path.exists(path):
            print(f"benchmark.sim.replay: error: --tables_only: no {path}", file=sys.stderr)
            sys.exit(2)
        write_tables(pd.read_csv(path), setup, FLAGS.output_dir, "rebuilt from per_seed.csv")
        return
    tuners = list(FLAGS.tuner)
    if "random" not in tuners:
        print("note: without --tuner=random there is no target; only best losses are compared")
    output_dir = FLAGS.output_dir
    source = describe_costs(setup, table)
    print(f"simulating {', '.join(tuners)} x workers {list(setup.workers)} x seeds "
          f"{setup.first_seed}..{setup.first_seed + setup.seeds - 1}; preset {setup.preset}; "
          f"{source}; budget {setup.budget_node_hours:g} allocated node-hours")
    runs = simulate_all(setup, tuners, FLAGS.curves, output_dir if FLAGS.write_runs else None)
    sensitivity = ""
    if table is not None and setup.max_epochs > table.recorded_epochs:
        capped = capped_setup(setup, table.recorded_epochs)
        print(f"again with max_epochs capped at the {table.recorded_epochs} recorded epochs:")
        capped_runs = simulate_all(
            capped, tuners, FLAGS.curves,
            os.path.join(output_dir, "capped") if FLAGS.write_runs else None)
        sens = sensitivity_table(
            comparison_table(per_seed_table(runs, setup.budget_node_hours)),
            comparison_table(per_seed_table(capped_runs, setup.budget_node_hours)))
        sensitivity = sensitivity_markdown(sens, setup.max_epochs, table.recorded_epochs,
                                           setup.extrapolate)
        atomic_write_text(os.path.join(output_dir, "sensitivity.csv"), sens.to_csv(index=False))
    write_tables(per_seed_table(runs, setup.budget_node_hours), setup, output_dir, source,
                 extra=sensitivity)


def write_tables(per_seed, setup: Setup, output_dir: str, source: str, extra: str = "") -> None:
    """per_seed.csv, comparison.csv and comparison.md into ``output_dir``; print the table.

    ``extra`` (Markdown, e.g. the sensitivity table) is appended to comparison.md and printed.
    """
    table = comparison_table(per_seed)
    text = markdown_table(table, setup.budget_node_hours)
    os.makedirs(output_dir, exist_ok=True)
    if "node_hours_to_pooled_target" in per_seed:
        intervals = interval_table(per_seed)
        text = interval_markdown(intervals) + "\nAgainst Random's best of each seed:\n\n" + text
        atomic_write_text(os.path.join(output_dir, "intervals.csv"),
                          intervals.to_csv(index=False))
    atomic_write_text(os.path.join(output_dir, "per_seed.csv"), per_seed.to_csv(index=False))
    atomic_write_text(os.path.join(output_dir, "comparison.csv"), table.to_csv(index=False))
    title = (f"Simulated searches (preset {setup.preset}: max {setup.max_epochs} epochs, grace "
             f"{setup.min_epochs}, eta {setup.reduction_factor}; {source}; "
             f"{setup.budget_node_hours:g} allocated node-hours per search)\n\n")
    body = text + ("\n" + extra if extra else "")
    atomic_write_text(os.path.join(output_dir, "comparison.md"), title + body)
    print(title + body)
    sys.stdout.flush()


def run() -> None:
    """Console-script entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
