"""Tables of search quality versus compute, from runs read by :mod:`reports.rundir`.

Definitions (the report repeats them):
  * result of a trial: its objective at its last epoch (the epoch whose weights its checkpoint
    holds), as every oracle ranks it; a run's final loss is its best trial result;
  * scale: ``nodes`` (nodes held, default) or ``workers`` (concurrent trials) of a run;
  * axis: which node-hours budgets and curves use - ``allocated`` (default: run wall time x
    every node held, idle or not, from the log; what the budget is charged on) or ``trial``
    (sum of epoch wall x nodes: a utilisation view that leaves set-up and idle time out);
  * target loss at a scale: ``--target_loss`` if given, else the ``target_quantile`` (default
    0.5) of the pooled final losses of every run at that scale (all tuners, all seeds): a rule
    fixed in advance that no single tuner's run decides;
  * node-hours to target: the node-hours (axis) at the first trial end whose best-so-far result
    reaches the target; a run that never reaches it counts as +inf ("not reached"), never as 0;
  * loss at f of the budget: best-so-far result at node-hours <= f x budget, where budget is
    ``search.node_hour_budget`` or, without one, the smallest total node-hours (axis) of the runs
    at that scale; +inf if no trial had ended by then;
  * every per-seed figure is summarised by its median over seeds with a bootstrap 95% interval
    (:mod:`reports.stats`; ``n`` = seeds);
  * speedup vs the baseline: per seed, the paired ratio baseline node-hours to target / tuner's
    (seed s of every tuner sees the same data order and first configurations); a seed where
    neither reached the target has no ratio; median and interval over the seeds with one;
  * trials started / completed / failed: median over seeds of the per-run counts;
  * scaling: one target for all scales of a tuner (``--target_loss`` or the pooled target over
    all scales) so times are comparable; speedup(N) = T(N0) / T(N) for the median wall hours T
    to reach it at the smallest scale N0, efficiency(N) = speedup(N) / (N / N0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from reports import stats
from reports.rundir import Run

AXES = {"allocated": "alloc_node_hours", "trial": "cum_trial_node_hours"}
DEFAULT_AXIS = "allocated"
#: quantile of the pooled final losses that sets the default target
TARGET_QUANTILE = 0.5
SCALES = ("nodes", "workers")
DEFAULT_FRACTIONS = (0.25, 0.5, 1.0)
# A loss "reaches" a target within this relative tolerance, so a target that is an interpolated
# median such as (0.6 + 0.7) / 2 = 0.64999... is reached by a loss of 0.65.
TARGET_TOLERANCE = 1e-9


quantile = stats.quantile
median = stats.median


def iqr(values: Sequence[float]) -> float:
    hi, lo = quantile(values, 0.75), quantile(values, 0.25)
    if math.isinf(hi) and math.isinf(lo):
        return math.nan
    return hi - lo


def scale_of(run: Run, scale: str) -> float:
    if scale not in SCALES:
        raise ValueError(f"--scale={scale!r}: must be one of {', '.join(SCALES)}")
    return float(run.nodes if scale == "nodes" else run.workers)


def _axis(axis: str) -> str:
    if axis not in AXES:
        raise ValueError(f"--axis={axis!r}: must be one of {', '.join(AXES)}")
    return AXES[axis]


def is_tuner(name: str, baseline: str) -> bool:
    """Tuner names compare without case, '_' , '-' or a 'search' suffix (RandomSearch=random)."""
    def norm(s: str) -> str:
        s = s.lower().replace("_", "").replace("-", "")
        return s[:-6] if s.endswith("search") and len(s) > 6 else s
    return norm(name) == norm(baseline)


def time_to_target(run: Run, target: float, axis: str = DEFAULT_AXIS) -> tuple[float, float]:
    """(node-hours on ``axis``, wall hours since run start) at the first trial end whose
    best-so-far result reaches ``target``; (inf, inf) if none does."""
    res = run.results
    hit = res.index[res["best_so_far"] <= target + TARGET_TOLERANCE * abs(target)]
    if len(hit) == 0 or not math.isfinite(target):
        return math.inf, math.inf
    row = res.loc[hit[0]]
    return float(row[_axis(axis)]), float(row["elapsed_seconds"]) / 3600.0


def loss_at(run: Run, node_hours: float, axis: str = DEFAULT_AXIS) -> float:
    """Best trial result known after ``node_hours`` on ``axis``; inf if no trial had ended."""
    res = run.results
    done = res[res[_axis(axis)] <= node_hours + 1e-12]
    value = done["best_so_far"].min() if len(done) else math.nan
    return float(value) if np.isfinite(value) else math.inf


def total_node_hours(run: Run, axis: str) -> float:
    return run.trial_node_hours if axis == "trial" else run.allocated_node_hours


def run_table(runs: Sequence[Run], scale: str = "nodes") -> pd.DataFrame:
    """One row per run: identity, scale, best loss, node-hours, wall time, trial counts."""
    rows = []
    for r in runs:
        counts = r.trial_counts()
        rows.append({
            "experiment": r.experiment, "search_id": r.search_id, "tuner": r.tuner,
            "seed": r.seed, "scale": scale_of(r, scale), "nodes": r.nodes,
            "workers": r.workers, "best_loss": r.best_loss,
            "best_epoch_loss": r.best_epoch_loss, "stopped_by": r.stopped_by,
            "trial_node_hours": r.trial_node_hours,
            "trial_end_node_hours": r.trial_end_node_hours,
            "allocated_node_hours": r.allocated_node_hours,
            "utilisation": (r.trial_node_hours / r.allocated_node_hours
                            if r.allocated_node_hours > 0 else math.nan),
            "mllog_trial_node_hours": r.mllog_trial_node_hours,
            "wall_hours": r.wall_seconds / 3600.0,
            "budget_node_hours": r.budget_node_hours,
            "trials_started": counts["started"], "trials_completed": counts["completed"],
            "trials_failed": counts["failed"], "trials_invalid": counts["invalid"],
            "epochs": len(r.epochs), "setup_seconds": r.setup_seconds(),
            "trace_seconds": r.trace_seconds(),
            "timing_source": r.timing_source, "path": r.path,
        })
    return pd.DataFrame(rows)


def _by_scale(runs: Sequence[Run], scale: str) -> dict[float, list[Run]]:
    out: dict[float, list[Run]] = {}
    for r in runs:
        out.setdefault(scale_of(r, scale), []).append(r)
    return dict(sorted(out.items()))


def pooled_target(runs: Sequence[Run], q: float = TARGET_QUANTILE) -> float:
    """The ``q`` quantile of the final losses of ``runs`` (every tuner and seed); NaN if none
    is finite."""
    finals = [r.best_loss for r in runs if math.isfinite(r.best_loss)]
    return quantile(finals, q) if finals else math.nan


def target_losses(runs: Sequence[Run], scale: str = "nodes", target_loss: float | None = None,
                  q: float = TARGET_QUANTILE) -> dict[float, tuple[float, str]]:
    """scale -> (target loss, the rule that chose it)."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"--target_quantile={q!r}: must be in (0, 1)")
    out = {}
    for s, group in _by_scale(runs, scale).items():
        if target_loss is not None:
            out[s] = (float(target_loss), "--target_loss")
            continue
        n = sum(math.isfinite(r.best_loss) for r in group)
        target = pooled_target(group, q)
        out[s] = ((target, f"{q:g} quantile of the final losses of all {n} runs at this scale")
                  if math.isfinite(target) else (math.nan, "no finite loss"))
    return out


