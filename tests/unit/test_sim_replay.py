"""Simulated cluster: determinism, equivalence with a plain oracle loop, event timing, run dirs."""

import dataclasses
import math
import os
import time

import keras_tuner
import numpy as np
import pytest
from keras_tuner.src.engine import trial as trial_module

from benchmark.sim import replay as simulate
from benchmark.sim.curves import Surrogate
from benchmark.sim.engine import (
    FunctionCurves,
    SimCluster,
    SimulationError,
    quiet_oracle,
)
from tuners import mllog
from tuners.config import SearchConfig
from tuners.oracles import make_oracle
from tuners.records import read_records
from tuners.space import build_space


def small_space():
    hp = keras_tuner.HyperParameters()
    hp.Float("lr", 1e-4, 3e-2, sampling="log")
    hp.Int("batch_size", 4, 32, step=4)
    hp.Int("output_dim", 64, 512, step=64)
    return hp


def oracle_for(tuner, seed=3, **search):
    fields = dict(tuner=tuner, max_epochs=16, min_epochs=2, reduction_factor=2, seed=seed,
                  max_trials=40, num_initial_points=4, bo_gp_restarts=0)
    fields.update(search)
    return quiet_oracle(make_oracle(SearchConfig(**fields), small_space()))


def curve(seed=0):
    return Surrogate(small_space(), noise=0.01, noise_seed=seed)


@pytest.fixture(autouse=True)
def no_sleeping(monkeypatch):
    """The simulation must never sleep: any call fails the test."""
    def forbidden(seconds):
        raise AssertionError(f"time.sleep({seconds}) called during a simulation")
    monkeypatch.setattr(time, "sleep", forbidden)


def plain_loop(oracle, curves, max_epochs):
    """Drive an oracle directly, one trial after another, with the same losses."""
    decisions = []
    while True:
        trial = oracle.create_trial("worker0")
        if trial.status == trial_module.TrialStatus.STOPPED:
            return decisions
        assert trial.status == trial_module.TrialStatus.RUNNING
        values = trial.hyperparameters.values
        initial = int(values.get("tuner/initial_epoch", 0))
        target = int(values.get("tuner/epochs", max_epochs))
        parent = values.get("tuner/trial_id") or None
        for i, loss in enumerate(curves.val_losses(values, initial, target)):
            oracle.update_trial(trial.trial_id, {"val_loss": loss}, step=initial + i + 1)
        trial.status = trial_module.TrialStatus.COMPLETED
        oracle.end_trial(trial)
        decisions.append((trial.trial_id, parent, initial, target))


@pytest.mark.parametrize("tuner", ["hyperband", "asha", "asha_bo"])
def test_single_worker_simulation_takes_the_decisions_of_a_plain_loop(tuner):
    extra = {"hyperband_iterations": 1, "max_trials": 0} if tuner == "hyperband" else {}
    if tuner == "asha_bo":
        extra = {"max_trials": 16}
    expected = plain_loop(oracle_for(tuner, **extra), curve(), 16)
    result = SimCluster(oracle_for(tuner, **extra), curve(), workers=1, max_epochs=16).run()
    assert result.decisions() == expected
    promotions = [d for d in expected if d[1] is not None]
    assert len(promotions) >= 3  # the comparison covers continuations
    assert result.stop_reason in ("space_exhausted", "max_trials", "hyperband_iterations")


def test_speedups_do_not_change_decisions():
    fast = SimCluster(oracle_for("hyperband", hyperband_iterations=2, max_trials=0), curve(),
                      workers=3, max_epochs=16).run()
    slow = SimCluster(oracle_for("hyperband", hyperband_iterations=2, max_trials=0), curve(),
                      workers=3, max_epochs=16, fast=False).run()
    assert fast.decisions() == slow.decisions()
    assert fast.best_curve == slow.best_curve and fast.makespan == slow.makespan


def test_same_seed_same_decisions_and_other_seed_differs():
    runs = [SimCluster(oracle_for("asha", seed=s), curve(s), workers=4, max_epochs=16).run()
            for s in (5, 5, 6)]
    assert runs[0].decisions() == runs[1].decisions()
    assert runs[0].best_curve == runs[1].best_curve
    assert runs[0].decisions() != runs[2].decisions()


