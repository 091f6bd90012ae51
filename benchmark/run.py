"""Run one hyperparameter search with one worker group (one or several Horovod ranks).

    python -m benchmark.run                                   # the smoke experiment
    python -m benchmark.run --experiment=smoke --tuner=hyperband --max_trials=8
    horovodrun -np 2 -H localhost:2 --gloo python -m benchmark.run --ranks_per_worker=2 \\
        --ranks_per_node=2
    python -m benchmark.run --flagfile=my.cfg --model.bin_size=64

Config values are filled in this order: section defaults -> the experiment preset
(:mod:`benchmark.experiments`) -> flagfile -> command-line flags. Every config field is a flag
``--<section>.<field>``; the short flags (``--tuner``, ``--workers``, ``--ranks_per_worker``,
``--ranks_per_node``, ``--budget_node_hours``, ``--max_trials``, ``--seed``, ``--output_dir``,
``--run_name``) set the same fields and must agree with the long form when both are given.

Everything is validated before any compute starts (bad flags: a message naming the flag and
value on stderr, exit code 2, nothing written). Then rank 0 creates the run directory
``<output_dir>/<run_name>``, writes ``params.yaml`` (with the ``search_id``) atomically and
starts ``mllog.txt``; all ranks run the search (:class:`tuners.horovod_tuner.HorovodTuner`),
which appends ``trials.jsonl`` (a distributed search's worker groups send their records to the
chief, the file's only writer). At the end rank 0 prints a summary and writes ``best.json``,
then evaluates the best trial on the test split into ``best/`` (:mod:`tuners.best_model`).
``--resume`` continues a search in an existing run directory (oracle state and records).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import uuid
from typing import Any

from absl import app, flags

from benchmark import experiments, launcher, preflight
from benchmark.config import (
    PARAMS_FILE,
    Config,
    config_from_flags,
    define_all_flags,
    load_params,
    write_params,
)
from mlpf_tf.configbase import ConfigError, atomic_write_text
from tuners.budget import AllocationBudget, earlier_node_hours
from tuners.config import TUNERS
from tuners.records import TRIALS_FILE, read_records

BEST_FILE = "best.json"
MLLOG_FILE = "mllog.txt"
EXIT_USAGE = 2
EXIT_ABORTED = 1

#: short flag -> (section, field) it sets
SHORT_FLAGS: dict[str, tuple[str, str]] = {
    "tuner": ("search", "tuner"),
    "workers": ("launch", "workers"),
    "ranks_per_worker": ("launch", "ranks_per_worker"),
    "ranks_per_node": ("launch", "ranks_per_node"),
    "budget_node_hours": ("search", "node_hour_budget"),
    "max_trials": ("search", "max_trials"),
    "seed": ("search", "seed"),
    "output_dir": ("launch", "output_dir"),
    "run_name": ("launch", "run_name"),
}


def define_run_flags(flag_values: flags.FlagValues | None = None) -> None:
    """Define the entry point's flags (short ones + one per config field) on ``flag_values``."""
    fv = flag_values if flag_values is not None else flags.FLAGS
    if "experiment" in fv:
        return
    flags.DEFINE_string("experiment", experiments.DEFAULT_EXPERIMENT,
                        "experiment preset: " + experiments.describe(), flag_values=fv)
    flags.DEFINE_string("tuner", None, f"search algorithm: {', '.join(TUNERS)} "
                        "(= --search.tuner)", flag_values=fv)
    flags.DEFINE_integer("workers", None, "worker groups running trials concurrently "
                         "(= --launch.workers)", flag_values=fv)
    flags.DEFINE_integer("ranks_per_worker", None, "Horovod ranks per worker group "
                         "(= --launch.ranks_per_worker)", flag_values=fv)
    flags.DEFINE_integer("ranks_per_node", None, "ranks per node, e.g. GPUs per node "
                         "(= --launch.ranks_per_node)", flag_values=fv)
    flags.DEFINE_float("budget_node_hours", None, "node-hours the search may spend, 0 = no "
                       "budget (= --search.node_hour_budget)", flag_values=fv)
    flags.DEFINE_integer("max_trials", None, "trials at most (= --search.max_trials)",
                         flag_values=fv)
    flags.DEFINE_integer("seed", None, "seed of the search (= --search.seed)", flag_values=fv)
    flags.DEFINE_string("output_dir", None, "parent of the run directory "
                        "(= --launch.output_dir)", flag_values=fv)
    flags.DEFINE_string("run_name", None, "run directory name (= --launch.run_name; default "
                        "<experiment>-<tuner>-w<workers>-s<seed>)", flag_values=fv)
    flags.DEFINE_boolean("resume", False, "continue the search in an existing run directory",
                         flag_values=fv)
    define_all_flags(fv)
    launcher.define_role_flags(fv)


