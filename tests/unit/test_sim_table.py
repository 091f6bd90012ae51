"""Replaying a recorded table: no silent extrapolation, setup/restore costs, allocated budget."""

import dataclasses
import gzip
import json
import os
import subprocess
import sys

import keras_tuner
import numpy as np
import pytest

from benchmark import experiments
from benchmark.sim import replay
from benchmark.sim.curves import CurveError, load_curves, write_curves
from benchmark.sim.engine import FunctionCurves, SimCluster, quiet_oracle
from mlpf_tf.configbase import ConfigError
from tuners import mllog
from tuners.config import SearchConfig
from tuners.oracles import make_oracle

EPOCHS = 4  # the tables below stop here


def rows(epochs=EPOCHS, configs=6, setup=3.0, restore=1.5):
    out = []
    for i in range(configs):
        lr = 1e-4 * 2.0 ** i
        for e in range(1, epochs + 1):
            out.append({"config_id": f"c{i}", "lr": lr, "batch_size": 8, "epoch": e,
                        "val_loss": (1.0 + 0.1 * abs(i - 3)) * (1.0 + 1.0 / e),
                        "epoch_seconds": 2.0 + i, "setup_seconds": setup,
                        "restore_seconds": restore, "peak_memory_mb": 500.0, "params": 1000})
    return out


@pytest.fixture()
def table_path(tmp_path):
    path = tmp_path / "table.csv.gz"
    write_curves(path, rows(), header={"data": "gun", "model": "tiny", "code_version": "x"})
    return str(path)


def small_setup(**changes):
    setup = dataclasses.replace(replay.PRESETS["delphes"], workers=(2,), max_epochs=8,
                                min_epochs=1, reduction_factor=2, budget_node_hours=0.05,
                                space="reduced", seeds=2, num_initial_points=2)
    return dataclasses.replace(setup, **changes)


def test_presets_are_the_reference_studies_settings_shared_with_benchmark_run():
    delphes, cms = replay.PRESETS["delphes"], replay.PRESETS["cms"]
    assert (delphes.max_epochs, delphes.min_epochs, delphes.reduction_factor) == (100, 5, 3)
    assert (cms.max_epochs, cms.min_epochs, cms.reduction_factor) == (100, 10, 4)
    search = experiments.get("delphes_paper").overrides["search"]
    assert {k: search[k] for k in experiments.DELPHES_SETTINGS.search()} == \
        experiments.DELPHES_SETTINGS.search()
    assert "paper" not in replay.PRESETS  # one name per study, no ambiguous "paper"


def test_compressed_table_keeps_header_and_costs(table_path):
    with gzip.open(table_path, "rt") as fh:
        first = fh.readline()
    assert first.startswith("# mlpf-curve-table ")
    table = load_curves(table_path)
    assert table.header == {"code_version": "x", "data": "gun", "model": "tiny"}
    assert table.recorded_epochs == EPOCHS
    assert table.setup_seconds({"lr": 1e-4}) == 3.0
    assert table.restore_seconds({"lr": 1e-4}) == 1.5
    assert table.median_epoch_seconds() == pytest.approx(4.5)


def test_a_preset_beyond_the_table_is_refused_unless_extrapolation_is_asked(table_path):
    with pytest.raises(ConfigError, match=r"--time_scale is required with a table \(the factor "
                       r"from its median epoch of 4.5 s"):
        replay.validate_setup(small_setup(), table_path)
    with pytest.raises(ConfigError, match=r"recorded for 4 epochs, but preset 'delphes' trains "
                       r"up to max_epochs=8; give --extrapolate=power_law"):
        replay.validate_setup(small_setup(time_scale=1.0), table_path)
    assert replay.validate_setup(small_setup(time_scale=1.0, max_epochs=4), table_path)
    assert replay.validate_setup(small_setup(time_scale=1.0, extrapolate="power_law"),
                                 table_path)
    # the engine refuses too, should a caller skip the check
    with pytest.raises(CurveError, match="refusing to extrapolate"):
        replay.simulate_run(small_setup(time_scale=1.0), "random", 2, 1, curves_path=table_path)


def _cli(args, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "benchmark.sim.replay", *args], cwd=cwd,
                          env=env, capture_output=True, text=True)


def test_cli_refuses_with_exit_2_and_reports_sensitivity_with_extrapolate(table_path, tmp_path):
    out = tmp_path / "out"
    common = [f"--curves={table_path}", "--time_scale=1", "--preset=delphes",
              "--tuner=random,asha", "--workers=2", "--seeds=2", "--max_epochs=8",
              "--min_epochs=1", "--reduction_factor=2", "--space=reduced",
              "--budget_node_hours=0.05", "--num_initial_points=2", f"--output_dir={out}",
              "--nowrite_runs"]
    cwd = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    refused = _cli(common, cwd)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"benchmark.sim.replay: error: --curves={table_path}: recorded for 4 epochs, but preset "
        "'delphes' trains up to max_epochs=8; give --extrapolate=power_law (the report then ranks the tuners with "
        "and without it) or --max_epochs<=4"]
    assert not out.exists()
    done = _cli([*common, "--extrapolate=power_law"], cwd)
    assert done.returncode == 0, done.stderr[-2000:]
    report = (out / "comparison.md").read_text()
    assert "## Sensitivity to extrapolation" in report
    assert "max_epochs 8 with epochs 5..8 extrapolated (power_law) vs max_epochs capped at " \
        "the 4 recorded epochs" in report
    assert "target system: median epoch 4.5 s (recorded 4.5 s x time_scale 1)" in report
    import pandas as pd

    sens = pd.read_csv(out / "sensitivity.csv")
    assert sorted(sens.tuner) == ["asha", "random"]
    assert set(sens.rank_loss_extrapolated) <= {1, 2} and set(sens.rank_loss_capped) <= {1, 2}


