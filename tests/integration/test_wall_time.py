"""The SLURM wall-time signal: suspend the running trials, resume them in the next job.

A real chief process (``benchmark.run --role=chief``; random search with 4 epochs per trial,
and ASHA with rungs of 3 and 6 epochs, whose promotions continue their parent) and two stand-in
worker processes (``python -m tuners.distributed.worker``, epochs of sleep, an ``epoch`` record
after each) on loopback. SIGUSR1 reaches the chief mid-trial (as ``#SBATCH --signal=B:USR1@<lead>``
delivers it): the workers finish their current epoch, give their trials back with the epoch
reached, and the chief records ``trial_suspend``, saves and exits 0. A chief started with
``--resume`` (the resubmitted job) and fresh workers then continue the suspended trials under
the same ids from their recorded epoch: no second ``trial_start``, no epoch recorded twice,
every trial exactly one ``trial_end``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from tests.integration.test_fault_points import free_port
from tuners.records import read_records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SID = "walltime1"
EPOCHS, TRIALS = 4, 4
TUNER_FLAGS = {
    "random": ["--search.tuner=random"],
    "asha": ["--search.tuner=asha", "--search.min_epochs=3", "--search.max_epochs=6",
             "--search.reduction_factor=2"],
}


def records(run_dir) -> list[dict]:
    path = os.path.join(run_dir, "trials.jsonl")
    return list(read_records(path)) if os.path.exists(path) else []


@pytest.mark.timeout(240)
@pytest.mark.parametrize("tuner", sorted(TUNER_FLAGS))
def test_sigusr1_suspends_running_trials_and_resume_continues_them(tuner, tmp_path):
    address = f"127.0.0.1:{free_port()}"
    run_dir = str(tmp_path / "search")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.pop("MLPF_FAULT", None)
    chief_cmd = [sys.executable, "-m", "benchmark.run", "--role=chief",
                 f"--chief_address={address}", f"--search_id={SID}",
                 f"--output_dir={tmp_path}", "--run_name=search", "--search.space=reduced",
                 f"--search.max_trials={TRIALS}", "--lease_timeout=10", "--progress_interval=0",
                 *TUNER_FLAGS[tuner]]
    procs: list[subprocess.Popen] = []

    def start(cmd, name):
        log = open(tmp_path / f"{name}.log", "w")
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))
        return procs[-1]

    def worker(n: int, seconds: float):
        return start([sys.executable, "-m", "tuners.distributed.worker",
                      f"--chief_address={address}", f"--search_id={SID}", f"--worker_id={n}",
                      f"--run_dir={run_dir}", f"--trial_seconds={seconds}",
                      f"--epochs={EPOCHS}", "--heartbeat_interval=0.3", "--idle_wait=0.1",
                      "--retry_for=90"], f"worker{n}")

    def log(name):
        return (tmp_path / f"{name}.log").read_text()

    try:
        chief = start(chief_cmd, "chief0")
        first = [worker(0, 4.0), worker(1, 4.0)]  # 1 s (random) or 1.3 s (asha) per epoch
        deadline = time.monotonic() + 90
        while not any(r["event"] == "epoch" for r in records(run_dir)):
            assert time.monotonic() < deadline, log("chief0")[-2000:]
            assert chief.poll() is None, log("chief0")[-2000:]
            time.sleep(0.05)
        chief.send_signal(signal.SIGUSR1)  # mid-trial: the first epoch just ended
        signalled = time.monotonic()
        # each worker finishes the epoch it is in (at most 2 s) and gives its trial back: the
        # chief has logged both suspends (the records follow its state log) within that, a
        # heartbeat and some slack; the process exit after it (summary, interpreter teardown
        # with TensorFlow loaded) is not timed, it only has to come, with code 0
        while sum(r["event"] == "trial_suspend" for r in records(run_dir)) < 2:
            assert time.monotonic() - signalled < 2.0 + 0.3 + 5.0, log("chief0")[-2000:]
            time.sleep(0.02)
        assert chief.wait(60) == 0, log("chief0")[-2000:]
        for n, proc in enumerate(first):
            assert proc.wait(30) == 0, log(f"worker{n}")[-2000:]
        assert "search suspended at the wall-time signal" in log("chief0")
        suspended = [json.loads(line) for n in range(2)
                     for line in log(f"worker{n}").splitlines() if line.startswith("{")]
        assert [w["suspended"] for w in suspended] == [1, 1], suspended
        before = records(run_dir)
        suspends = {r["trial_id"]: r for r in before if r["event"] == "trial_suspend"}
        assert len(suspends) == 2
        assert not any(r["event"] == "trial_end" and r["trial_id"] in suspends for r in before)
        starts = {r["trial_id"]: r for r in before if r["event"] == "trial_start"}
        for trial_id, record in suspends.items():
            first_epoch = starts[trial_id]["initial_epoch"] + 1
            assert first_epoch <= record["epoch"] < starts[trial_id]["target_epochs"]
            assert record["reason"] == "wall_time"
            done = [r["epoch"] for r in before
                    if r["event"] == "epoch" and r["trial_id"] == trial_id]
            assert done == list(range(first_epoch, record["epoch"] + 1))  # all it trained

        # the resubmitted job
        chief = start([*chief_cmd, "--resume"], "chief1")
        second = [worker(2, 2.0), worker(3, 2.0)]
        assert chief.wait(120) == 0, log("chief1")[-2000:]
        for n, proc in zip((2, 3), second):
            assert proc.wait(30) == 0, log(f"worker{n}")[-2000:]
        assert "2 to continue" in log("chief1")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    after = records(run_dir)
    ends = Counter(r["trial_id"] for r in after if r["event"] == "trial_end")
    assert len(ends) >= TRIALS and set(ends.values()) == {1}, ends
    assert Counter(r["trial_id"] for r in after if r["event"] == "trial_start") == ends
    starts = {r["trial_id"]: r for r in after if r["event"] == "trial_start"}
    for trial_id in ends:  # every epoch of every trial recorded once, none twice
        epochs = [r["epoch"] for r in after if r["event"] == "epoch" and r["trial_id"] == trial_id]
        assert epochs == list(range(starts[trial_id]["initial_epoch"] + 1,
                                    starts[trial_id]["target_epochs"] + 1)), (trial_id, epochs)
    for trial_id, record in suspends.items():
        resumed = [r for r in after[len(before):] if r["trial_id"] == trial_id]
        assert resumed[0]["event"] == "epoch" and resumed[0]["epoch"] == record["epoch"] + 1
        assert resumed[0]["worker_id"] in ("2", "3")
        end = next(r for r in resumed if r["event"] == "trial_end")
        assert end["status"] == "COMPLETED"
        assert end["epochs"] == starts[trial_id]["target_epochs"]
    print(f"suspended {sorted((t, r['epoch']) for t, r in suspends.items())}; "
          f"resumed and finished {len(ends)} trials")
