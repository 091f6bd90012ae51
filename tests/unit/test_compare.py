"""benchmark.compare: planning, progress, ETA, failure handling and resume, with fake searches.

The searches here are tiny Python child processes that write (or fail to write) a run
directory, so the real child-process, timeout and bookkeeping paths run in well under a second
each.
"""

from __future__ import annotations

import io
import json
import os
import sys
import textwrap
import time

import pytest

from benchmark import compare, experiments

FAKE = textwrap.dedent("""
    import json, os, sys, time
    run_dir, mode = sys.argv[1], sys.argv[2]
    os.makedirs(run_dir, exist_ok=True)
    open(os.path.join(run_dir, "params.yaml"), "w").write("search: {}\\n")
    if mode == "sleep":
        time.sleep(60)
    with open(os.path.join(run_dir, "trials.jsonl"), "a") as fh:
        for i, loss in enumerate([5.0, 3.0]):
            fh.write(json.dumps({"event": "epoch", "trial_id": str(i),
                                 "metrics": {"val_loss": loss}}) + "\\n")
            fh.write(json.dumps({"event": "trial_end", "trial_id": str(i),
                                 "status": "COMPLETED",
                                 "metrics": {"val_loss": loss}}) + "\\n")
    if mode == "fail":
        sys.exit(3)
    open(os.path.join(run_dir, "best.json"), "w").write("{}")
""")

FAKE_PHYSICS = textwrap.dedent("""
    import os, sys
    best = os.path.join(sys.argv[1], "best")
    os.makedirs(best, exist_ok=True)
    for name in ("predictions.npz", "physics.json"):
        open(os.path.join(best, name), "w").write("x")
""")


class FakeSearches:
    """command(search, runs_dir, resume) for run_searches; records every call."""

    def __init__(self, modes: dict[str, str]):
        self.modes = modes
        self.calls: list[tuple[str, bool]] = []

    def __call__(self, search, runs_dir, resume):
        self.calls.append((search.run_name, resume))
        mode = self.modes.get(search.tuner, "ok")
        return [sys.executable, "-c", FAKE, os.path.join(runs_dir, search.run_name), mode]


def fake_physics(run_dir):
    return [sys.executable, "-c", FAKE_PHYSICS, run_dir]


def test_plan_runs_every_tuner_at_each_scale_and_seed():
    searches = compare.plan("compare", ["random", "asha"], [1, 2], [1, 7])
    assert [s.run_name for s in searches] == [
        "compare-random-w1-s1", "compare-asha-w1-s1", "compare-random-w1-s7",
        "compare-asha-w1-s7", "compare-random-w2-s1", "compare-asha-w2-s1",
        "compare-random-w2-s7", "compare-asha-w2-s7"]
    assert compare.search_command(searches[5], "/r", True, python="py") == [
        "py", "-m", "benchmark.run", "--experiment=compare", "--tuner=asha", "--workers=2",
        "--seed=1", "--train.seed=1", "--output_dir=/r", "--run_name=compare-asha-w2-s1",
        "--resume"]
    assert compare.auto_concurrency([1], 0, cores=2) == 2
    assert compare.auto_concurrency([1, 2], 0, cores=2) == 1
    assert compare.auto_concurrency([4], 0, cores=2) == 1
    assert compare.auto_concurrency([1], 3, cores=2) == 3


def test_progress_of_counts_ended_trials_and_best_trial_result(tmp_path):
    """A trial's result is its trial_end objective (its last epoch), not its best epoch; a
    failed trial has none."""
    lines = [{"event": "trial_start", "trial_id": "0"},
             {"event": "epoch", "trial_id": "0", "metrics": {"val_loss": 0.5}},
             {"event": "epoch", "trial_id": "0", "metrics": {"val_loss": 4.0}},
             {"event": "trial_end", "trial_id": "0", "status": "COMPLETED",
              "metrics": {"val_loss": 4.0}},
             {"event": "epoch", "trial_id": "1", "metrics": {"val_loss": 0.1}},
             {"event": "trial_end", "trial_id": "1", "status": "FAILED",
              "metrics": {"val_loss": 0.1}},
             {"event": "trial_end", "trial_id": "2", "status": "COMPLETED",
              "metrics": {"val_loss": float("nan")}}]
    text = "\n".join(json.dumps(r) for r in lines) + '\n{"event": "epoch", "metr'
    (tmp_path / "trials.jsonl").write_text(text)
    assert compare.progress_of(str(tmp_path)) == (3, 4.0)
    assert compare.progress_of(str(tmp_path / "missing")) == (0, None)


def test_eta_scales_expectations_by_what_finished_searches_took():
    assert compare.expected_seconds(0.0125, 1) == pytest.approx(45 + 30)
    assert compare.expected_seconds(0.0125, 2) == pytest.approx(22.5 + 30)
    # nothing finished: expected times as they are
    assert compare.eta_seconds([10, 20], 10, 4, 0, 0) == pytest.approx(6 + 30)
    # finished searches took twice their expectation
    assert compare.eta_seconds([10, 20], 10, 4, 20, 40) == pytest.approx(16 + 60)
    # running longer than expected: never negative
    assert compare.eta_seconds([], 10, 50, 0, 0) == 0


def test_progress_line_and_display():
    s = compare.Search("compare", "asha_bo", 2, 1)
    assert compare.progress_line(3, 8, s, 5, 27.78123, 63.2, 421) == (
        "[3/8] asha_bo w2 s1: 5 trials done, best val_loss 27.78, 1m03s elapsed | "
        "overall ETA 7m01s")
    assert "best val_loss -," in compare.progress_line(1, 8, s, 0, None, 0, 0)
    out = io.StringIO()
    display = compare.Display(out, min_interval=3600)
    for key in (1, 1, 1, 2, 2):
        display.update(f"line {key}", key=key)
    display.finish("done")
    assert out.getvalue().splitlines() == ["line 1", "line 2", "done"]