def _budget(group: Sequence[Run], axis: str) -> float:
    budgets = [r.budget_node_hours for r in group if math.isfinite(r.budget_node_hours)]
    if budgets:
        return float(min(budgets))
    return float(min(total_node_hours(r, axis) for r in group))


def _with_ci(row: dict, name: str, values: Sequence[float], seed: int = 0) -> None:
    point, lo, hi = stats.bootstrap_median(values, seed=seed)
    row[name], row[f"{name}_lo"], row[f"{name}_hi"] = point, lo, hi


def _seed_key(run: Run):
    return str(run.seed)


def summary_table(runs: Sequence[Run], scale: str = "nodes", axis: str = DEFAULT_AXIS,
                  baseline: str = "random", target_loss: float | None = None,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS,
                  target_quantile: float = TARGET_QUANTILE) -> pd.DataFrame:
    """One row per tuner x scale (see the module docstring for every column).

    Figures ``x`` come with ``x_lo`` / ``x_hi``, the bootstrap 95% interval of the median over
    seeds; ``seeds`` is their number.
    """
    targets = target_losses(runs, scale, target_loss, target_quantile)
    rows = []
    for s, group in _by_scale(runs, scale).items():
        target, _ = targets[s]
        budget = _budget(group, axis)
        tuners = sorted({r.tuner for r in group}, key=lambda t: (not is_tuner(t, baseline), t))
        base_runs = {_seed_key(r): r for r in group if is_tuner(r.tuner, baseline)}
        base_ttt = {k: time_to_target(r, target, axis)[0] for k, r in base_runs.items()}
        for tuner in tuners:
            mine = [r for r in group if r.tuner == tuner]
            ttt = [time_to_target(r, target, axis) for r in mine]
            counts = [r.trial_counts() for r in mine]
            row: dict = {"tuner": tuner, "scale": s, "seeds": len(mine)}
            _with_ci(row, "final_loss", [r.best_loss for r in mine])
            row["best_epoch_loss"] = median([r.best_epoch_loss for r in mine])
            row["target_loss"] = target
            row["reached"] = sum(math.isfinite(t[0]) for t in ttt)
            _with_ci(row, "node_hours_to_target", [t[0] for t in ttt])
            row["wall_hours_to_target"] = median([t[1] for t in ttt])
            pairs = [stats.paired_ratio(base_ttt[_seed_key(r)], t[0])
                     for r, t in zip(mine, ttt) if _seed_key(r) in base_ttt]
            pairs = [p for p in pairs if not math.isnan(p)]
            _with_ci(row, f"speedup_vs_{baseline}", pairs)
            row["speedup_pairs"] = len(pairs)
            row["budget_node_hours"] = budget
            for f in fractions:
                _with_ci(row, f"loss_at_{round(f * 100)}pct",
                         [loss_at(r, f * budget, axis) for r in mine])
            row.update({
                "trial_node_hours": median([r.trial_node_hours for r in mine]),
                "allocated_node_hours": median([r.allocated_node_hours for r in mine]),
                "utilisation": median([r.trial_node_hours / r.allocated_node_hours
                                       if r.allocated_node_hours > 0 else math.nan
                                       for r in mine]),
                "wall_hours": median([r.wall_seconds / 3600.0 for r in mine]),
                "trials_started": median([c["started"] for c in counts]),
                "trials_completed": median([c["completed"] for c in counts]),
                "trials_failed": median([c["failed"] for c in counts]),
                "stopped_by": ", ".join(f"{k} x{v}" for k, v in sorted(
                    _count([r.stopped_by for r in mine]).items())),
            })
            rows.append(row)
    return pd.DataFrame(rows)


