"""Turn search run directories into a Markdown report with CSV tables and PNG plots.

    python -m reports.report --runs runs/exp1 runs/exp2 --out reports_out [--target_loss 1.2]
        [--target_quantile 0.5] [--scale nodes|workers] [--axis allocated|trial]
        [--baseline_tuner random] [--experiment NAME]

``--runs`` takes run directories or directories holding run directories. Writes into
``--out``: ``report.md``, ``runs.csv`` (one row per run), ``summary.csv`` (tuner x scale),
``scaling.csv``, ``anytime.csv``, ``anytime.png``, ``scaling.png`` (two or more scales) and,
when the best run has them, ``physics_*.csv`` from ``best/predictions.npz`` /
``best/physics.json``. Problems with the inputs (truncated or missing files, other
experiments, duplicate runs) are printed to stderr as ``warning: <file>: ...`` and listed in the
report, which covers what is valid; one experiment per report (the one with the most runs
unless ``--experiment`` names it). Exit status: 0 report written, 1 no valid run, 2 bad flags.
Definitions of every column: :mod:`reports.tables`, :mod:`reports.rundir`, :mod:`reports.physics`.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import warnings

import pandas as pd

from mlpf_tf.configbase import atomic_write_text
from reports import physics, plots, tables
from reports.rundir import PHYSICS_FILE, PREDICTIONS_FILE, Run, read_runs, select_experiment


def fmt(value, digits: int = 4) -> str:
    """A table cell: numbers to ``digits`` significant figures, inf as 'not reached'."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "not reached" if value > 0 else "-inf"
        if value.is_integer() and abs(value) < 1e6:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value).replace("|", "\\|")


def markdown_table(df: pd.DataFrame, columns: list[str] | None = None) -> str:
    if df.empty:
        return "_(no rows)_\n"
    columns = columns or list(df.columns)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, row in df.iterrows():
        cells = []
        for c in columns:
            v = row[c]
            cells.append(fmt(v.item() if hasattr(v, "item") else v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(df: pd.DataFrame, path: str) -> None:
    atomic_write_text(path, df.to_csv(index=False))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m reports.report",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, metavar="DIR",
                   help="run directories, or directories that hold run directories")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--target_loss", type=float, default=None,
                   help="target validation loss (default: the --target_quantile of the pooled "
                        "final losses of all runs at each scale)")
    p.add_argument("--target_quantile", type=float, default=tables.TARGET_QUANTILE,
                   help="quantile of the pooled final losses that sets the default target")
    p.add_argument("--scale", choices=tables.SCALES, default="nodes",
                   help="what a scale is: nodes held or concurrent workers")
    p.add_argument("--axis", choices=tuple(tables.AXES), default=tables.DEFAULT_AXIS,
                   help="node-hours for budgets and anytime curves: allocated (every node "
                        "held, idle or not; the budget's axis) or trial (busy epochs only)")
    p.add_argument("--baseline_tuner", default="random",
                   help="tuner that sets the default target and the speedup baseline")
    p.add_argument("--experiment", default=None,
                   help="experiment to report (default: the one with most runs)")
    p.add_argument("--jet_ptmin", type=float, default=physics.DEFAULT_JET_PTMIN,
                   help="minimum jet pT in GeV for the jet response")
    args = p.parse_args(argv)
    if not 0.0 < args.target_quantile < 1.0:
        p.error(f"--target_quantile={args.target_quantile}: must be in (0, 1)")
    return args


def _physics_section(best: Run | None, out: str, args, notes: list[str]) -> list[str]:
    lines = ["## Physics of the best model", ""]
    if best is None:
        return lines + ["_No run has a `best/physics.json` or `best/predictions.npz`._", ""]
    lines.append(f"Best run: `{best.path}` (tuner {best.tuner}, seed {best.seed}, "
                 f"best {best.objective} {fmt(best.best_loss)}). Reco = model prediction, "
                 "baseline = rule-based PF (`ycand`); truth = generator particles (`ygen`).")
    lines.append("")
    npz = os.path.join(best.path, PREDICTIONS_FILE)
    if os.path.exists(npz):
        try:
            preds = physics.load_predictions(npz)
            result = physics.physics_tables(preds, jet_ptmin=args.jet_ptmin)
        except physics.PhysicsError as exc:
            notes.append(str(exc))
        else:
            for name, df in result.items():
                write_csv(df, os.path.join(out, f"physics_{name}.csv"))
            lines += [f"From `{PREDICTIONS_FILE}` ({preds.events} events).", "",
                      "Per-class efficiency and fake rate:", "",
                      markdown_table(_side_by_side(result["classes"],
                                                   ["efficiency", "fake_rate"])),
                      "pT and energy resolution, (reco - true) / true of matched particles:",
                      "", markdown_table(_resolution_side_by_side(result["resolution"])),
                      f"Jet pT response (anti-kT R=0.4, jets > {args.jet_ptmin:g} GeV, matched "
                      "by dR < 0.2) and MET response (median and IQR of reco / true):", "",
                      markdown_table(result["response"]), ""]
    js = os.path.join(best.path, PHYSICS_FILE)
    if os.path.exists(js):
        try:
            table = physics.physics_json_table(physics.read_physics_json(js))
        except physics.PhysicsError as exc:
            notes.append(str(exc))
        else:
            write_csv(table, os.path.join(out, "physics_json.csv"))
            wide = table.pivot_table(index=["metric", "class"], columns="reco", values="value",
                                     aggfunc="first").reset_index()
            lines += [f"From `{PHYSICS_FILE}` (computed by the search runner):", "",
                      markdown_table(wide), ""]
    return lines


