"""reports.tables and reports.report on hand-made runs whose numbers are worked out by hand.

A trial's result is its val_loss at its last epoch; a run's final loss is its best result.
Scale 1 node (one worker, one 1-node-hour epoch per trial, 4 trials, run held 4.5 h, so the
k-th trial ends at k node-hours on the trial axis and the allocated axis alike):
  random  seed 1: (1.0 FAILED) 0.8 0.9 0.7 -> final 0.70
          seed 2: 0.9 0.85 0.6 0.95         -> final 0.60
          seed 3: 1.2 0.75 0.75 0.8         -> final 0.75
  asha    seed 1: 0.9 0.65 0.5 0.55         -> final 0.50
          seed 2: (0.8 0.7 FAILED) 0.6 0.6  -> final 0.60
          seed 3: 1.0 0.95 0.72 0.68        -> final 0.68
  target = median of the 6 pooled finals (0.5 0.6 0.6 0.68 0.7 0.75) = 0.64;
  random to target: never, 3, never -> median not reached (1 of 3);
  asha: 3, 3, never -> median 3 (2 of 3); paired speedup asha: seed 1 inf / 3 = inf,
  seed 2 3 / 3 = 1, seed 3 never / never = no pair -> median of (1, inf) = inf.
Scale 2 nodes (two 1-node workers, 0.5 node-hour epochs, run held 4000 s), random only:
  seed 1: trial ends 3600 s (0.7) and 3700 s (0.65) -> final 0.65
  seed 2: 3600 s (0.72) and 3700 s (0.6)            -> final 0.6; target at 2 nodes = 0.625.
"""

import math
import os

import pandas as pd
import pytest

from reports import report, tables
from reports.rundir import read_runs

try:  # the shared run-directory builder lives in test_rundir.py
    from tests.unit.test_rundir import make_run
except ImportError:  # pytest run outside the repository root
    from test_rundir import make_run

SCALE1 = {
    ("random", 1): [1.0, 0.8, 0.9, 0.7], ("random", 2): [0.9, 0.85, 0.6, 0.95],
    ("random", 3): [1.2, 0.75, 0.75, 0.8], ("asha", 1): [0.9, 0.65, 0.5, 0.55],
    ("asha", 2): [0.8, 0.7, 0.6, 0.6], ("asha", 3): [1.0, 0.95, 0.72, 0.68],
}
FAILED = {("random", 1): 1, ("asha", 2): 2}
SCALE2 = {1: [(1800, 1.0), (1900, 0.9), (3600, 0.7), (3700, 0.65)],
          2: [(1800, 0.8), (1900, 0.95), (3600, 0.72), (3700, 0.6)]}


def build(root, experiment="exp"):
    for (tuner, seed), losses in SCALE1.items():
        failed = FAILED.get((tuner, seed), 0)
        make_run(root, f"{tuner}_n1_s{seed}", tuner=tuner, seed=seed, nodes=1, workers=1,
                 experiment=experiment, budget=4, run_seconds=4.5 * 3600,
                 epochs=[(f"t{k}", 3600 * (k + 1), 3600, 1, v) for k, v in enumerate(losses)],
                 ends=[(f"t{k}", "FAILED" if k < failed else "COMPLETED") for k in range(4)])
    for seed, points in SCALE2.items():
        make_run(root, f"random_n2_s{seed}", tuner="random", seed=seed, nodes=2, workers=2,
                 experiment=experiment, budget=2, run_seconds=4000,
                 epochs=[(f"w{k % 2}", t, 1800, 1, v) for k, (t, v) in enumerate(points)])


@pytest.fixture
def runs(tmp_path):
    build(tmp_path)
    found, messages = read_runs([tmp_path])
    assert messages == []
    return found


def row(df, tuner, scale):
    sel = df[(df["tuner"] == tuner) & (df["scale"] == scale)]
    assert len(sel) == 1
    return sel.iloc[0]


