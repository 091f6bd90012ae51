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
import socket
import subprocess
import sys
import threading
import time

import keras_tuner
import pytest

from tuners.distributed.chief import Chief
from tuners.records import read_records
from tuners.trial_runner import RAISE_ENV

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


# --- a real worker group of two Horovod ranks (benchmark.run --role=worker under horovodrun) ---

HVD_STALL, HVD_HEARTBEAT = 60.0, 1.0  # the group's setup (model, tracing) must fit in HVD_STALL
HOROVODRUN = os.path.join(os.path.dirname(sys.executable), "horovodrun")


def rank_pid(rank: int, *needles: str) -> int | None:
    """The pid of Horovod rank ``rank`` whose command line holds ``needles``."""
    from tests.integration.test_distributed import pid_of

    return pid_of(*needles, environ=f"HOROVOD_RANK={rank}")


def records_of(run_dir, event: str) -> list[dict]:
    path = os.path.join(str(run_dir), "trials.jsonl")
    return [r for r in read_records(path) if r["event"] == event] if os.path.exists(path) else []


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(not os.path.exists(HOROVODRUN), reason="needs Horovod (horovodrun)")
@pytest.mark.parametrize("fault", ["raise", "sigstop"])
def test_a_failing_or_stopped_rank_of_a_horovod_group(fault, tmp_path):
    """Rank 1 of a 2-rank group raises in trial 0's training step (``raise``) or is SIGSTOPped
    mid-trial (``sigstop``). Without deadlock the group ends (the raising rank ends its process
    instead of waiting in an allgather while rank 0 sits in the allreduce; a stopped rank's
    group is ended by rank 0 once the chief failed the trial); the chief fails trial 0 within
    --stall_timeout plus one heartbeat of the fault (plus tick and slack), re-issues its values,
    and a second group finishes the search (exit 0; one trial_end per trial)."""
    from tests.integration.test_distributed import tiny_flagfile

    flagfile = tiny_flagfile(tmp_path / "tiny.cfg")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    out, run_dir = tmp_path / "runs", tmp_path / "runs" / "hvd"
    common = [f"--flagfile={flagfile}", f"--chief_address={address}", "--search_id=hvdlive",
              f"--output_dir={out}", "--run_name=hvd", "--search.tuner=random", "--search.max_trials=2",
              "--launch.ranks_per_worker=2", "--launch.ranks_per_node=2",
              f"--heartbeat_interval={HVD_HEARTBEAT:g}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    for name in ("MLPF_FAULT", RAISE_ENV):
        env.pop(name, None)
    procs = []

    def start(cmd, name, extra_env=None):
        log = open(tmp_path / f"{name}.log", "w")
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=dict(env, **(extra_env or {})),
                                      stdout=log, stderr=subprocess.STDOUT))
        return procs[-1]

    def group(n, extra_env=None):
        return start([HOROVODRUN, "-np", "2", "-H", "localhost:2", "--gloo", sys.executable,
                      "-m", "benchmark.run", "--role=worker", f"--worker_id={n}", *common],
                     f"group{n}", extra_env)

    def log(name):
        return (tmp_path / f"{name}.log").read_text()[-3000:]

    try:
        chief = start([sys.executable, "-m", "benchmark.run", "--role=chief", *common,
                       f"--stall_timeout={HVD_STALL:g}", "--lease_timeout=120",
                       "--progress_interval=0"], "chief")
        # rank 1 raises before the first step of trial 0's second epoch
        first = group(1, {RAISE_ENV: "0@1:2"} if fault == "raise" else None)
        if fault == "raise":
            wait_for(lambda: first.poll() is not None, 300, "group 1 to end")
            fault_time = time.time()  # within a second or two of rank 1's raise
            assert "rank 1 of 2: trial 0 failed on this rank alone: RuntimeError: injected " \
                   "fault: rank 1 raises in trial 0's training step; ending the worker group" \
                   in log("group1"), log("group1")
            assert first.returncode != 0
        else:
            wait_for(lambda: any(r["trial_id"] == "0" for r in records_of(run_dir, "epoch")),
                     300, "trial 0's first epoch")
            pid = rank_pid(1, "--worker_id=1", f"--output_dir={out}")
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            fault_time = time.time()
        wait_for(lambda: records_of(run_dir, "trial_end"), HVD_STALL + 60,
                 "the chief to fail trial 0")
        failed = records_of(run_dir, "trial_end")[0]
        failed_after = failed["time"] - fault_time
        assert failed["trial_id"] == "0" and failed["status"] == "FAILED"
        assert failed["error"] == f"no progress for {HVD_STALL:g} s (worker 1)"
        # failed stall_timeout after the last progress the chief heard of, which is at most a
        # step and a heartbeat before the fault (upper bound: one heartbeat, tick and slack)
        assert HVD_STALL - 5.0 < failed_after <= HVD_STALL + HVD_HEARTBEAT + 1.0, failed_after
        assert first.wait(60) != 0  # the group ended, no rank left waiting in a collective
        assert rank_pid(1, "--worker_id=1", f"--output_dir={out}") is None
        second = group(2)
        assert chief.wait(400) == 0, log("chief") + log("group2")
        assert second.wait(60) == 0, log("group2")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for rank in (0, 1):
            pid = rank_pid(rank, f"--output_dir={out}")
            if pid is not None:
                os.kill(pid, signal.SIGKILL)
    ends = records_of(run_dir, "trial_end")
    assert len({r["trial_id"] for r in ends}) == len(ends) == 3  # trials 0, 1 and the re-run
    rerun = [r for r in ends if r["trial_id"] != "0"
             and r["hyperparameters"] == failed["hyperparameters"]]
    assert [r["status"] for r in rerun] == ["COMPLETED"]
    assert sum(r["status"] == "COMPLETED" for r in ends) == 2
    print(f"{fault}: trial 0 failed {failed_after:.2f} s after the fault (stall_timeout "
          f"{HVD_STALL:g} s, heartbeat {HVD_HEARTBEAT:g} s)")
