"""Losing workers is not a failing configuration: 3 of 4 stand-in workers SIGKILLed mid-trial.

For every tuner the search must finish all its trials with the one survivor: the killed
workers' trials end FAILED ("lease expired"), their values are re-issued, and none of this
counts towards ``max_consecutive_failed_trials``. Workers are ``python -m tuners.distributed.worker``
processes whose trials are sleeps; the chief runs in this process on loopback.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from tuners.config import SearchConfig
from tuners.distributed.chief import Chief
from tuners.oracles import make_oracle
from tuners.records import read_records
from tuners.space import build_space

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SID = "loss1"

CONFIGS = {
    "random": dict(tuner="random", max_trials=6),
    "hyperband": dict(tuner="hyperband", min_epochs=1, max_epochs=4, reduction_factor=2, max_trials=0),
    "asha": dict(tuner="asha", min_epochs=1, max_epochs=4, reduction_factor=2, max_trials=8),
    "asha_bo": dict(tuner="asha_bo", min_epochs=1, max_epochs=4, reduction_factor=2,
                    max_trials=8, num_initial_points=3, bo_gp_restarts=0),
}


def start_worker(n: int, address: str, run_dir, seconds: float):
    cmd = [sys.executable, "-m", "tuners.distributed.worker", f"--chief_address={address}",
           f"--search_id={SID}", f"--worker_id={n}", f"--run_dir={run_dir}",
           f"--trial_seconds={seconds}", "--heartbeat_interval=0.2", "--idle_wait=0.1",
           "--retry_for=30"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("tuner", sorted(CONFIGS))
def test_three_of_four_workers_killed_mid_trial(tuner, tmp_path):
    cfg = SearchConfig(space="reduced", seed=2, max_consecutive_failed_trials=2,
                       **CONFIGS[tuner])
    oracle = make_oracle(cfg, build_space("reduced"))
    chief = Chief(oracle, search_id=SID, run_dir=str(tmp_path), lease_timeout=3.0,
                  progress_interval=0, out=io.StringIO(), default_epochs=cfg.max_epochs)
    port = chief.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    outcome: list[str] = []
    server = threading.Thread(target=lambda: outcome.append(chief.serve(tick=0.05, drain=2.0)))
    server.start()
    victims = [start_worker(n, address, tmp_path, 60.0) for n in (1, 2, 3)]
    survivor = None
    try:
        wait_for(lambda: len(chief.leases) == 3, 60, "the three victims to hold a trial")
        killed = {lease.trial_id for lease in chief.leases.leases()}
        for proc in victims:
            proc.send_signal(signal.SIGKILL)
        for proc in victims:
            proc.wait(10)
        survivor = start_worker(0, address, tmp_path, 0.05)
        out, err = survivor.communicate(timeout=90)
        assert survivor.returncode == 0, err
    finally:
        for proc in [*victims, survivor]:
            if proc is not None and proc.poll() is None:
                proc.kill()
        server.join(30)
        chief.request_stop()
        server.join(30)
    assert outcome == ["finished"], chief.out.getvalue()[-2000:]
    assert chief.aborted is None
    ends = [r for r in read_records(tmp_path / "trials.jsonl") if r["event"] == "trial_end"]
    ids = [r["trial_id"] for r in ends]
    assert len(ids) == len(set(ids)) == len(oracle.trials)  # every trial ended exactly once
    by_id = {r["trial_id"]: r for r in ends}
    assert {by_id[t]["error"] for t in killed} == {
        f"lease expired (worker {n})" for n in (1, 2, 3)}
    failed = {t for t, r in by_id.items() if r["status"] != "COMPLETED"}
    assert failed == killed, {t: by_id[t]["error"] for t in failed}  # only the killed ones
    # each killed trial's values were run again (as a new trial) and completed
    for trial_id in killed:
        values = by_id[trial_id]["hyperparameters"]
        assert any(r["hyperparameters"] == values and r["status"] == "COMPLETED"
                   and r["trial_id"] not in killed for r in ends), trial_id
    if cfg.max_trials:
        completed = sum(r["status"] == "COMPLETED" for r in ends)
        assert completed == cfg.max_trials  # the re-runs did not use up the trial budget
    assert json.loads(out.strip().splitlines()[-1])["trials"] == len(ends) - len(killed)


# --- the chief's failure count and budgets, driven by hand (no gRPC) ---------------------------


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def hand_chief(tmp_path, tuner="random", clock=None, resume=False, **search):
    search = {**CONFIGS[tuner], **search}
    search.setdefault("max_consecutive_failed_trials", 2)
    cfg = SearchConfig(space="reduced", seed=2, **search)
    oracle = make_oracle(cfg, build_space("reduced"))
    return Chief(oracle, search_id=SID, run_dir=str(tmp_path), lease_timeout=5.0,
                 progress_interval=0, out=io.StringIO(), clock=clock or FakeClock(),
                 resume=resume)


def W(n):
    return f"worker{n}@{SID}"


def test_expiries_and_give_backs_neither_count_nor_reset_the_failure_run(tmp_path):
    chief = hand_chief(tmp_path, max_trials=20)
    first = chief.create_trial(W(0))["trial_id"]
    chief.end_trial(W(0), first, "FAILED", message="out of memory")  # a real failure: 1
    for n in (1, 2, 3):  # three lost workers in a row: not failures
        chief.create_trial(W(n))
    chief.clock.now += 6
    assert len(chief.expire()) == 3
    nxt = chief.create_trial(W(4))["trial_id"]
    assert chief.give_back(W(4), nxt) == {"accepted": True}
    assert chief.aborted is None and chief._consecutive_failures == 1
    again = chief.create_trial(W(5))["trial_id"]
    chief.end_trial(W(5), again, "FAILED", message="nan loss")  # 2 >= limit 2
    assert chief.aborted == ("2 consecutive trials failed (limit "
                             "--search.max_consecutive_failed_trials=2); the last: nan loss")
    assert chief.oracle.max_consecutive_failed_trials > 10**9  # the oracle's own check is off
    # a restarted chief finds the same run (the lost-worker ends are skipped again)
    chief.log.close()  # the old chief is gone, and its lock on the state log with it
    again = hand_chief(tmp_path, max_trials=20, resume=True)
    assert again._consecutive_failures == 2


def test_a_completed_trial_resets_the_failure_run(tmp_path):
    chief = hand_chief(tmp_path, max_trials=10, max_consecutive_failed_trials=2)
    ids = [chief.create_trial(W(n))["trial_id"] for n in range(3)]
    chief.end_trial(W(0), ids[0], "FAILED", message="boom")
    chief.update_trial(W(1), ids[1], {"val_loss": 0.5}, step=1)
    chief.end_trial(W(1), ids[1], "COMPLETED")
    chief.end_trial(W(2), ids[2], "FAILED", message="boom")
    assert chief.aborted is None and chief._consecutive_failures == 1


@pytest.mark.parametrize("tuner", ["asha", "asha_bo"])
def test_reissued_epochs_count_against_the_epoch_budget(tuner, tmp_path):
    chief = hand_chief(tmp_path, tuner=tuner, max_trials=0, epoch_budget=3)
    first = chief.create_trial(W(0))  # 1 epoch each at rung 0
    assert chief.oracle.epochs_allotted == 1
    chief.clock.now += 6
    chief.heartbeat(W(1))
    assert chief.expire() == [first["trial_id"]]
    rerun = chief.create_trial(W(1))
    assert rerun["values"] == {**first["values"], "tuner/rerun_of": first["trial_id"]}
    assert chief.oracle.epochs_allotted == 2  # the re-run's epoch counted
    # a restarted chief (journal replay) agrees
    chief.log.close()
    again = hand_chief(tmp_path, tuner=tuner, max_trials=0, epoch_budget=3, resume=True)
    assert again.oracle.epochs_allotted == 2