def _count(items: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


def _ratio(num: float, den: float) -> float:
    return stats.paired_ratio(num, den)


def scaling_table(runs: Sequence[Run], scale: str = "nodes", axis: str = DEFAULT_AXIS,
                  baseline: str = "random", target_loss: float | None = None,
                  target_quantile: float = TARGET_QUANTILE) -> pd.DataFrame:
    """Per tuner x scale: wall hours and node-hours to one common target, speedup, efficiency."""
    target = float(target_loss) if target_loss is not None else pooled_target(
        runs, target_quantile)
    rows = []
    for tuner in sorted({r.tuner for r in runs}, key=lambda t: (not is_tuner(t, baseline), t)):
        mine = [r for r in runs if r.tuner == tuner]
        scales = sorted({scale_of(r, scale) for r in mine})
        base_t = None
        for s in scales:
            at = [time_to_target(r, target, axis) for r in mine if scale_of(r, scale) == s]
            wall = median([t[1] for t in at])
            if base_t is None:
                base_t, base_s = wall, s
            speedup = _ratio(base_t, wall)
            rows.append({"tuner": tuner, "scale": s, "seeds": len(at), "target_loss": target,
                         "reached": sum(math.isfinite(t[1]) for t in at),
                         "wall_hours_to_target": wall,
                         "wall_hours_to_target_iqr": iqr([t[1] for t in at]),
                         "node_hours_to_target": median([t[0] for t in at]),
                         "speedup": speedup, "efficiency": speedup / (s / base_s)})
    return pd.DataFrame(rows)


def anytime_curves(runs: Sequence[Run], scale: str = "nodes", axis: str = DEFAULT_AXIS,
                   points: int = 200) -> pd.DataFrame:
    """Best-so-far trial result on a node-hour grid per scale x tuner: median, q25, q75 over
    seeds.

    A run contributes +inf before its first ended trial and its final best after its end,
    so the median is finite once half of the seeds have a model. Each tuner's curve stops at
    the largest total node-hours of its runs.
    """
    col = _axis(axis)
    rows = []
    for s in sorted({scale_of(r, scale) for r in runs}):
        group = [r for r in runs if scale_of(r, scale) == s]
        xmax = max((total_node_hours(r, axis) for r in group if len(r.results)), default=0.0)
        grid = np.linspace(0.0, xmax, points) if xmax > 0 else np.zeros(1)
        for tuner in sorted({r.tuner for r in group}):
            mine = [r for r in group if r.tuner == tuner and len(r.results)]
            if not mine:
                continue
            end = max(total_node_hours(r, axis) for r in mine)
            values = []
            for r in mine:
                x = r.results[col].to_numpy(dtype=float)
                y = r.results["best_so_far"].fillna(np.inf).to_numpy(dtype=float)
                idx = np.searchsorted(x, grid, side="right") - 1
                values.append(np.where(idx >= 0, y[np.clip(idx, 0, None)], np.inf))
            values = np.asarray(values)
            for j, x in enumerate(grid):
                if x > end + 1e-12:
                    break
                col_v = values[:, j]
                rows.append({"scale": s, "tuner": tuner, "node_hours": float(x),
                             "median": quantile(col_v, 0.5), "q25": quantile(col_v, 0.25),
                             "q75": quantile(col_v, 0.75), "runs": len(mine)})
    return pd.DataFrame(rows, columns=["scale", "tuner", "node_hours", "median", "q25", "q75",
                                       "runs"])
