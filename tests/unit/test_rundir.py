"""reports.rundir: reading run directories, node-hour accounting, and every named warning.

``make_run`` writes a hand-made run directory (params.yaml, trials.jsonl, mllog.txt) and is
also used by the report table tests.
"""

import json
import math
import os

import pytest
import yaml

from reports import rundir
from tuners import mllog
from tuners.records import TrialRecorder

T0 = 1_700_000_000.0


def make_run(root, name, *, tuner="random", seed=1, nodes=1, workers=1, experiment="exp",
             epochs=(), ends=(), run_seconds=None, budget=None, with_mllog=True,
             simulated=False, search_id=None):
    """Write a run directory; returns its path.

    ``epochs``: (trial_id, end_seconds_after_start, wall_seconds, nodes, val_loss) in file order;
    a trial_start is written before a trial's first epoch and its trial_end (with the last
    epoch's metrics) right after its last one. ``ends``: (trial_id, status); when given, only
    the trials listed end (with that status); when empty, every trial ends COMPLETED.
    """
    path = os.path.join(os.fspath(root), name)
    os.makedirs(path, exist_ok=True)
    search_id = search_id or name
    params = {"experiment": experiment, "search_id": search_id, "simulated": simulated,
              "data": {}, "model": {}, "train": {},
              "search": {"tuner": tuner, "seed": seed, "node_hour_budget": budget or 0},
              "launch": {"workers": workers, "ranks_per_worker": 1, "ranks_per_node": 1,
                         "nodes": nodes}}
    with open(os.path.join(path, "params.yaml"), "w") as fh:
        yaml.safe_dump(params, fh)
    clock = [T0]
    rec = TrialRecorder(path, search_id, clock=lambda: clock[0])
    started = set()
    status_of = dict(ends)
    last_index = {e[0]: i for i, e in enumerate(epochs)}
    for i, (trial, end, wall, n, loss) in enumerate(epochs):
        if trial not in started:
            started.add(trial)
            clock[0] = T0 + end - wall
            rec.append("trial_start", trial, parent_id=None, hyperparameters={}, rung=0,
                       initial_epoch=0, target_epochs=1, nodes=n, ranks=n)
        clock[0] = T0 + end
        rec.append("epoch", trial, epoch=1, metrics={"loss": loss, "val_loss": loss},
                   wall_seconds=wall, nodes=n, ranks=n, node_hours=wall * n / 3600)
        if last_index[trial] == i and (not ends or trial in status_of):
            # the trial ends with its last epoch's metrics, as the trial runner writes it
            spent = sum(e[2] * e[3] for e in epochs if e[0] == trial) + 60.0  # + 1 min set-up
            rec.append("trial_end", trial, status=status_of.get(trial, "COMPLETED"),
                       metrics={"loss": loss, "val_loss": loss}, nodes=1, ranks=1,
                       node_hours=spent / 3600, setup_seconds=60.0)
    for trial, status in ends:
        if trial not in last_index:
            rec.append("trial_end", trial, status=status, metrics={}, nodes=1, ranks=1,
                       node_hours=60.0 / 3600, setup_seconds=60.0)
    if with_mllog:
        last = max([e[1] for e in epochs] or [0.0])
        stop = run_seconds if run_seconds is not None else last
        log = mllog.MLLogger(os.path.join(path, "mllog.txt"))
        log.event(mllog.NUMBER_OF_NODES, nodes, time_ms=int(T0 * 1000))
        log.start(mllog.RUN_START, time_ms=int(T0 * 1000))
        log.end(mllog.RUN_STOP, time_ms=int((T0 + stop) * 1000))
    return path


def test_reads_numbers_and_both_node_hour_accounts(tmp_path):
    path = make_run(tmp_path, "r1", nodes=2, workers=2, run_seconds=4000, epochs=[
        ("a", 1800, 1800, 1, 1.0), ("b", 1900, 1900, 1, 0.9), ("a", 3600, 1800, 1, float("nan")),
        ("b", 3700, 1800, 1, 0.65)], ends=[("a", "FAILED"), ("b", "COMPLETED")])
    run = rundir.read_run(path)
    assert run.warnings == []
    assert (run.tuner, run.seed, run.nodes, run.workers) == ("random", 1, 2.0, 2)
    assert run.best_loss == 0.65
    assert run.trial_node_hours == pytest.approx((1800 + 1900 + 1800 + 1800) / 3600)
    assert run.allocated_node_hours == pytest.approx(4000 * 2 / 3600)
    assert run.wall_seconds == 4000
    assert run.trial_counts() == {"started": 2, "completed": 1, "failed": 1, "invalid": 0}
    assert run.trial_end_node_hours == pytest.approx(run.trial_node_hours + 120 / 3600)
    ep = run.epochs
    assert ep["cum_trial_node_hours"].tolist() == pytest.approx([0.5, 1.0278, 1.5278, 2.0278],
                                                                abs=1e-4)
    # NaN (diverged) epochs cost node-hours but never improve the best.
    assert ep["best_so_far"].tolist() == [1.0, 0.9, 0.9, 0.65]
    assert ep["alloc_node_hours"].tolist() == pytest.approx([1.0, 1900 * 2 / 3600, 2.0,
                                                             3700 * 2 / 3600])