def test_summary_numbers_match_hand_computation(runs):
    s = tables.summary_table(runs)
    r, a = row(s, "random", 1.0), row(s, "asha", 1.0)
    assert (r["seeds"], a["seeds"]) == (3, 3)
    assert r["final_loss"] == pytest.approx(0.7)
    # bootstrap medians of 3 values can only be those values; both ends are reachable > 2.5%
    assert (r["final_loss_lo"], r["final_loss_hi"]) == pytest.approx((0.6, 0.75))
    assert a["final_loss"] == pytest.approx(0.6)
    assert (a["final_loss_lo"], a["final_loss_hi"]) == pytest.approx((0.5, 0.68))
    assert r["target_loss"] == a["target_loss"] == pytest.approx(0.64)
    assert (r["reached"], a["reached"]) == (1, 2)
    assert math.isinf(r["node_hours_to_target"])  # 1 of 3 reached: not reached
    assert a["node_hours_to_target"] == pytest.approx(3.0)
    assert a["node_hours_to_target_lo"] == pytest.approx(3.0)
    assert math.isinf(a["node_hours_to_target_hi"])
    assert r["speedup_vs_random"] == pytest.approx(1.0) and r["speedup_pairs"] == 1
    assert math.isinf(a["speedup_vs_random"]) and a["speedup_pairs"] == 2
    assert a["wall_hours_to_target"] == pytest.approx(3.0)
    # budget 4 node-hours: best result known after 1, 2 and 4 node-hours
    assert r["budget_node_hours"] == 4
    assert (r["loss_at_25pct"], r["loss_at_50pct"], r["loss_at_100pct"]) == pytest.approx(
        (1.2, 0.8, 0.7))
    assert (a["loss_at_25pct"], a["loss_at_50pct"], a["loss_at_100pct"]) == pytest.approx(
        (1.0, 0.95, 0.6))
    assert (r["trial_node_hours"], r["allocated_node_hours"], r["wall_hours"]) == pytest.approx(
        (4.0, 4.5, 4.5))
    assert (a["trials_started"], a["trials_completed"], a["trials_failed"]) == (4, 4, 0)
    r2 = row(s, "random", 2.0)
    assert r2["target_loss"] == pytest.approx(0.625)
    assert r2["final_loss"] == pytest.approx(0.625)
    # seed 1 never gets to 0.625, seed 2 at 3700 s x 2 nodes: the median of (that, never) is
    # "never"
    assert math.isinf(r2["node_hours_to_target"]) and r2["reached"] == 1
    assert r2["allocated_node_hours"] == pytest.approx(4000 * 2 / 3600)


def test_run_is_ranked_by_last_epoch_not_best_epoch(tmp_path):
    """A trial that dips to 0.3 at epoch 2 and ends at 0.9 has result 0.9; the run's final
    loss is the other trial's 0.5, and the dip only shows in best_epoch_loss."""
    make_run(tmp_path, "dip", epochs=[("a", 3600, 3600, 1, 0.8), ("a", 7200, 3600, 1, 0.3),
                                      ("a", 10800, 3600, 1, 0.9), ("b", 14400, 3600, 1, 0.5)])
    (run,), _ = read_runs([tmp_path])
    assert run.results["objective"].tolist() == pytest.approx([0.9, 0.5])
    assert run.best_loss == pytest.approx(0.5)
    assert run.best_epoch_loss == pytest.approx(0.3)
    assert tables.loss_at(run, 3.0, "trial") == pytest.approx(0.9)  # a has ended at 0.9
    assert math.isinf(tables.time_to_target(run, 0.3)[0])  # the dip is no model
    df = tables.run_table([run])
    assert (df.loc[0, "best_loss"], df.loc[0, "best_epoch_loss"]) == pytest.approx((0.5, 0.3))