def _target_label(chosen: dict, q: float) -> str:
    """Legend text for the target line, from how the targets were chosen."""
    how = {h for _, h in chosen.values()}
    if how == {"--target_loss"}:
        return "target (--target_loss)"
    return ("target: median of pooled finals" if q == 0.5 else
            f"target: {q:g} quantile of pooled finals")


def fmt_ci(row, name: str, digits: int = 3) -> str:
    """``median [low, high]`` of a summary figure with its bootstrap 95% interval."""
    point, lo, hi = (row[name], row[f"{name}_lo"], row[f"{name}_hi"])
    if isinstance(point, float) and math.isnan(point):
        return "-"
    return f"{_end(point, digits)} [{_end(lo, digits)}, {_end(hi, digits)}]"


def _end(value: float, digits: int) -> str:
    value = float(value)
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return fmt(value, digits)


def _to_target_cell(row) -> str:
    """Node-hours to target: median [interval] and how many seeds reached it; 'not reached
    (k of n)' when the median is not finite (never averaged as 0)."""
    k, n = int(row["reached"]), int(row["seeds"])
    if not math.isfinite(row["node_hours_to_target"]):
        return f"not reached ({k} of {n})"
    return f"{fmt_ci(row, 'node_hours_to_target')} ({k} of {n})"


def _speedup_cell(row, baseline: str) -> str:
    name = f"speedup_vs_{baseline}"
    pairs = int(row["speedup_pairs"])
    if not pairs:
        return "- (no seed pair reached)"
    return f"{fmt_ci(row, name)} ({pairs} pairs)"


