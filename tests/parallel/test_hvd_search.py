"""Tiny real searches with a worker group of two Horovod ranks, one per search algorithm.

Run under ``horovodrun -np 2 -H localhost:2 --gloo python -m pytest tests/parallel`` (as
``make test`` does): both ranks execute every test in the same order, so the collectives of
the searches line up. Rank 0's temporary directory is the run directory of both ranks.
Each test checks, on every rank, that both ranks ran the same sequence of trials with the same
outcomes, and on rank 0 the records: two ranks per trial, continuations starting from their
parent's epoch and optimizer step counter, the forced failure recorded and the search going on.
"""

import os

import pytest

from benchmark import experiments, run
from benchmark.config import Config
from mlpf_tf import distributed
from tuners.records import read_records
from tuners.trial_runner import FAULT_ENV

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA_DIR = os.path.join(ROOT, ".data", "tfds")

CTX = distributed.init()
pytestmark = pytest.mark.skipif(CTX.size != 2, reason="needs horovodrun -np 2")


def tiny_search(tmp_path, tuner: str, max_trials: int, fault: str = "", **search):
    """Run a tiny search on both ranks; returns (result of this rank, records on rank 0)."""
    out = distributed.broadcast_object(str(tmp_path), root=0, ctx=CTX)
    cfg = Config(experiment="smoke").override(
        experiments.tiny_overrides(DATA_DIR, tuner=tuner, max_trials=max_trials, ranks=2))
    cfg = cfg.override({"search": search}) if search else cfg
    cfg.launch = cfg.launch.replace(output_dir=out, run_name=f"hvd-{tuner}")
    cfg.validate()
    if fault:
        os.environ[FAULT_ENV] = fault
    try:
        run_dir, search_id = run.plan_run(cfg, CTX)
        result = run.run_search(cfg, run_dir, search_id, context=CTX)
    finally:
        os.environ.pop(FAULT_ENV, None)
    sequences = distributed.allgather_object(result.trials_run, ctx=CTX)
    assert sequences[0] == sequences[1], sequences
    records = []
    if CTX.is_root:
        records = list(read_records(os.path.join(run_dir, "trials.jsonl")))
        assert all(r["search_id"] == search_id for r in records)
        assert all(r["ranks"] == 2 and r["nodes"] == 1.0 for r in records if "ranks" in r)
        ends = [r["trial_id"] for r in records if r["event"] == "trial_end"]
        assert ends == [t for t, _ in result.trials_run]
    return result, records


def ends_of(records):
    return {r["trial_id"]: r for r in records if r["event"] == "trial_end"}


def starts_of(records):
    return {r["trial_id"]: r for r in records if r["event"] == "trial_start"}


def check_continuations(records, expected: int):
    starts, ends = starts_of(records), ends_of(records)
    promoted = [s for s in starts.values() if s["parent_id"] is not None]
    assert len(promoted) == expected
    for child in promoted:
        parent = ends[child["parent_id"]]
        assert child["initial_epoch"] == parent["epochs"] > 0
        assert child["optimizer_iterations"] == parent["optimizer_iterations"] > 0
        assert child["hyperparameters"] == parent["hyperparameters"]


def test_random_search(tmp_path):
    result, records = tiny_search(tmp_path, "random", max_trials=1, max_epochs=1)
    assert [status for _, status in result.trials_run] == ["COMPLETED"]
    if CTX.is_root:
        assert [e["epochs"] for e in ends_of(records).values()] == [1]
        assert result.summary["completed"] == 1


def test_hyperband_continues_from_the_parent_checkpoint(tmp_path):
    # keras-tuner Hyperband, max 2 epochs, factor 2: two 1-epoch trials, the better one goes on
    result, records = tiny_search(tmp_path, "hyperband", max_trials=3)
    assert [status for _, status in result.trials_run] == ["COMPLETED"] * 3
    if CTX.is_root:
        check_continuations(records, expected=1)


def test_asha_with_a_forced_failure(tmp_path):
    # 0 new, 1 new (NaN weights: fails on both ranks), 2 new, 3 = promotion of the better of 0, 2
    result, records = tiny_search(tmp_path, "asha", max_trials=4, fault="1")
    assert [status for _, status in result.trials_run] == [
        "COMPLETED", "FAILED", "COMPLETED", "COMPLETED"]
    if CTX.is_root:
        ends = ends_of(records)
        assert ends["1"]["error"].startswith("NonFiniteLossError: non-finite training loss")
        assert "rank(s) 0, 1" in ends["1"]["error"]
        check_continuations(records, expected=1)
        assert starts_of(records)["3"]["parent_id"] in ("0", "2")


def test_asha_bo(tmp_path):
    result, records = tiny_search(tmp_path, "asha_bo", max_trials=2)
    assert [status for _, status in result.trials_run] == ["COMPLETED"] * 2
    if CTX.is_root:
        check_continuations(records, expected=0)


@pytest.mark.slow
def test_asha_bo_promotes(tmp_path):
    result, records = tiny_search(tmp_path, "asha_bo", max_trials=3)
    assert [status for _, status in result.trials_run] == ["COMPLETED"] * 3
    if CTX.is_root:
        check_continuations(records, expected=1)


@pytest.mark.slow
def test_full_hyperband_iteration(tmp_path):
    result, records = tiny_search(tmp_path, "hyperband", max_trials=0)
    assert [status for _, status in result.trials_run] == ["COMPLETED"] * 5
    if CTX.is_root:
        check_continuations(records, expected=1)