def test_truncated_last_line_warns_naming_file_and_keeps_the_rest(tmp_path):
    path = make_run(tmp_path, "r1", epochs=[("a", 3600, 3600, 1, 0.8)])
    trials = os.path.join(path, "trials.jsonl")
    with open(trials, "a") as fh:
        fh.write('{"v": 1, "event": "epoch", "search_id": "r1", "trial_id": "b", "metr')
    with pytest.warns(rundir.RunWarning, match="trials.jsonl: truncated last line skipped"):
        run = rundir.read_run(path)
    assert run.best_loss == 0.8 and len(run.epochs) == 1
    assert any(trials in w for w in run.warnings)


def test_missing_mllog_falls_back_to_record_times(tmp_path):
    path = make_run(tmp_path, "r1", nodes=3, with_mllog=False,
                    epochs=[("a", 3600, 3600, 1, 0.8), ("b", 7200, 3600, 1, 0.7)])
    with pytest.warns(rundir.RunWarning, match=r"r1/mllog.txt: missing"):
        run = rundir.read_run(path)
    assert run.timing_source == "trials.jsonl (no mllog)"
    assert run.wall_seconds == 7200
    assert run.allocated_node_hours == pytest.approx(6.0)


def test_missing_params_or_trials_skips_the_run_with_a_named_warning(tmp_path):
    good = make_run(tmp_path, "good", epochs=[("a", 60, 60, 1, 1.0)])
    no_params = make_run(tmp_path, "no_params", epochs=[("a", 60, 60, 1, 1.0)])
    os.unlink(os.path.join(no_params, "params.yaml"))
    no_trials = make_run(tmp_path, "no_trials", epochs=[("a", 60, 60, 1, 1.0)])
    os.unlink(os.path.join(no_trials, "trials.jsonl"))
    with pytest.warns(rundir.RunWarning):
        runs, messages = rundir.read_runs([tmp_path])
    assert [r.path for r in runs] == [good]
    assert f"{no_params}/params.yaml: missing; run skipped" in messages
    assert f"{no_trials}/trials.jsonl: missing; run skipped" in messages


def test_mixed_experiments_keep_the_largest_and_name_the_others(tmp_path):
    for i in range(2):
        make_run(tmp_path, f"a{i}", experiment="alpha", epochs=[("t", 60, 60, 1, 1.0)])
    other = make_run(tmp_path, "b0", experiment="beta", epochs=[("t", 60, 60, 1, 1.0)])
    runs, _ = rundir.read_runs([tmp_path])
    with pytest.warns(rundir.RunWarning, match="experiment 'beta' differs"):
        name, kept, messages = rundir.select_experiment(runs)
    assert name == "alpha" and sorted(r.search_id for r in kept) == ["a0", "a1"]
    assert messages == [f"{other}/params.yaml: experiment 'beta' differs from the reported "
                        "experiment 'alpha'; run left out"]
    with pytest.warns(rundir.RunWarning):
        name, kept, _ = rundir.select_experiment(runs, "beta")
    assert [r.search_id for r in kept] == ["b0"]


def test_foreign_search_id_records_and_duplicate_runs(tmp_path):
    path = make_run(tmp_path, "r1", epochs=[("a", 60, 60, 1, 1.0)])
    with open(os.path.join(path, "trials.jsonl"), "a") as fh:
        fh.write(json.dumps({"v": 1, "event": "epoch", "search_id": "zzz", "trial_id": "q",
                             "time": T0 + 70, "metrics": {"val_loss": 0.1},
                             "wall_seconds": 10, "nodes": 1}) + "\n")
    make_run(tmp_path, "r1_copy", search_id="r1", epochs=[("a", 60, 60, 1, 1.0)])
    with pytest.warns(rundir.RunWarning):
        runs, messages = rundir.read_runs([tmp_path])
    assert len(runs) == 1 and runs[0].best_loss == 1.0
    assert any("trials.jsonl: 1 record(s) of other search_id zzz" in m for m in messages)
    assert any("r1_copy/params.yaml: search_id r1 already read" in m for m in messages)


def test_unclosed_log_is_named(tmp_path):
    path = make_run(tmp_path, "r1", with_mllog=False, epochs=[("a", 3600, 3600, 1, 1.0)])
    log = mllog.MLLogger(os.path.join(path, "mllog.txt"))
    log.start(mllog.RUN_START, time_ms=int(T0 * 1000))
    log.event(mllog.NUMBER_OF_NODES, 1, time_ms=int(T0 * 1000))
    log.event(mllog.EVAL_LOSS, 1.0, time_ms=int((T0 + 5400) * 1000))
    with pytest.warns(rundir.RunWarning, match=r"r1/mllog.txt: no run_stop"):
        run = rundir.read_run(path)
    assert math.isclose(run.allocated_node_hours, 1.5)