def test_run_table_counts_and_utilisation(runs):
    df = tables.run_table(runs).set_index("search_id")
    assert df.loc["random_n1_s1", ["trials_started", "trials_completed", "trials_failed"]
                  ].tolist() == [4, 3, 1]
    assert df.loc["asha_n1_s2", "trials_failed"] == 2
    assert df.loc["asha_n1_s1", "utilisation"] == pytest.approx(4 / 4.5)
    assert df.loc["asha_n1_s1", "setup_seconds"] == pytest.approx(4 * 60.0)


def test_target_override_and_both_axes(runs):
    s = tables.summary_table(runs, target_loss=0.6)
    assert row(s, "asha", 1.0)["node_hours_to_target"] == pytest.approx(3.0)  # 3, 3, never
    assert math.isinf(row(s, "random", 1.0)["node_hours_to_target"])  # only seed 2 gets there
    assert math.isinf(row(s, "asha", 1.0)["speedup_vs_random"])
    seed2 = next(r for r in runs if r.search_id == "random_n2_s2")
    # 2 nodes held: seed 2 reaches 0.625 at 3700 s -> 3700 * 2 / 3600 allocated node-hours,
    # after 4 epochs of 0.5 node-hours of trial time
    assert tables.time_to_target(seed2, 0.625) == pytest.approx(
        (3700 * 2 / 3600, 3700 / 3600))
    assert tables.time_to_target(seed2, 0.625, "trial") == pytest.approx((2.0, 3700 / 3600))


def test_even_number_of_seeds_gives_a_finite_target(runs):
    """Two seeds of one tuner: the old rule (median of Random's own bests) put the target
    between them, unreachable by one seed; the pooled quantile over all runs is finite and
    reached by at least one run whatever the number of seeds."""
    two = [r for r in runs if r.nodes == 2]
    ((target, how),) = tables.target_losses(two, "nodes").values()
    assert target == pytest.approx(0.625) and "quantile" in how
    s = tables.summary_table(two)
    assert row(s, "random", 2.0)["reached"] == 1
    four = [r for r in runs if r.nodes == 1 and r.seed in (1, 2)]  # 2 seeds x 2 tuners
    ((target, _),) = tables.target_losses(four, "nodes").values()
    assert target == pytest.approx(0.6)  # finals 0.5 0.6 0.6 0.7
    assert math.isfinite(target)
    with pytest.raises(ValueError, match="target_quantile"):
        tables.target_losses(four, "nodes", q=1.0)


def test_scaling_uses_one_target_and_reports_efficiency(runs):
    sc = tables.scaling_table(runs, target_loss=0.7)
    r1, r2 = row(sc, "random", 1.0), row(sc, "random", 2.0)
    assert r1["target_loss"] == r2["target_loss"] == pytest.approx(0.7)
    assert r1["wall_hours_to_target"] == pytest.approx(4.0)  # 4, 3, never
    assert r2["wall_hours_to_target"] == pytest.approx((3600 + 3700) / 2 / 3600)
    assert r2["speedup"] == pytest.approx(4.0 / ((3600 + 3700) / 2 / 3600))
    assert r2["efficiency"] == pytest.approx(r2["speedup"] / 2)
    assert row(sc, "asha", 1.0)["efficiency"] == pytest.approx(1.0)
    assert tables.scaling_table(runs)["target_loss"].iloc[0] == pytest.approx(0.625)


def test_anytime_curve_median_and_band(runs):
    c = tables.anytime_curves(runs, axis="trial", points=5)  # grid 0..4 node-hours at 1 node
    a = c[(c["scale"] == 1.0) & (c["tuner"] == "asha")].set_index("node_hours")
    assert math.isinf(a.loc[0.0, "median"])
    assert a.loc[1.0, "median"] == pytest.approx(1.0)  # 0.9, none yet, 1.0
    assert (a.loc[2.0, "q25"], a.loc[2.0, "median"]) == pytest.approx((0.8, 0.95))
    assert math.isinf(a.loc[2.0, "q75"])
    assert a.loc[4.0, "median"] == pytest.approx(0.6)
    alloc = tables.anytime_curves(runs, points=10)
    assert alloc["node_hours"].max() == pytest.approx(4.5)  # the whole allocation is shown