# --- validation (no compute) ------------------------------------------------------------------


def _check_short_flags(fv: flags.FlagValues) -> dict[str, dict[str, Any]]:
    """Values of the short flags given, as config overrides; ConfigError on a bad one."""
    given = {name: fv[name].value for name in SHORT_FLAGS if fv[name].value is not None}
    if "tuner" in given and given["tuner"] not in TUNERS:
        raise ConfigError(f"--tuner={given['tuner']!r}: unknown tuner; known: "
                          f"{', '.join(TUNERS)}")
    if "budget_node_hours" in given and not (given["budget_node_hours"] >= 0.0
                                             and math.isfinite(given["budget_node_hours"])):
        raise ConfigError(f"--budget_node_hours={given['budget_node_hours']!r}: must be a "
                          "finite number >= 0 (0 = no budget)")
    for name in ("workers", "ranks_per_worker", "ranks_per_node", "seed"):
        if name in given and given[name] < 1:
            raise ConfigError(f"--{name}={given[name]!r}: must be >= 1")
    if "max_trials" in given and given["max_trials"] < 0:
        raise ConfigError(f"--max_trials={given['max_trials']!r}: must be >= 0 (0 = no limit)")
    if "output_dir" in given and not given["output_dir"].strip():
        raise ConfigError("--output_dir='': must not be empty")
    overrides: dict[str, dict[str, Any]] = {}
    for name, value in given.items():
        section, field = SHORT_FLAGS[name]
        long_name = f"{section}.{field}"
        long_value = fv[long_name].value if long_name in fv else None
        if long_value is not None and long_value != value:
            raise ConfigError(f"--{name}={value!r} conflicts with --{long_name}={long_value!r}; "
                              "give one of them")
        overrides.setdefault(section, {})[field] = value
    return overrides


def resolve_config(fv: flags.FlagValues | None = None) -> Config:
    """defaults -> experiment preset -> flagfile/flags, validated; ConfigError if anything is off."""
    fv = fv if fv is not None else flags.FLAGS
    try:
        experiment = experiments.get(fv.experiment)
    except experiments.UnknownExperiment as exc:
        raise ConfigError(str(exc)) from None
    base = Config(experiment=experiment.name).override(experiment.overrides)
    base = base.override(_check_short_flags(fv))
    cfg = config_from_flags(base, fv)
    if not cfg.launch.run_name:
        name = (f"{cfg.experiment}-{cfg.search.tuner}-w{cfg.launch.workers}"
                f"-s{cfg.search.seed}")
        cfg.launch = cfg.launch.replace(run_name=name)
    _check_run_rules(cfg)
    return cfg


def _check_run_rules(cfg: Config) -> None:
    """Rules of this entry point on top of the config's own validation."""
    if cfg.search.executions_per_trial != 1:
        raise ConfigError(f"--search.executions_per_trial={cfg.search.executions_per_trial}: "
                          "the Horovod tuner trains each trial once; set it to 1")
    name = cfg.launch.run_name
    if os.sep in name or name in (".", ".."):
        raise ConfigError(f"--launch.run_name={name!r}: must be a plain directory name")


