"""A tiny real ASHA search in one process: records, continuations, a forced failure, best.json.

Synthetic gun events (64), a width-8 MLPF network, rungs of 1 and 2 epochs, four trials; trial
"1" gets NaN weights (MLPF_HPO_FAULT_TRIALS) so its loss is non-finite. With ASHA (eta 2) the
sequence is: 0 new, 1 new (fails), 2 new, 3 = promotion of the better of 0 and 2.
"""

import json
import os

import pytest
import yaml

from benchmark import experiments, run
from benchmark.config import Config, load_params
from mlpf_tf import distributed
from tuners.records import read_records
from tuners.trial_runner import FAULT_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.path.join(ROOT, ".data", "tfds")


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    os.environ[FAULT_ENV] = "1"
    try:
        cfg = Config(experiment="smoke").override(experiments.tiny_overrides(DATA_DIR, max_trials=4))
        out = tmp_path_factory.mktemp("runs")
        cfg.launch = cfg.launch.replace(output_dir=str(out), run_name="tiny")
        cfg.validate()
        run_dir, search_id = run.plan_run(cfg, distributed.LOCAL)
        result = run.run_search(cfg, run_dir, search_id, context=distributed.LOCAL)
    finally:
        os.environ.pop(FAULT_ENV, None)
    assert [t for t, _ in result.trials_run] == ["0", "1", "2", "3"]
    recs = list(read_records(os.path.join(run_dir, "trials.jsonl")))
    return cfg, run_dir, search_id, result.summary, recs


def by_event(recs, event):
    return {r["trial_id"]: r for r in recs if r["event"] == event}


def test_records_are_consistent(search):
    cfg, run_dir, search_id, _, recs = search
    starts, ends = by_event(recs, "trial_start"), by_event(recs, "trial_end")
    assert list(starts) == list(ends) == ["0", "1", "2", "3"]
    assert all(r["search_id"] == search_id and r["v"] == 1 for r in recs)
    for trial_id, start in starts.items():
        end = ends[trial_id]
        mine = [r for r in recs if r["trial_id"] == trial_id]
        assert mine[0] is start and mine[-1] is end  # start, epochs, end in this order
        epochs = [r for r in mine if r["event"] == "epoch"]
        assert (start["nodes"], start["ranks"], end["nodes"], end["ranks"]) == (1.0, 1, 1.0, 1)
        assert end["node_hours"] == pytest.approx(end["wall_seconds"] / 3600)
        assert end["wall_seconds"] >= sum(r["wall_seconds"] for r in epochs) > 0 or not epochs
        for r in epochs:
            assert r["node_hours"] == pytest.approx(r["wall_seconds"] / 3600)
            assert set(r["metrics"]) >= {"loss", "val_loss"}
        if end["status"] == "COMPLETED":
            assert [r["epoch"] for r in epochs] == list(
                range(start["initial_epoch"] + 1, start["target_epochs"] + 1))
            assert end["epochs"] == start["target_epochs"]
            assert end["metrics"]["val_loss"] == epochs[-1]["metrics"]["val_loss"]
        assert end["hyperparameters"] == start["hyperparameters"]
        assert set(start["hyperparameters"]) == {
            "lr", "batch_size", "decay_steps", "decay_rate", "layernorm", "num_node_messages",
            "dropout", "bin_size", "clip_value_low", "dist_mult", "normalize_degrees"}


def test_forced_failure_is_recorded_and_the_search_goes_on(search):
    _, run_dir, _, summary, recs = search
    ends = by_event(recs, "trial_end")
    assert ends["1"]["status"] == "FAILED"
    assert ends["1"]["error"].startswith("NonFiniteLossError: non-finite training loss at "
                                         "epoch 1/1")
    assert [r for r in recs if r["event"] == "epoch" and r["trial_id"] == "1"] == []
    assert [ends[t]["status"] for t in ("0", "2", "3")] == ["COMPLETED"] * 3
    with open(os.path.join(run_dir, "keras_tuner", "trial_1", "trial.json")) as fh:
        assert json.load(fh)["status"] == "FAILED"
    assert (summary["trials"], summary["completed"], summary["failed"]) == (4, 3, 1)


def test_promotion_continues_from_the_parent(search):
    _, run_dir, _, _, recs = search
    starts, ends = by_event(recs, "trial_start"), by_event(recs, "trial_end")
    promoted = [s for s in starts.values() if s["parent_id"] is not None]
    assert [s["trial_id"] for s in promoted] == ["3"]
    child = promoted[0]
    parent = ends[child["parent_id"]]
    better = min(("0", "2"), key=lambda t: ends[t]["metrics"]["val_loss"])
    assert child["parent_id"] == better
    assert child["hyperparameters"] == parent["hyperparameters"]
    assert (child["initial_epoch"], child["target_epochs"], child["rung"]) == (1, 2, 1)
    # the optimizer state came with the weights: its step counter goes on from the parent's
    assert child["optimizer_iterations"] == parent["optimizer_iterations"] > 0
    steps = parent["optimizer_iterations"]  # one epoch of the parent = steps per epoch
    assert ends["3"]["optimizer_iterations"] == 2 * steps
    for trial_id in ("0", "2"):
        assert starts[trial_id]["optimizer_iterations"] == 0


def test_run_directory_contents(search):
    cfg, run_dir, search_id, summary, recs = search
    saved, extras = load_params(run_dir)
    assert extras["search_id"] == search_id and saved == cfg
    ends = by_event(recs, "trial_end")
    with open(os.path.join(run_dir, run.BEST_FILE)) as fh:
        best = json.load(fh)
    assert best == summary
    done = {t: e["metrics"]["val_loss"] for t, e in ends.items() if e["status"] == "COMPLETED"}
    assert best["best"]["trial_id"] == min(done, key=done.get)
    assert best["best"]["val_loss"] == min(done.values())
    assert best["trial_node_hours"] == pytest.approx(sum(e["node_hours"] for e in ends.values()))
    assert best["epochs_trained"] == 3  # 0, 2, 3 (1 -> 2); the failed trial finished none
    for trial_id in ends:
        link = os.path.join(run_dir, "tensorboard", trial_id)
        assert os.path.islink(link) and os.listdir(link)
    for trial_id in ("0", "2", "3"):
        assert os.path.isfile(os.path.join(run_dir, "trials", trial_id, "checkpoints", "latest"))
    with open(os.path.join(run_dir, "mllog.txt")) as fh:
        keys = [json.loads(line.split(" ", 1)[1])["key"] for line in fh]
    assert keys[0] == "run_start" and keys[-1] == "run_stop"
    assert keys.count("trial_start") == keys.count("trial_stop") == 4
    # the failed trial started its epoch but never finished it
    assert keys.count("epoch_start") == 4
    assert keys.count("epoch_stop") == keys.count("eval_loss") == 3
    with open(os.path.join(run_dir, "params.yaml")) as fh:
        assert yaml.safe_load(fh)["search"]["tuner"] == "asha"