def test_quantile_handles_never_reached():
    assert tables.quantile([1.0, 2.0, math.inf], 0.5) == 2.0
    assert math.isinf(tables.quantile([1.0, math.inf, math.inf], 0.5))
    assert tables.quantile([3.0, 1.0], 0.25) == pytest.approx(1.5)
    assert math.isnan(tables.quantile([], 0.5))


def test_report_cli_writes_everything_and_names_bad_files(tmp_path, capsys):
    root = tmp_path / "runs"
    build(root)
    bad = make_run(root, "random_n1_s9", seed=9, epochs=[("t0", 3600, 3600, 1, 0.1)])
    with open(os.path.join(bad, "trials.jsonl"), "a") as fh:
        fh.write('{"v": 1, "event": "epo')
    lonely = make_run(root, "other_exp", experiment="zzz", epochs=[("t0", 60, 60, 1, 0.1)])
    gone = make_run(root, "no_log", tuner="asha", seed=7, with_mllog=False,
                    epochs=[("t0", 3600, 3600, 1, 0.9)])
    out = tmp_path / "out"
    # a target most runs reach, so that the scaling plot has points
    assert report.run(["--runs", str(root), "--out", str(out), "--target_loss", "0.7"]) == 0
    err = capsys.readouterr().err
    assert f"warning: {bad}/trials.jsonl: truncated last line skipped" in err
    assert f"warning: {lonely}/params.yaml: experiment 'zzz' differs" in err
    assert f"warning: {gone}/mllog.txt: missing" in err
    md = (out / "report.md").read_text()
    assert f"{bad}/trials.jsonl: truncated last line skipped" in md
    assert f"`{lonely}` (experiment zzz)" in md
    for name in ("summary.csv", "runs.csv", "scaling.csv", "anytime.csv", "anytime.png",
                 "scaling.png"):
        assert (out / name).stat().st_size > 0, name
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["tuner"]) == {"random", "asha"}
    # the valid part of the truncated run (seed 9, best 0.1) counts: 4 random seeds at 1 node
    r = summary[(summary["tuner"] == "random") & (summary["scale"] == 1)].iloc[0]
    assert r["seeds"] == 4 and r["final_loss"] == pytest.approx(0.65)
    assert "| asha | 1 | 4 | 0.6" in md
    assert "What these runs support:" in md and "allocated node-hours" in md


def test_report_cli_without_valid_runs_exits_1(tmp_path, capsys):
    assert report.run(["--runs", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "nothing: not a directory; run skipped" in err
    assert "error: no valid run directory" in err
    assert report.run(["--runs", "x", "--out", "y", "--scale", "gpus"]) == 2


def _summary_row(tuner, seeds, final, lo, hi, speed=(1.0, 1.0, 1.0), pairs=0):
    return {"tuner": tuner, "scale": 1.0, "seeds": seeds, "final_loss": final,
            "final_loss_lo": lo, "final_loss_hi": hi, "speedup_vs_random": speed[0],
            "speedup_vs_random_lo": speed[1], "speedup_vs_random_hi": speed[2],
            "speedup_pairs": pairs}


def test_verdict_needs_five_seeds_before_calling_a_difference():
    few = pd.DataFrame([_summary_row("random", 3, 1.0, 0.9, 1.1),
                        _summary_row("asha", 3, 0.5, 0.45, 0.55, (2.0, 1.8, 2.2), 2)])
    text = report.verdict(few, "random")
    assert "no tuner has 5 seeds" in text and "asha below" not in text
    assert "no speedup vs random rests on 5 or more seed pairs" in text
    many = pd.DataFrame([_summary_row("random", 5, 1.0, 0.9, 1.1),
                         _summary_row("asha", 5, 0.5, 0.45, 0.55, (2.0, 1.8, 2.2), 5)])
    text = report.verdict(many, "random")
    assert "separate asha below random" in text
    assert "speedups whose interval excludes 1: asha (2 [1.8, 2.2])" in text