def check_run_dir(cfg: Config, resume: bool) -> tuple[str, str]:
    """(run directory, search id); ConfigError if it exists without --resume or vice versa."""
    run_dir = os.path.abspath(os.path.join(cfg.launch.output_dir, cfg.launch.run_name))
    params = os.path.join(run_dir, PARAMS_FILE)
    if resume:
        if not os.path.isfile(params):
            raise ConfigError(f"--resume: {params} does not exist; nothing to resume")
        saved, extras = load_params(params)
        if saved.search.tuner != cfg.search.tuner or saved.search.space != cfg.search.space:
            raise ConfigError(f"--resume: {params} is a {saved.search.tuner}/"
                              f"{saved.search.space} search, not {cfg.search.tuner}/"
                              f"{cfg.search.space}")
        return run_dir, str(extras.get("search_id") or cfg.launch.run_name)
    if os.path.exists(run_dir) and os.listdir(run_dir):
        raise ConfigError(f"--launch.run_name={cfg.launch.run_name!r}: run directory {run_dir} "
                          "already exists; choose another --run_name or pass --resume")
    return run_dir, f"{cfg.launch.run_name}-{uuid.uuid4().hex[:8]}"


# --- the run ----------------------------------------------------------------------------------


def plan_run(cfg: Config, ctx, resume: bool = False) -> tuple[str, str]:
    """Check the rank count and the run directory on rank 0; every rank gets the same answer.

    Returns (run directory, search id); raises ConfigError on every rank when either is off.
    """
    from mlpf_tf import distributed

    if ctx.size != cfg.launch.ranks_per_worker:
        raise ConfigError(
            f"--launch.ranks_per_worker={cfg.launch.ranks_per_worker}, but this worker group has "
            f"{ctx.size} rank(s): start it with horovodrun -np {cfg.launch.ranks_per_worker} "
            "(or set the flag to the number of ranks started)")
    answer: tuple[str, str] | str | None = None
    if ctx.is_root:
        try:
            answer = check_run_dir(cfg, resume)
        except ConfigError as exc:
            answer = str(exc)
    answer = distributed.broadcast_object(answer, root=0, ctx=ctx)
    if isinstance(answer, str):
        raise ConfigError(answer)
    return tuple(answer)  # type: ignore[return-value]


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a search did on this rank: the summary (rank 0 only, else None) and the
    (trial_id, status) sequence this rank ran, the same on every rank of the group."""

    summary: dict[str, Any] | None
    trials_run: tuple[tuple[str, str], ...]


def run_search(cfg: Config, run_dir: str, search_id: str, *, resume: bool = False,
               context=None) -> SearchResult:
    """Run the search on every rank of this group (rank 0 writes the run directory)."""
    from mlpf_tf import distributed
    from mlpf_tf.train import configure_threads

    ctx = context if context is not None else distributed.init()
    configure_threads(cfg.train.num_threads or cfg.launch.threads_per_rank, 1)

    budget = None
    if ctx.is_root:
        # the allocation starts now: earlier segments of a resumed run are charged too
        earlier = earlier_node_hours(os.path.join(run_dir, MLLOG_FILE)) if resume else 0.0
        budget = AllocationBudget(cfg.search.node_hour_budget, cfg.launch.nodes,
                                  earlier_node_hours=earlier)
    mllogger = _start_run_dir(cfg, run_dir, search_id, resume) if ctx.is_root else None
    status, stopped_by, tuner = "aborted", "aborted", None
    try:
        _prepare_data(cfg, ctx)
        tuner = build_tuner(cfg, run_dir, search_id, ctx, mllogger=mllogger, resume=resume,
                            budget=budget)
        tuner.search()
        status, stopped_by = "success", tuner.stop_reason or "space_exhausted"
    finally:
        if mllogger is not None:
            mllogger.end("run_stop", None, {"status": status, "stopped_by": stopped_by})
    trials_run = tuple(tuner.trials_run)
    if not ctx.is_root:
        return SearchResult(None, trials_run)
    summary = summarize(run_dir, cfg)
    summary["stopped_by"] = stopped_by
    summary["allocated_node_hours"] = budget.used()
    atomic_write_text(os.path.join(run_dir, BEST_FILE), json.dumps(summary, indent=1) + "\n")
    return SearchResult(summary, trials_run)


def _start_run_dir(cfg: Config, run_dir: str, search_id: str, resume: bool):

    os.makedirs(run_dir, exist_ok=True)
    if not resume:
        write_params(cfg, run_dir, search_id=search_id)
    return start_mllog(cfg, run_dir, search_id)


def start_mllog(cfg: Config, run_dir: str, search_id: str):
    """Open ``mllog.txt`` (appending) and log the run start with the node accounting."""
    from tuners import mllog

    logger = mllog.MLLogger(os.path.join(run_dir, MLLOG_FILE), namespace=search_id)
    logger.start("run_start", None, {"search_id": search_id})
    logger.event("number_of_nodes", cfg.launch.nodes)
    logger.event("accelerators_per_node",
                 cfg.launch.accelerators_per_node or cfg.launch.ranks_per_node)
    logger.event("number_of_workers", cfg.launch.workers)
    logger.event("seed", cfg.search.seed)
    return logger


def _prepare_data(cfg: Config, ctx) -> None:
    """Build the dataset once on rank 0 while the other ranks wait; errors reach every rank."""
    from mlpf_tf import distributed

    error = None
    if ctx.is_root:
        try:
            from mlpf_tf.data.datasets import prepare_dataset

            prepare_dataset(cfg.data)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
    error = distributed.broadcast_object(error, root=0, ctx=ctx)
    if error:
        raise RuntimeError(f"preparing the dataset failed: {error}")


def build_tuner(cfg: Config, run_dir: str, search_id: str, ctx, *, mllogger=None,
                resume: bool = False, worker_id: str = "0", train_kwargs: dict | None = None,
                budget=None):
    """The HorovodTuner of this rank for ``cfg`` (oracle, hypermodel, runner, recorder)."""
    from tuners.horovod_tuner import HorovodTuner
    from tuners.hypermodel import MLPFHyperModel
    from tuners.oracles import make_oracle
    from tuners.records import TrialRecorder
    from tuners.space import build_space
    from tuners.trial_runner import TrialRunner

    oracle = make_oracle(cfg.search, build_space(cfg.search.space))
    recorder = TrialRecorder(run_dir, search_id, worker_id=worker_id) if ctx.is_root else None
    runner = TrialRunner(cfg.data, cfg.model, cfg.train, run_dir=run_dir, context=ctx,
                         nodes=cfg.launch.nodes_per_worker, recorder=recorder, mllogger=mllogger,
                         objective=cfg.search.objective, worker_id=worker_id,
                         default_epochs=cfg.search.max_epochs, train_kwargs=train_kwargs)
    hypermodel = MLPFHyperModel(cfg.model, cfg.train, space=cfg.search.space)
    return HorovodTuner(oracle, runner, hypermodel=hypermodel, directory=run_dir, context=ctx,
                        budget=budget, epoch_budget=cfg.search.epoch_budget,
                        overwrite=not resume)


def summarize(run_dir: str, cfg: Config) -> dict[str, Any]:
    """Best trial and costs of a run, from its ``trials.jsonl`` (what ``best.json`` holds).

    A trial's result is its objective at its last epoch (the ``trial_end`` metrics: the epoch
    whose weights its checkpoint holds), as every oracle and report ranks it.
    """
    path = os.path.join(run_dir, TRIALS_FILE)
    ends = [r for r in read_records(path) if r["event"] == "trial_end"] if os.path.exists(
        path) else []
    objective, sign = cfg.search.objective, (1.0 if cfg.search.direction == "min" else -1.0)
    done = [r for r in ends if r["status"] == "COMPLETED"
            and isinstance(r["metrics"].get(objective), (int, float))
            and math.isfinite(r["metrics"][objective])]
    best = min(done, key=lambda r: sign * r["metrics"][objective]) if done else None
    summary: dict[str, Any] = {
        "search_id": ends[0]["search_id"] if ends else None,
        "tuner": cfg.search.tuner, "objective": objective, "direction": cfg.search.direction,
        "trials": len(ends), "completed": len(done),
        "failed": sum(r["status"] == "FAILED" for r in ends),
        "trial_node_hours": sum(float(r.get("node_hours") or 0.0) for r in ends),
        "epochs_trained": sum(max(0, r["epochs"] - r["initial_epoch"]) for r in ends),
        "best": None,
    }
    if best is not None:
        summary["best"] = {
            "trial_id": best["trial_id"], objective: best["metrics"][objective],
            "epochs": best["epochs"], "hyperparameters": best["hyperparameters"],
            "metrics": best["metrics"], "parent_id": best.get("parent_id"),
            "checkpoint": os.path.join(run_dir, "trials", best["trial_id"], "checkpoints"),
        }
    return summary


def format_summary(summary: dict[str, Any], run_dir: str, wall_seconds: float,
                   nodes: int) -> str:
    objective = summary["objective"]
    lines = [f"run directory: {run_dir}",
             f"trials: {summary['trials']} ({summary['completed']} completed, "
             f"{summary['failed']} failed), epochs trained: {summary['epochs_trained']}",
             f"node-hours: {summary['trial_node_hours']:.4f} in trials, "
             f"{wall_seconds * nodes / 3600.0:.4f} allocated ({nodes} node(s) x "
             f"{wall_seconds:.0f} s)"]
    best = summary["best"]
    if best is None:
        lines.append("best trial: none completed")
    else:
        lines.append(f"best trial: {best['trial_id']} {objective}={best[objective]:.5g} after "
                     f"{best['epochs']} epochs")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    fv = flags.FLAGS
    try:
        cfg = resolve_config(fv)
        preflight.check_run(cfg, launcher.check_role_flags(fv, cfg.launch.workers))
        # --role=chief|worker, or --workers > 1: the distributed search (benchmark.launcher)
        code = launcher.dispatch(cfg, fv, sys.argv[1:], run=sys.modules[__name__])
    except (ConfigError, launcher.RoleError) as exc:
        print(f"benchmark.run: error: {one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    if code is not None:
        return code
    from mlpf_tf import distributed
    from tuners.horovod_tuner import SearchAborted

    ctx = distributed.init()
    try:
        run_dir, search_id = plan_run(cfg, ctx, fv.resume)
    except ConfigError as exc:
        if ctx.is_root:
            print(f"benchmark.run: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    start = time.time()
    try:
        summary = run_search(cfg, run_dir, search_id, resume=fv.resume, context=ctx).summary
    except SearchAborted as exc:
        print(f"benchmark.run: search aborted: {exc}", file=sys.stderr)
        return EXIT_ABORTED
    if summary is not None:
        print(format_summary(summary, run_dir, time.time() - start, cfg.launch.nodes),
              flush=True)
        if summary["best"] is not None:
            write_best_physics(run_dir)
    return 0


def one_line(exc: BaseException) -> str:
    """An error message on one line (a CLI error is one line on stderr)."""
    return " ".join(str(exc).split())


def write_best_physics(run_dir: str) -> None:
    """Rank 0 after a search: the best model's physics on the test split into ``best/``
    (:mod:`tuners.best_model`); a failure is reported and the search result stands."""
    from tuners import best_model

    try:
        result = best_model.write_best_physics(run_dir)
    except Exception as exc:  # noqa: BLE001 - the search itself succeeded
        print(f"benchmark.run: best-model physics not written: {type(exc).__name__}: {exc}",
              file=sys.stderr, flush=True)
        return
    print(f"best-model physics: trial {result['trial_id']} on {result['events']} test events "
          f"-> {os.path.join(run_dir, best_model.BEST_DIR)}", flush=True)


def run() -> None:
    """Console-script entry point."""
    define_run_flags()
    app.run(main)


if __name__ == "__main__":
    run()
