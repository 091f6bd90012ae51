"""Liveness by progress: a hung worker is failed and its trial re-issued, the search finishes.

Stand-in workers (``python -m tuners.distributed.worker``, trials are sleeps, one progress step per epoch):
one whose main thread blocks forever while its heartbeat thread goes on (heartbeats alone
would keep its lease alive), and one SIGSTOPped (nothing comes from it). In both cases the
chief fails the trial within ``stall_timeout`` plus one heartbeat (plus the chief's tick and
some scheduling slack on a shared machine), re-issues its values, and a healthy worker
finishes the search.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time

import keras_tuner
import pytest

from tuners.distributed.chief import Chief
from tuners.records import read_records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SID = "live1"
STALL, HEARTBEAT, TICK = 2.0, 0.3, 0.05


def oracle(max_trials: int):
    hp = keras_tuner.HyperParameters()
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Int("units", 8, 64, step=8)
    return keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_loss", "min"), hyperparameters=hp,
        max_trials=max_trials, seed=5)


def start_worker(n, address, run_dir, seconds, *extra):
    cmd = [sys.executable, "-m", "tuners.distributed.worker", f"--chief_address={address}",
           f"--search_id={SID}", f"--worker_id={n}", f"--run_dir={run_dir}",
           f"--trial_seconds={seconds}", f"--heartbeat_interval={HEARTBEAT}",
           "--idle_wait=0.1", "--retry_for=20", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def run_search(tmp_path, fault):
    """Serve a 4-trial search; ``fault(chief, address)`` sets up the faulty worker and returns
    (its process, the clock time its last progress reached the chief)."""
    chief = Chief(oracle(4), search_id=SID, run_dir=str(tmp_path), lease_timeout=30.0,
                  stall_timeout=STALL, progress_interval=0, out=io.StringIO())
    port = chief.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    outcome = []
    server = threading.Thread(target=lambda: outcome.append(chief.serve(tick=TICK, drain=2.0)))
    server.start()
    procs = []
    try:
        victim, lease = fault(chief, address)
        procs.append(victim)
        wait_for(lambda: lease.trial_id not in chief.leases, 30, "the chief to fail the trial")
        failed_after = time.monotonic() - lease.progressed
        healthy = start_worker(0, address, tmp_path, 0.2)
        procs.append(healthy)
        out, err = healthy.communicate(timeout=60)
        assert healthy.returncode == 0, err
    finally:
        server.join(20)
        chief.request_stop()
        server.join(20)
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.wait(10)
    assert outcome == ["finished"], chief.out.getvalue()
    ends = {r["trial_id"]: r for r in read_records(tmp_path / "trials.jsonl")
            if r["event"] == "trial_end"}
    return chief, victim, lease, failed_after, ends


def check(chief, lease, failed_after, ends, worker):
    # failed within stall_timeout + one heartbeat (+ the chief's tick and 0.5 s of slack)
    assert STALL < failed_after <= STALL + HEARTBEAT + TICK + 0.5, failed_after
    assert ends[lease.trial_id]["status"] == "FAILED"
    assert ends[lease.trial_id]["error"] == f"no progress for 2 s (worker {worker})"
    rerun = [r for r in ends.values() if r["trial_id"] != lease.trial_id
             and r["hyperparameters"] == ends[lease.trial_id]["hyperparameters"]]
    assert [r["status"] for r in rerun] == ["COMPLETED"]  # its values ran again
    assert sum(r["status"] == "COMPLETED" for r in ends.values()) == 4
    assert chief.aborted is None
    print(f"failed {failed_after:.2f} s after the last progress (stall_timeout {STALL:g} s, "
          f"heartbeat {HEARTBEAT:g} s)")


@pytest.mark.timeout(120)
def test_a_hung_main_thread_with_a_live_heartbeat_is_failed_and_exits(tmp_path):
    def fault(chief, address):
        proc = start_worker(1, address, tmp_path, 3.0, "--hang_after_epochs=1",
                            "--exit_on_lost")
        wait_for(lambda: len(chief.leases) == 1, 30, "worker 1 to hold a trial")
        return proc, chief.leases.leases()[0]

    chief, victim, lease, failed_after, ends = run_search(tmp_path, fault)
    check(chief, lease, failed_after, ends, 1)
    assert victim.wait(10) == 3  # it noticed its trial was failed and ended itself
    assert "was failed by the chief; exiting" in victim.stderr.read()


@pytest.mark.timeout(120)
def test_a_sigstopped_worker_is_failed_and_its_trial_reissued(tmp_path):
    def fault(chief, address):
        proc = start_worker(1, address, tmp_path, 30.0)
        wait_for(lambda: len(chief.leases) == 1, 30, "worker 1 to hold a trial")
        os.kill(proc.pid, signal.SIGSTOP)
        return proc, chief.leases.leases()[0]

    chief, victim, lease, failed_after, ends = run_search(tmp_path, fault)
    check(chief, lease, failed_after, ends, 1)