def test_failed_search_is_recorded_and_the_others_run_then_rerun_resumes(tmp_path):
    out_dir = str(tmp_path / "cmp")
    searches = compare.plan("compare", ["random", "hyperband", "asha"], [1], [1])
    # asha is complete before the comparison starts: it is skipped
    done = os.path.join(out_dir, "runs", "compare-asha-w1-s1")
    os.makedirs(done)
    open(os.path.join(done, "best.json"), "w").write("{}")
    fake = FakeSearches({"hyperband": "fail"})
    out = io.StringIO()
    outcomes = compare.run_searches(searches, out_dir, budget_node_hours=0.001, command=fake,
                                    physics=fake_physics, out=out, poll_seconds=0.05)
    assert [(o.run_name, o.status) for o in outcomes] == [
        ("compare-random-w1-s1", "ok"), ("compare-hyperband-w1-s1", "failed"),
        ("compare-asha-w1-s1", "skipped")]
    assert fake.calls == [("compare-random-w1-s1", False), ("compare-hyperband-w1-s1", False)]
    ok, failed, skipped = outcomes
    assert (ok.trials, ok.best, ok.returncode, ok.physics) == (2, 3.0, 0, "written")
    assert ok.wall_seconds > 0 and ok.cpu_seconds > 0
    assert failed.returncode == 3 and failed.physics is None
    assert failed.message.startswith("exit code 3; see ") and failed.message.endswith(
        "compare-hyperband-w1-s1.log")
    assert skipped.physics == "written"  # the physics step ran for the complete run
    text = out.getvalue()
    assert "[2/3] hyperband w1 s1: FAILED" in text and "[3/3] asha w1 s1: complete, skipped" in text
    with open(os.path.join(out_dir, "compare.json")) as fh:
        state = json.load(fh)
    assert [s["status"] for s in state["searches"]] == ["ok", "failed", "skipped"]
    assert state["planned"] == [s.run_name for s in searches]
    with open(failed.log) as fh:
        assert fh.readline().startswith("$ ")

    # rerun: the complete ones are skipped (times carried over), the failed one resumes
    fake2 = FakeSearches({})
    again = compare.run_searches(searches, out_dir, budget_node_hours=0.001, command=fake2,
                                 physics=None, out=io.StringIO(), poll_seconds=0.05)
    assert fake2.calls == [("compare-hyperband-w1-s1", True)]
    assert [o.status for o in again] == ["skipped", "ok", "skipped"]
    assert again[0].wall_seconds == pytest.approx(ok.wall_seconds)
    assert again[1].physics == "skipped"


def test_concurrent_searches_each_get_their_own_times(tmp_path):
    """Two slots: two searches run side by side; each outcome has its own wall and CPU time
    and compare.json lists them in plan order."""
    searches = compare.plan("compare", ["random", "hyperband", "asha"], [1], [1, 2])
    start = time.monotonic()
    outcomes = compare.run_searches(searches, str(tmp_path), budget_node_hours=0.001,
                                    command=FakeSearches({}), physics=None,
                                    out=io.StringIO(), poll_seconds=0.05, concurrency=2)
    assert [o.run_name for o in outcomes] == [s.run_name for s in searches]
    assert all(o.status == "ok" and o.trials == 2 and o.best == 3.0 for o in outcomes)
    assert all(o.cpu_seconds > 0 for o in outcomes)
    assert time.monotonic() - start < 60
    with pytest.raises(ValueError, match="concurrency must be >= 1"):
        compare.run_searches(searches, str(tmp_path), budget_node_hours=0.001, concurrency=0)


def test_a_search_over_its_timeout_is_stopped_and_recorded(tmp_path):
    searches = compare.plan("compare", ["random", "asha"], [1], [1])
    start = time.monotonic()
    outcomes = compare.run_searches(searches, str(tmp_path), budget_node_hours=0.001,
                                    command=FakeSearches({"random": "sleep"}), physics=None,
                                    timeout=1.0, out=io.StringIO(), poll_seconds=0.05)
    assert time.monotonic() - start < 30
    assert [o.status for o in outcomes] == ["timeout", "ok"]
    assert outcomes[0].returncode is None
    assert "stopped after --search_timeout=1 s" in outcomes[0].message


def test_budget_is_the_presets_and_required():
    assert compare.budget_of("compare", None) == experiments.COMPARE_NODE_HOURS
    assert compare.budget_of("smoke", 0.5) == 0.5
    with pytest.raises(ValueError, match=r"--experiment=smoke: no search.node_hour_budget"):
        compare.budget_of("smoke", None)


def test_setup_section_lists_every_search():
    outcomes = [compare.Outcome("a", "ok", 0, 12.4, 30.2, 3, 1.5, "written"),
                compare.Outcome("b", "failed", 1, 2.0, 1.0, 0, None)]
    lines = compare.setup_section("compare", 0.0125, [1, 2], outcomes, 75, [1, 2, 3], 2)
    assert "same budget of 0.0125 allocated node-hours (45 node-seconds" in lines[2]
    assert "seeds 1, 2, 3 per tuner and scale" in lines[2]
    assert "and no other limit" in lines[2] and "2 search(es) ran side by side" in lines[2]
    assert "1m15s wall; 31 s CPU" in lines[4]
    assert lines[-3:] == ["| a | ok | 3 | 1.5 | 12 | 30 | written |",
                          "| b | failed | 0 | - | 2 | 1 | - |", ""]
