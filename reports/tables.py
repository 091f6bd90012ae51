"""Tables of search quality versus compute, from runs read by :mod:`reports.rundir`.

Definitions (the report repeats them):
  * scale: ``nodes`` (nodes held, default) or ``workers`` (concurrent trials) of a run;
  * axis: which node-hours the budget columns use - ``trial`` (sum of epoch wall x nodes) or
    ``allocated`` (run wall x nodes held, from the log);
  * best loss: the smallest finite objective of any epoch of the run; median and the
    interquartile range (IQR = q75 - q25, linear interpolation) over the runs (seeds) of a
    tuner at a scale;
  * target loss at a scale: ``--target_loss`` if given, else the median over seeds of the best
    loss the baseline tuner (Random Search) reaches with its whole run at that scale; if that
    tuner has no run at the scale, the largest median best loss of the tuners there;
  * node-hours to target: the cumulative node-hours (axis) of the first epoch whose best-so-far
    reaches the target; a run that never reaches it counts as infinite, so a median is finite
    only if more than half of the seeds got there ("reached" says how many did);
  * speedup: median node-hours to target of the baseline tuner / that of the tuner;
  * loss at f of the budget: best-so-far at cumulative node-hours <= f x budget, where budget is
    ``search.node_hour_budget`` or, without one, the smallest total node-hours (axis) of the
    runs at that scale (so every run covers it); infinite if no epoch had finished by then;
  * trials started / completed / failed: median over seeds of the per-run counts;
  * scaling: one target for all scales of a tuner (``--target_loss`` or the loosest per-scale
    target) so times are comparable; speedup(N) = T(N0) / T(N) for the wall hours T to reach it
    at the smallest scale N0, efficiency(N) = speedup(N) / (N / N0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from reports.rundir import Run

AXES = {"trial": "cum_trial_node_hours", "allocated": "alloc_node_hours"}
SCALES = ("nodes", "workers")
DEFAULT_FRACTIONS = (0.25, 0.5, 1.0)
# A loss "reaches" a target within this relative tolerance, so a target that is an interpolated
# median such as (0.6 + 0.7) / 2 = 0.64999... is reached by a loss of 0.65.
TARGET_TOLERANCE = 1e-9


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile that allows +inf (inf beyond it stays inf); NaN if empty."""
    v = np.sort(np.asarray([x for x in values if not (isinstance(x, float) and math.isnan(x))],
                           dtype=float))
    if v.size == 0:
        return math.nan
    pos = q * (v.size - 1)
    lo, hi = int(math.floor(pos)), int(math.ceil(pos))
    frac = pos - lo
    if frac == 0.0 or v[lo] == v[hi]:
        return float(v[lo])
    if math.isinf(v[hi]) or math.isinf(v[lo]):
        return math.inf
    return float(v[lo] + (v[hi] - v[lo]) * frac)


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


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


def time_to_target(run: Run, target: float, axis: str = "trial") -> tuple[float, float]:
    """(node-hours on ``axis``, wall hours since run start) when best-so-far first <= target."""
    ep = run.epochs
    hit = ep.index[ep["best_so_far"] <= target + TARGET_TOLERANCE * abs(target)]
    if len(hit) == 0 or not math.isfinite(target):
        return math.inf, math.inf
    row = ep.loc[hit[0]]
    return float(row[_axis(axis)]), float(row["elapsed_seconds"]) / 3600.0


def loss_at(run: Run, node_hours: float, axis: str = "trial") -> float:
    """Best-so-far objective after ``node_hours`` on ``axis``; inf if nothing had finished."""
    ep = run.epochs
    done = ep[ep[_axis(axis)] <= node_hours + 1e-12]
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
            "epochs": len(r.epochs), "timing_source": r.timing_source, "path": r.path,
        })
    return pd.DataFrame(rows)


def target_losses(runs: Sequence[Run], scale: str = "nodes", baseline: str = "random",
                  target_loss: float | None = None) -> dict[float, tuple[float, str]]:
    """scale -> (target loss, how it was chosen)."""
    by_scale: dict[float, list[Run]] = {}
    for r in runs:
        by_scale.setdefault(scale_of(r, scale), []).append(r)
    out = {}
    for s, group in sorted(by_scale.items()):
        if target_loss is not None:
            out[s] = (float(target_loss), "--target_loss")
            continue
        base = [r.best_loss for r in group if is_tuner(r.tuner, baseline)]
        if base and math.isfinite(median(base)):
            out[s] = (median(base), f"median best loss of {baseline} at this scale")
            continue
        per_tuner: dict[str, list[float]] = {}
        for r in group:
            per_tuner.setdefault(r.tuner, []).append(r.best_loss)
        medians = [median(v) for v in per_tuner.values() if math.isfinite(median(v))]
        out[s] = ((max(medians), f"no {baseline} run: loosest tuner median")
                  if medians else (math.nan, "no finite loss"))
    return out