def space():
    hp = keras_tuner.HyperParameters()
    hp.Float("lr", 1e-4, 3e-2, sampling="log")
    hp.Int("batch_size", 4, 32, step=4)
    return hp


class CostlyCurves(FunctionCurves):
    def setup_seconds(self, values):
        return 5.0

    def restore_seconds(self, values):
        return 2.0


def asha(max_epochs=4, seed=1):
    cfg = SearchConfig(tuner="asha", max_epochs=max_epochs, min_epochs=1, reduction_factor=2,
                       seed=seed, max_trials=12, num_initial_points=2)
    return quiet_oracle(make_oracle(cfg, space()))


def timeline(setup_costs, time_scale=1.0, setup_time_scale=None):
    events = []

    def on_record(kind, run, *, time, **fields):
        events.append((kind, run.trial_id, run.initial_epoch, time, fields.get("epoch")))

    curves = CostlyCurves(loss=lambda v, e: v["lr"] * 100 + 1.0 / e, seconds=10.0)
    result = SimCluster(asha(), curves, workers=1, max_epochs=4, on_record=on_record,
                        setup_costs=setup_costs, time_scale=time_scale,
                        setup_time_scale=setup_time_scale).run()
    return result, events


def test_setup_and_restore_seconds_precede_the_first_epoch():
    result, events = timeline(True, time_scale=2.0)
    starts = {(tid): (initial, t) for kind, tid, initial, t, _ in events if kind == "trial_start"}
    assert any(initial > 0 for initial, _ in starts.values())  # some promotions happened
    for kind, tid, initial, t, epoch in events:
        if kind != "epoch":
            continue
        initial, t0 = starts[tid]
        setup = (2.0 if initial else 5.0) * 2.0
        assert t == pytest.approx(t0 + setup + (epoch - initial) * 20.0)
    free, free_events = timeline(False)
    assert free.decisions() == result.decisions()
    for run in free.trials:
        assert run.setup_seconds == 0.0
    # what the setups cost: the difference of the two makespans (time scale 2 vs 1 aside)
    setups = sum(5.0 if r.initial_epoch == 0 else 2.0 for r in result.trials)
    assert result.makespan == pytest.approx(2.0 * (free.makespan + setups))
    assert result.busy_fraction == pytest.approx(1.0)
    # setups scaled apart from epochs: epochs x2, setups x0.5
    apart, _ = timeline(True, time_scale=2.0, setup_time_scale=0.5)
    assert apart.makespan == pytest.approx(2.0 * free.makespan + 0.5 * setups)
    with pytest.raises(ValueError, match="setup_time_scale must be > 0"):
        timeline(True, setup_time_scale=0.0)


def test_budget_is_charged_on_allocated_node_hours_with_the_chief_node(tmp_path):
    budget = 0.02  # node-hours: 72 s on 2 workers + the chief's node
    curves = FunctionCurves(loss=lambda v, e: v["lr"] * 100 + 1.0 / e, seconds=10.0)
    starts = []

    def on_record(kind, run, *, time, **fields):
        if kind == "trial_start":
            starts.append(time)

    result = SimCluster(asha(max_epochs=2), curves, workers=2, max_epochs=2,
                        budget_node_hours=budget, chief_node=True, on_record=on_record).run()
    deadline = budget * 3600 / 3
    assert result.nodes == 3.0 and result.stop_reason == "node_hour_budget"
    assert max(starts) < deadline <= result.makespan
    assert result.allocated_node_hours == pytest.approx(result.makespan * 3 / 3600)
    assert result.makespan < deadline + 2 * 10.0 + 1e-9  # running trials finish, no more
    assert all(run.status == "COMPLETED" for run in result.trials)


def test_run_log_records_what_stopped_the_run_and_the_chief_node(tmp_path):
    setup = small_setup(chief_node=True, max_epochs=4, seeds=1)
    summary = replay.simulate_run(setup, "asha", 2, 1, output_dir=str(tmp_path))
    events = mllog.read_mllog(os.path.join(summary.run_dir, "mllog.txt"))
    stop = [e for e in events if e.key == mllog.RUN_STOP][0]
    assert stop.metadata["stopped_by"] == "node_hour_budget"
    timing = mllog.run_timing(events)
    assert timing.nodes == 3
    assert timing.allocated_node_hours == pytest.approx(summary.result.allocated_node_hours,
                                                        rel=1e-4)  # log times in ms
    assert timing.allocated_node_hours >= setup.budget_node_hours
    sim = json.loads(open(os.path.join(summary.run_dir, "simulation.json")).read())
    assert sim["stop_reason"] == "node_hour_budget"


def test_noise_follows_the_recorded_curve_not_the_sampled_configuration(table_path):
    table = load_curves(table_path, noise=0.05, noise_seed=7)
    a = table.val_losses({"lr": 1.0e-4, "batch_size": 8}, 0, 4)
    b = table.val_losses({"lr": 1.1e-4, "batch_size": 12}, 0, 4)  # same recorded curve c0
    assert table.nearest({"lr": 1.1e-4, "batch_size": 12}).config_id == "c0"
    assert a == b and a != table.curves[0].losses.tolist()
    other_seed = load_curves(table_path, noise=0.05, noise_seed=8)
    assert other_seed.val_losses({"lr": 1.0e-4}, 0, 4) != a
    assert np.allclose(a, table.curves[0].losses, rtol=0.25)