def headline_table(summary: pd.DataFrame, baseline: str) -> str:
    """Tuner x scale: every figure as median over seeds with its bootstrap 95% interval."""
    loss_cols = [c for c in summary.columns if c.startswith("loss_at_") and
                 not c.endswith(("_lo", "_hi"))]
    head = (["tuner", "scale", "n", "final loss"] + [c.replace("loss_at_", "loss at ")
                                                     .replace("pct", "%") for c in loss_cols]
            + ["node-hours to target (reached)", f"speedup vs {baseline}", "stopped by"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, row in summary.iterrows():
        cells = [str(row["tuner"]), fmt(row["scale"]), str(int(row["seeds"])),
                 fmt_ci(row, "final_loss")] + [fmt_ci(row, c) for c in loss_cols] + [
            _to_target_cell(row), _speedup_cell(row, baseline), str(row["stopped_by"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


#: seeds (or seed pairs) below which no interval is taken as evidence of a difference
MIN_EVIDENCE = 5


def verdict(summary: pd.DataFrame, baseline: str) -> str:
    """One paragraph: what these runs can and cannot support.

    Non-overlapping intervals count as evidence only with at least ``MIN_EVIDENCE`` seeds
    (pairs, for speedups): a bootstrap over fewer values can only return those values, so two
    seeds that agree give an interval of almost zero width.
    """
    parts = []
    seeds = sorted({int(n) for n in summary["seeds"]})
    scales = sorted({float(s) for s in summary["scale"]})
    for scale in scales:
        rows = summary[summary["scale"] == scale]
        enough = rows[rows["seeds"] >= MIN_EVIDENCE]
        separated = []
        for _, a in enough.iterrows():
            for _, b in enough.iterrows():
                if a["final_loss_hi"] < b["final_loss_lo"]:
                    separated.append(f"{a['tuner']} below {b['tuner']}")
        speed = [f"{r['tuner']} ({fmt_ci(r, f'speedup_vs_{baseline}')})"
                 for _, r in rows.iterrows() if not tables.is_tuner(r["tuner"], baseline)
                 and r["speedup_pairs"] >= MIN_EVIDENCE
                 and (r[f"speedup_vs_{baseline}_lo"] > 1 or r[f"speedup_vs_{baseline}_hi"] < 1)]
        if enough.empty:
            text = (f"at scale {fmt(scale)} no tuner has {MIN_EVIDENCE} seeds, too few for "
                    "its intervals to rank the tuners: read the table as a check of the "
                    "pipeline, not a ranking")
        elif separated:
            text = (f"at scale {fmt(scale)} the 95% intervals of the final loss separate "
                    + ", ".join(separated))
        else:
            text = (f"at scale {fmt(scale)} the 95% intervals of the final loss of all tuners "
                    "overlap, so these runs do not rank the tuners by final loss")
        text += ("; speedups whose interval excludes 1: " + ", ".join(speed) if speed
                 else f"; no speedup vs {baseline} rests on {MIN_EVIDENCE} or more seed pairs "
                 "with an interval that excludes 1")
        parts.append(text)
    n_text = "/".join(map(str, seeds))
    return (f"What these runs support: with {n_text} seed(s) per tuner and scale, "
            + "; ".join(parts) + ". They say nothing about scales not run "
            f"(run: {', '.join(fmt(s) for s in scales)}), and a ranking at this budget and "
            f"model size need not hold at another; intervals from fewer than {MIN_EVIDENCE} "
            "seeds are coarse (a bootstrap over 3 values can only take those values).")


def _baseline_name(runs: list[Run], baseline: str) -> str:
    """The baseline tuner as spelled in the runs (e.g. 'RandomSearch' for --baseline random)."""
    return next((r.tuner for r in runs if tables.is_tuner(r.tuner, baseline)), baseline)


def _resolution_side_by_side(res: pd.DataFrame) -> pd.DataFrame:
    """Rows quantity x class (classes with matches only), mean/std/n for model and ycand."""
    res = res[res["n"] > 0]
    wide = res.pivot_table(index=["quantity", "class"], columns="reco",
                           values=["mean", "std", "n"], aggfunc="first")
    wide.columns = [f"{m} ({r})" for m, r in wide.columns]
    order = [c for c in ("mean (model)", "std (model)", "n (model)", "mean (ycand)",
                         "std (ycand)", "n (ycand)") if c in wide.columns]
    rank = {name: i for i, name in enumerate(physics.CLASS_NAMES)}
    wide = wide[order].reset_index()
    wide["_order"] = [(q != "pt", rank.get(c, 99)) for q, c in zip(wide["quantity"],
                                                                    wide["class"])]
    return wide.sort_values("_order").drop(columns="_order")


def _side_by_side(classes: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    wide = classes.pivot(index="class", columns="reco", values=metrics)
    wide.columns = [f"{m} ({r})" for m, r in wide.columns]
    order = [c for c in physics.CLASS_NAMES if c in wide.index]
    return wide.loc[order].reset_index()


def run(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    out = args.out
    os.makedirs(out, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collected as messages and printed once below
        runs, notes = read_runs(args.runs)
        experiment, kept, more = select_experiment(runs, args.experiment)
    notes += more
    left_out = [r for r in runs if r not in kept]
    baseline = args.baseline_tuner

    md = [f"# HPO benchmark report: {experiment or 'no experiment'}", "",
          f"Generated {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M UTC} from "
          f"{len(kept)} run(s); scale = {args.scale}; node-hour axis = {args.axis} "
          f"({plots.AXIS_LABELS[args.axis]}).", ""]
    status = 0
    if not kept:
        status = 1
        md += ["**No valid run directory was found.**", ""]
    else:
        if any(r.simulated for r in kept):
            md += ["_Runs marked `simulated` were replayed on a simulated cluster._", ""]
        q = args.target_quantile
        summary = tables.summary_table(kept, args.scale, args.axis, baseline, args.target_loss,
                                       target_quantile=q)
        runs_df = tables.run_table(kept, args.scale)
        scaling = tables.scaling_table(kept, args.scale, args.axis, baseline, args.target_loss,
                                       target_quantile=q)
        curves = tables.anytime_curves(kept, args.scale, args.axis)
        chosen = tables.target_losses(kept, args.scale, args.target_loss, q)
        targets = {s: t for s, (t, _) in chosen.items()}
        for name, df in (("summary", summary), ("runs", runs_df), ("scaling", scaling),
                         ("anytime", curves)):
            write_csv(df, os.path.join(out, f"{name}.csv"))
        objective = kept[0].objective
        md += ["## Final loss and node-hours to target (tuner x scale)", "",
               f"Every figure is the median over n seeds with its bootstrap 95% interval in "
               f"brackets, on {args.axis} node-hours. A trial's result is its "
               f"{objective} at its last epoch; a run's final loss is its best trial result. "
               "Target loss per scale, fixed by a rule before looking at any tuner: " + "; ".join(
                   f"{fmt(sc)} {args.scale}: {fmt(t)} ({how})" for sc, (t, how) in
                   chosen.items()) + ".", "",
               headline_table(summary, baseline), "", verdict(summary, baseline), "",
               "## Compute, utilisation and trials", "",
               markdown_table(summary, ["tuner", "scale", "seeds", "budget_node_hours",
                                        "allocated_node_hours", "trial_node_hours",
                                        "utilisation", "wall_hours", "best_epoch_loss",
                                        "trials_started", "trials_completed",
                                        "trials_failed"]), ""]
        if len(curves) and curves["median"].map(math.isfinite).any():
            plots.anytime_plot(curves, os.path.join(out, "anytime.png"), axis=args.axis,
                               scale_name=args.scale, targets=targets, objective=objective,
                               title=f"{experiment}: best {objective} so far vs node-hours",
                               baseline=_baseline_name(kept, baseline),
                               target_label=_target_label(chosen, q))
            md += ["## Anytime performance", "", "![anytime](anytime.png)", ""]
        md += ["## Scaling", "", markdown_table(scaling), ""]
        if scaling["scale"].nunique() > 1 and scaling["wall_hours_to_target"].map(
                math.isfinite).any():
            plots.scaling_plot(scaling, os.path.join(out, "scaling.png"), scale_name=args.scale,
                               baseline=_baseline_name(kept, baseline))
            md += ["![scaling](scaling.png)", ""]
        with_physics = [r for r in kept if r.has_physics and math.isfinite(r.best_loss)]
        best = min(with_physics, key=lambda r: r.best_loss) if with_physics else None
        md += _physics_section(best, out, args, notes)
        md += ["## Runs", "", markdown_table(runs_df, [
            "search_id", "tuner", "seed", "scale", "best_loss", "best_epoch_loss", "stopped_by",
            "allocated_node_hours", "trial_node_hours", "utilisation", "setup_seconds",
            "trace_seconds", "wall_hours", "trials_started", "trials_completed",
            "trials_failed", "timing_source"]), ""]
        md += ["## Definitions", "",
               "- result of a trial: its objective at its last epoch (the epoch its checkpoint "
               "holds), as the oracles rank it; final loss of a run: its best trial result; "
               "best_epoch_loss (secondary): the best objective of any epoch, which may belong "
               "to no saved model;",
               "- allocated node-hours (the headline axis and the budget's): run wall time x "
               "every node held, the chief's own node included when it has one (from mllog); "
               "trial node-hours: sum over epochs of epoch wall seconds x nodes / 3600; "
               "utilisation = trial / allocated; setup_seconds: trial start to first epoch "
               "(build, data, restore), trace_seconds: first epoch minus the median later one;",
               "- target loss: " + ("given by --target_loss" if args.target_loss is not None
                                     else f"the {q:g} quantile of the pooled final losses of "
                                     "all runs at each scale") + "; node-hours to target counts "
               "runs that never reach it as infinite ('not reached (k of n)' when the median "
               "is not finite, never averaged as 0);",
               f"- speedup vs {baseline}: per seed, {baseline}'s node-hours to target / the "
               "tuner's (paired: seed s of every tuner sees the same data order and first "
               "configurations); seeds where neither reached it have no ratio;",
               "- intervals: bootstrap 95% percentile intervals of the median over seeds "
               f"({tables.stats.RESAMPLES} resamples);",
               "- stopped by: the limit that ended each search (node_hour_budget in a fair "
               "comparison);",
               "- scaling uses one target for all scales (the pooled target over all runs); "
               "efficiency = speedup / (scale / smallest scale).", ""]
    for text in notes:
        print(f"warning: {text}", file=sys.stderr)
    md += ["## Warnings", ""]
    md += [f"- {text}" for text in notes] if notes else ["_none_"]
    md.append("")
    if left_out:
        md += ["## Runs left out", ""] + [f"- `{r.path}` (experiment {r.experiment})"
                                         for r in left_out] + [""]
    atomic_write_text(os.path.join(out, "report.md"), "\n".join(md))
    print(f"report written to {os.path.join(out, 'report.md')}")
    if status:
        print(f"error: no valid run directory under {' '.join(args.runs)}", file=sys.stderr)
    return status


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