def _budget(group: Sequence[Run], axis: str) -> float:
    budgets = [r.budget_node_hours for r in group if math.isfinite(r.budget_node_hours)]
    if budgets:
        return float(min(budgets))
    return float(min(total_node_hours(r, axis) for r in group))


def summary_table(runs: Sequence[Run], scale: str = "nodes", axis: str = "trial",
                  baseline: str = "random", target_loss: float | None = None,
                  fractions: Sequence[float] = DEFAULT_FRACTIONS) -> pd.DataFrame:
    """One row per tuner x scale (see the module docstring for every column)."""
    targets = target_losses(runs, scale, baseline, target_loss)
    by_scale: dict[float, list[Run]] = {}
    for r in runs:
        by_scale.setdefault(scale_of(r, scale), []).append(r)
    rows = []
    for s, group in sorted(by_scale.items()):
        target, _ = targets[s]
        budget = _budget(group, axis)
        tuners = sorted({r.tuner for r in group}, key=lambda t: (not is_tuner(t, baseline), t))
        for tuner in tuners:
            mine = [r for r in group if r.tuner == tuner]
            best = [r.best_loss for r in mine]
            ttt = [time_to_target(r, target, axis) for r in mine]
            counts = [r.trial_counts() for r in mine]
            row = {
                "tuner": tuner, "scale": s, "seeds": len(mine),
                "best_loss_median": median(best), "best_loss_q25": quantile(best, 0.25),
                "best_loss_q75": quantile(best, 0.75), "best_loss_iqr": iqr(best),
                "target_loss": target,
                "reached": sum(math.isfinite(t[0]) for t in ttt),
                "node_hours_to_target": median([t[0] for t in ttt]),
                "node_hours_to_target_iqr": iqr([t[0] for t in ttt]),
                "wall_hours_to_target": median([t[1] for t in ttt]),
                "budget_node_hours": budget,
            }
            for f in fractions:
                row[f"loss_at_{round(f * 100)}pct"] = median([loss_at(r, f * budget, axis)
                                                              for r in mine])
            row.update({
                "trial_node_hours": median([r.trial_node_hours for r in mine]),
                "allocated_node_hours": median([r.allocated_node_hours for r in mine]),
                "wall_hours": median([r.wall_seconds / 3600.0 for r in mine]),
                "trials_started": median([c["started"] for c in counts]),
                "trials_completed": median([c["completed"] for c in counts]),
                "trials_failed": median([c["failed"] for c in counts]),
            })
            rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    speedups = []
    for _, row in df.iterrows():
        base = df[(df["scale"] == row["scale"]) & df["tuner"].map(lambda t: is_tuner(t, baseline))]
        if base.empty:
            speedups.append(math.nan)
            continue
        speedups.append(_ratio(float(base["node_hours_to_target"].iloc[0]),
                               float(row["node_hours_to_target"])))
    df.insert(df.columns.get_loc("wall_hours_to_target") + 1, f"speedup_vs_{baseline}",
              speedups)
    return df


def _ratio(num: float, den: float) -> float:
    if math.isinf(num) and math.isinf(den):
        return math.nan
    if den == 0:
        return math.inf if num > 0 else math.nan
    return num / den


def scaling_table(runs: Sequence[Run], scale: str = "nodes", axis: str = "trial",
                  baseline: str = "random", target_loss: float | None = None) -> pd.DataFrame:
    """Per tuner x scale: wall hours and node-hours to one common target, speedup, efficiency."""
    targets = target_losses(runs, scale, baseline, target_loss)
    finite = [t for t, _ in targets.values() if math.isfinite(t)]
    target = float(target_loss) if target_loss is not None else (max(finite) if finite
                                                                 else math.nan)
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


def anytime_curves(runs: Sequence[Run], scale: str = "nodes", axis: str = "trial",
                   points: int = 200) -> pd.DataFrame:
    """Best-so-far loss on a node-hour grid per scale x tuner: median, q25, q75 over seeds.

    A run contributes +inf before its first finished epoch and its final best after its end,
    so the median is finite once half of the seeds have a model. Each tuner's curve stops at
    the largest total node-hours of its runs.
    """
    col = _axis(axis)
    rows = []
    for s in sorted({scale_of(r, scale) for r in runs}):
        group = [r for r in runs if scale_of(r, scale) == s]
        xmax = max((float(r.epochs[col].max()) for r in group if len(r.epochs)), default=0.0)
        grid = np.linspace(0.0, xmax, points) if xmax > 0 else np.zeros(1)
        for tuner in sorted({r.tuner for r in group}):
            mine = [r for r in group if r.tuner == tuner and len(r.epochs)]
            if not mine:
                continue
            end = max(float(r.epochs[col].max()) for r in mine)
            values = []
            for r in mine:
                x = r.epochs[col].to_numpy(dtype=float)
                y = r.epochs["best_so_far"].fillna(np.inf).to_numpy(dtype=float)
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