def test_continuations_see_the_parents_curve():
    sur = curve()
    result = SimCluster(oracle_for("asha"), sur, workers=4, max_epochs=16).run()
    by_id = {t.trial_id: t for t in result.trials}
    promoted = [t for t in result.trials if t.parent_id is not None]
    assert promoted
    for t in promoted:
        parent = by_id[t.parent_id]
        assert t.initial_epoch == parent.target_epochs
        whole = sur.val_losses(parent.values, 0, t.target_epochs)
        assert parent.losses == whole[parent.initial_epoch:parent.target_epochs]
        assert t.losses == whole[t.initial_epoch:]


def random_oracle(max_trials):
    return quiet_oracle(keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_loss", "min"), max_trials=max_trials,
        hyperparameters=small_space(), seed=1))


@pytest.mark.parametrize("trials, workers", [(10, 4), (12, 4), (7, 1), (3, 5)])
def test_makespan_and_busy_fraction_with_constant_epoch_times(trials, workers):
    epochs, seconds = 3, 2.0
    curves = FunctionCurves(lambda values, epoch: 1.0 / epoch, seconds=seconds)
    result = SimCluster(random_oracle(trials), curves, workers=workers,
                        max_epochs=epochs).run()
    rounds = math.ceil(trials / workers)
    assert len(result.trials) == trials and result.stop_reason == "max_trials"
    assert result.makespan == pytest.approx(rounds * epochs * seconds)
    assert result.busy_fraction == pytest.approx(trials / (workers * rounds))
    assert result.epochs == trials * epochs
    starts = sorted(t.start for t in result.trials)
    assert starts == [epochs * seconds * (i // workers) for i in range(trials)]


def test_nodes_scale_epoch_time_and_node_hours():
    curves = FunctionCurves(lambda values, epoch: 1.0 / epoch, seconds=3600.0)
    result = SimCluster(random_oracle(4), curves, workers=2, max_epochs=2, nodes_per_worker=3,
                        parallel_efficiency=0.5).run()
    # 3 nodes at efficiency 0.5: speed-up 2, so an epoch takes 1800 s; 2 rounds of 2 epochs.
    assert result.makespan == pytest.approx(2 * 2 * 1800.0)
    assert result.allocated_node_hours == pytest.approx(2.0 * 6)  # 2 h on 6 nodes
    assert result.node_hours_to_reach(0.5) == pytest.approx(1800.0 * 2 * 6 / 3600)
    assert result.node_hours_to_reach(0.1) == math.inf


class RoundOracle(keras_tuner.Oracle):
    """Synchronous rounds of `size` trials: IDLE until the whole round has ended."""

    def __init__(self, size, rounds, **kwargs):
        super().__init__(**kwargs)
        self.size, self.rounds, self.issued = size, rounds, 0

    def populate_space(self, trial_id):
        done = len(self.end_order)
        if self.issued == self.size * self.rounds:
            return {"status": "IDLE" if self.ongoing_trials else "STOPPED"}
        if self.issued % self.size == 0 and done < self.issued:
            return {"status": "IDLE"}
        self.issued += 1
        return {"status": "RUNNING", "values": self._random_values()}


def test_idle_workers_retry_at_the_next_event():
    oracle = quiet_oracle(RoundOracle(3, 2, objective=keras_tuner.Objective("val_loss", "min"),
                                      hyperparameters=small_space(), seed=2))
    curves = FunctionCurves(lambda values, epoch: 1.0 / epoch, seconds=1.0)
    result = SimCluster(oracle, curves, workers=2, max_epochs=4).run()
    # Round: two trials on two workers (0..4), the third on one worker (4..8), the other idle.
    assert [t.start for t in result.trials] == [0.0, 0.0, 4.0, 8.0, 8.0, 12.0]
    assert result.makespan == pytest.approx(16.0)
    assert result.busy_fraction == pytest.approx(6 * 4 / (2 * 16.0))


def test_idle_with_nothing_running_is_an_error():
    class Stuck(keras_tuner.Oracle):
        def populate_space(self, trial_id):
            return {"status": "IDLE"}
    oracle = quiet_oracle(Stuck(objective="val_loss", hyperparameters=small_space()))
    with pytest.raises(SimulationError, match="IDLE to every worker at the start"):
        SimCluster(oracle, curve(), workers=2, max_epochs=2).run()


def test_budget_cuts_the_search_at_the_deadline():
    curves = FunctionCurves(lambda values, epoch: 1.0 / epoch, seconds=10.0)
    result = SimCluster(random_oracle(None), curves, workers=3, max_epochs=5,
                        budget_seconds=125.0).run()
    assert result.stop_reason == "budget" and result.makespan == 125.0
    # Trials of 50 s: 2 whole rounds, the third round cut after 2 epochs each.
    assert [t.status for t in result.trials] == ["COMPLETED"] * 6 + ["CUT"] * 3
    assert [t.epochs_done for t in result.trials[6:]] == [2, 2, 2]
    assert result.busy_fraction == pytest.approx(1.0)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got 0"):
        SimCluster(random_oracle(1), curve(), workers=0, max_epochs=2)
    with pytest.raises(ValueError, match="budget_seconds must be > 0, got -1"):
        SimCluster(random_oracle(1), curve(), workers=1, max_epochs=2, budget_seconds=-1)


def tiny_setup(**changes):
    setup = dataclasses.replace(simulate.Setup(), workers=(3,), max_epochs=8, min_epochs=2,
                                reduction_factor=2, budget_node_hours=1.0, space="reduced",
                                base_epoch_seconds=30.0, seeds=1)
    return dataclasses.replace(setup, **changes)


def test_run_directory_is_deterministic_and_readable(tmp_path):
    setup = tiny_setup()
    a = simulate.simulate_run(setup, "asha", 3, 1, output_dir=str(tmp_path / "a"))
    simulate.simulate_run(setup, "asha", 3, 1, output_dir=str(tmp_path / "b"))
    files = ("trials.jsonl", "mllog.txt", "simulation.json")
    for name in files:
        text_a = (tmp_path / "a" / "sim-asha-w3-s1" / name).read_text()
        text_b = (tmp_path / "b" / "sim-asha-w3-s1" / name).read_text()
        if name == "simulation.json":  # holds the simulator's own wall time
            text_a, text_b = (t.split('"simulator_wall_seconds"')[0] for t in (text_a, text_b))
        assert text_a == text_b
    run_dir = a.run_dir
    records = list(read_records(f"{run_dir}/trials.jsonl"))
    assert all(r["simulated"] is True for r in records)
    assert {r["search_id"] for r in records} == {"sim_delphes-sim-asha-w3-s1"}
    times = [r["time"] for r in records]
    assert times == sorted(times) and times[0] == simulate.SIM_EPOCH
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == a.result.epochs
    assert sum(r["node_hours"] for r in epochs) == pytest.approx(
        a.result.busy_seconds / 3600, rel=0.05)
    ends = [r for r in records if r["event"] == "trial_end"]
    assert len(ends) == sum(t.status == "COMPLETED" for t in a.result.trials)
    timing = mllog.run_timing(mllog.read_mllog(f"{run_dir}/mllog.txt"))
    # charged on allocated node-hours: no new trial after the budget, running ones finish
    assert 1.0 <= timing.allocated_node_hours < 1.0 + 3 * 8 * 30.0 * 3 / 3600
    assert timing.nodes == 3
    from benchmark.config import load_params
    config, extras = load_params(run_dir)
    assert extras == {"search_id": "sim_delphes-sim-asha-w3-s1", "simulated": True}
    assert (config.search.tuner, config.launch.workers, config.search.seed) == ("asha", 3, 1)


def test_comparison_uses_randoms_best_per_seed():
    def fake(tuner, seed, curve_points):
        result = simulate.SimResult(trials=[], makespan=7200.0, busy_seconds=0.0, workers=2,
                                    nodes_per_worker=1.0, stop_reason="budget",
                                    best_curve=curve_points, events=0)
        return simulate.RunSummary(tuner, 2, seed, result, 0.0, None)
    runs = [fake("random", 1, [(900.0, 2.0), (5400.0, 1.5)]),
            fake("asha", 1, [(1800.0, 1.4)]),
            fake("random", 2, [(3600.0, 1.0)]),
            fake("asha", 2, [(1800.0, 1.2)])]
    per_seed = simulate.per_seed_table(runs, budget_node_hours=4.0)
    nh = dict(zip(zip(per_seed.tuner, per_seed.seed), per_seed.node_hours_to_random_best))
    assert nh == {("random", 1): 3.0, ("asha", 1): 1.0, ("random", 2): 2.0,
                  ("asha", 2): math.inf}
    table = simulate.comparison_table(per_seed)
    asha = table[table.tuner == "asha"].iloc[0]
    assert asha.reached == 1 and asha.seeds == 2
    assert asha.nh_to_random_best_median == 1.0 and asha.nh_q75 == math.inf
    assert "| 2 | asha | 1.0 [1.0, never] | 0.250 | 0.33 [0.33, never] | 1/2 |" in (
        simulate.markdown_table(table, 4.0))
    assert np.isclose(table[table.tuner == "random"].iloc[0].best_loss_median, 1.0)
    # a target fixed in advance: the median of the pooled final losses 1.0, 1.2, 1.4, 1.5
    assert per_seed.pooled_target.tolist() == pytest.approx([1.3] * 4)
    fixed = dict(zip(zip(per_seed.tuner, per_seed.seed), per_seed.node_hours_to_pooled_target))
    assert fixed == {("random", 1): math.inf, ("asha", 1): math.inf, ("random", 2): 2.0,
                     ("asha", 2): 1.0}
    intervals = simulate.interval_table(per_seed).set_index("tuner")
    # one of two seeds reached it: the median is inf, the interval runs from the finite one
    assert (intervals.loc["asha", "nh_to_target"], intervals.loc["asha", "nh_low"],
            intervals.loc["asha", "nh_high"], intervals.loc["asha", "reached"]) == (
                math.inf, 1.0, math.inf, 1)
    assert intervals.loc["random", "final_loss"] == pytest.approx(1.25)
    text = simulate.interval_markdown(intervals.reset_index())
    assert "| 2 | asha | 1.3000 | never [1.00, never] | 1/2 | 1.3000 [1.2000, 1.4000] |" in text


def test_hyperband_on_the_reference_space_fills_the_budget():
    setup = tiny_setup(space="reference", workers=(16,), budget_node_hours=8.0)
    summary = simulate.simulate_run(setup, "hyperband", 16, 2)
    assert len(summary.result.trials) > 100
    assert summary.result.stop_reason == "node_hour_budget"
    assert setup.budget_seconds(16) <= summary.result.makespan
    assert summary.result.allocated_node_hours >= 8.0
    assert build_space("reference").space  # the reference space was the one simulated


def test_replaying_a_run_directory_repeats_its_decisions(tmp_path):
    setup = tiny_setup(workers=(1,))
    summary = simulate.simulate_run(setup, "hyperband", 1, 2, output_dir=str(tmp_path))
    recorded = simulate.run_decisions(summary.run_dir)
    assert recorded == summary.result.decisions()[:len(recorded)]
    assert any(parent for _, parent, _, _ in recorded)
    replayed = simulate.replay_run(summary.run_dir)
    # The budget stopped the run after its last trial finished: the replay takes every
    # decision of the run, then stops at the run's completed trials.
    assert summary.result.stop_reason == "node_hour_budget"
    assert summary.result.trials[-1].status == "COMPLETED"
    assert replayed.decisions() == recorded
    assert replayed.stop_reason == "max_trials"


@pytest.mark.slow
def test_a_real_tiny_search_and_its_replay_take_the_same_decisions(tmp_path):
    """Runs the smoke search for real (minutes on two cores), then replays its oracle."""
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-m", "benchmark.run", "--experiment=smoke",
                    f"--output_dir={tmp_path}", "--run_name=real", "--max_trials=8"],
                   check=True, env=env, capture_output=True)
    run_dir = str(tmp_path / "real")
    recorded = simulate.run_decisions(run_dir)
    assert len(recorded) == 8 and any(parent for _, parent, _, _ in recorded)
    assert simulate.replay_run(run_dir).decisions() == recorded


def test_common_draws_share_the_first_configurations_and_can_be_turned_off():
    first = {}
    for common in (True, False):
        setup = tiny_setup(common_draws=common, budget_node_hours=0.2)
        for tuner in ("random", "asha"):
            result = simulate.simulate_run(setup, tuner, 3, 4).result
            first[common, tuner] = [t.values["lr"] for t in result.trials[:3]]
    assert first[True, "random"] == first[True, "asha"]
    assert first[False, "random"] != first[False, "asha"]
    assert first[False, "asha"] != first[True, "asha"]
