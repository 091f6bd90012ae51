"""Crash at every named fault point (:mod:`tuners.faults`), resume, and check what survived.

Each scenario runs a real chief process (``benchmark.run --role=chief``) and stand-in worker
processes (``python -m tuners.distributed.worker``) on loopback. A victim worker is SIGKILLed mid-trial so
that the chief has lease expiries to record; one process (the chief or worker 0) is killed by
``MLPF_FAULT=<point>:<k>`` just before (``<point>``) or just after (``<point>+``) its k-th
write of that kind. A killed chief is restarted with ``--resume``; a killed worker is replaced.
After the search has finished:

- the chief exited 0 and every trial the oracle knows has exactly one ``trial_end``;
- no COMPLETED result was lost: every trial recorded COMPLETED is COMPLETED in the oracle,
  and the oracle's status of every trial is the one ``trials.jsonl`` records;
- the search reached its trial budget in completed trials (a lost re-issue would leave it
  short).

Points x windows x tuners: 4 points x 2 windows x 2 tuners (random: keras-tuner's state
files, asha: the journal) = 16 scenarios. Slow (about 20 s each): run with ``-m slow``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tuners.faults import POINTS
from tuners.records import read_records

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SID = "faults1"
MAX_TRIALS = 6
TUNER_FLAGS = {
    "random": ["--tuner=random"],
    "asha": ["--tuner=asha", "--search.min_epochs=1", "--search.max_epochs=2",
             "--search.reduction_factor=2"],
}
# the k-th write at which to crash: late enough that the search is under way
NTH = {"log.append": 6, "oracle.save": 3, "worker.record_end": 2, "worker.end_call": 2}
SCENARIOS = [(tuner, point + window) for tuner in TUNER_FLAGS for point in POINTS
             for window in ("", "+")]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ends_of(run_dir) -> list[dict]:
    path = os.path.join(run_dir, "trials.jsonl")
    return [r for r in read_records(path) if r["event"] == "trial_end"] if os.path.exists(
        path) else []


def starts_by(run_dir, worker: str) -> list[dict]:
    path = os.path.join(run_dir, "trials.jsonl")
    if not os.path.exists(path):
        return []
    return [r for r in read_records(path) if r["event"] == "trial_start"
            and r["worker_id"] == worker]


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("tuner, fault", SCENARIOS, ids=[f"{t}-{f}" for t, f in SCENARIOS])
def test_crash_at_a_fault_point_then_resume(tuner, fault, tmp_path):
    point = fault.rstrip("+")
    address = f"127.0.0.1:{free_port()}"
    run_dir = str(tmp_path / "search")
    base_env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    base_env.pop("MLPF_FAULT", None)
    fault_env = dict(base_env, MLPF_FAULT=f"{fault}:{NTH[point]}")
    chief_cmd = [sys.executable, "-m", "benchmark.run", "--role=chief",
                 f"--chief_address={address}", f"--search_id={SID}",
                 f"--output_dir={tmp_path}", "--run_name=search", "--search.space=reduced",
                 f"--max_trials={MAX_TRIALS}", "--lease_timeout=2", "--progress_interval=0",
                 "--search.max_consecutive_failed_trials=2", *TUNER_FLAGS[tuner]]

    def chief(resume: bool, env):
        log = open(tmp_path / f"chief{len(chiefs)}.log", "w")
        return subprocess.Popen([*chief_cmd, *(["--resume"] if resume else [])], cwd=ROOT,
                                env=env, stdout=log, stderr=subprocess.STDOUT)

    def worker(n: int, seconds: float, env):
        log = open(tmp_path / f"worker{n}.log", "w")
        return subprocess.Popen(
            [sys.executable, "-m", "tuners.distributed.worker", f"--chief_address={address}",
             f"--search_id={SID}", f"--worker_id={n}", f"--run_dir={run_dir}",
             f"--trial_seconds={seconds}", "--heartbeat_interval=0.3", "--idle_wait=0.1",
             "--retry_for=90"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    chiefs: list[subprocess.Popen] = []
    chiefs.append(chief(False, fault_env if point.startswith(("log", "oracle")) else base_env))
    victim = worker(9, 60.0, base_env)
    workers = [worker(0, 0.3, fault_env if point.startswith("worker") else base_env)]
    procs = [victim, *workers]
    crashed = []
    try:
        deadline = time.monotonic() + 60
        while not starts_by(run_dir, "9"):
            assert time.monotonic() < deadline, "the victim never started a trial"
            if chiefs[-1].poll() == -signal.SIGKILL and not crashed:  # crashed this early
                crashed.append("chief")
                chiefs.append(chief(True, base_env))
            time.sleep(0.1)
        victim.send_signal(signal.SIGKILL)  # the chief will record its lease expiry
        workers.append(worker(1, 0.3, base_env))
        procs.append(workers[-1])
        deadline = time.monotonic() + 200
        while chiefs[-1].poll() != 0:
            assert time.monotonic() < deadline, (tmp_path / f"chief{len(chiefs) - 1}.log"
                                                 ).read_text()[-2000:]
            code = chiefs[-1].poll()
            if code == -signal.SIGKILL:
                crashed.append("chief")
                chiefs.append(chief(True, base_env))
            elif code is not None:
                raise AssertionError(f"chief exited {code}: " + (
                    tmp_path / f"chief{len(chiefs) - 1}.log").read_text()[-2000:])
            if workers[0].poll() == -signal.SIGKILL and "worker" not in crashed:
                crashed.append("worker")
                workers.append(worker(2, 0.3, base_env))
                procs.append(workers[-1])
            time.sleep(0.1)
    finally:
        for proc in [*chiefs, *procs]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert crashed, f"the fault point {fault}:{NTH[point]} was never reached"

    ends = ends_of(run_dir)
    ids = [r["trial_id"] for r in ends]
    assert len(ids) == len(set(ids)), f"duplicate ends: {sorted(ids)}"
    statuses = {r["trial_id"]: r["status"] for r in ends}
    oracle_state = oracle_statuses(run_dir, tuner)
    assert sorted(oracle_state) == sorted(statuses)  # every trial ended exactly once
    assert oracle_state == statuses  # the oracle agrees with trials.jsonl (no lost COMPLETED)
    assert sum(s == "COMPLETED" for s in statuses.values()) >= MAX_TRIALS  # no re-issue lost
    with open(os.path.join(run_dir, "progress.json")) as fh:
        assert json.load(fh)["state"] == "finished"


def oracle_statuses(run_dir: str, tuner: str) -> dict[str, str]:
    """Trial statuses of the oracle state the chief left, reloaded as a resumed chief would."""
    from tuners.config import SearchConfig
    from tuners.oracles import make_oracle
    from tuners.space import build_space

    extra = {"random": {}, "asha": dict(min_epochs=1, max_epochs=2, reduction_factor=2)}
    cfg = SearchConfig(tuner=tuner, space="reduced", max_trials=MAX_TRIALS, **extra[tuner])
    oracle = make_oracle(cfg, build_space("reduced"))
    oracle._set_project_dir(run_dir, "keras_tuner")
    oracle.reload()
    return {t.trial_id: t.status for t in oracle.trials.values()}
