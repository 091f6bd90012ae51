"""Distributed search: leases, re-issues, the search-id guard, a killed worker, a killed chief.

The chief (:mod:`tuners.distributed.chief`) wraps stock keras-tuner oracles and our ASHA; workers are
stand-ins whose trials are sleeps (:func:`tuners.distributed.worker.run_sleep_worker`), as threads or as
``python -m tuners.distributed.worker`` processes, since the behaviour under test is not the training.
Loopback only. A real-training variant (``benchmark.run --workers=2``) is marked slow.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import keras_tuner
import pytest

from tuners.config import SearchConfig
from tuners.distributed.chief import Chief, ChiefError, parse_tuner_id, worker_tuner_id
from tuners.distributed.leases import LeaseError, LeaseTable
from tuners.distributed.worker import (
    ChiefClient,
    ChiefUnreachable,
    RemoteRecorder,
    RemoteTrial,
    Values,
    WrongSearch,
    run_sleep_worker,
)
from tuners.oracles import make_oracle
from tuners.records import read_records
from tuners.space import build_space

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = sys.executable
SID = "s1"


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def random_oracle(max_trials: int):
    hp = keras_tuner.HyperParameters()
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    hp.Int("units", 8, 64, step=8)
    return keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_loss", "min"), hyperparameters=hp,
        max_trials=max_trials, seed=3)


def asha_oracle(max_trials: int = 9):
    cfg = SearchConfig(tuner="asha", space="reduced", max_epochs=2, min_epochs=1,
                       reduction_factor=2, max_trials=max_trials, seed=1)
    return make_oracle(cfg, build_space("reduced"))


def make_chief(oracle, run_dir, **kwargs) -> Chief:
    kwargs.setdefault("progress_interval", 0)
    kwargs.setdefault("out", io.StringIO())
    return Chief(oracle, search_id=SID, run_dir=str(run_dir), **kwargs)


def ends_of(run_dir) -> list[dict]:
    path = os.path.join(str(run_dir), "trials.jsonl")
    if not os.path.exists(path):
        return []
    return [r for r in read_records(path) if r["event"] == "trial_end"]


W0, W1, W2, W3 = (worker_tuner_id(n, SID) for n in range(4))


# --- the lease table --------------------------------------------------------------------------


def test_lease_table_renews_expires_and_guards_holders():
    clock = FakeClock()
    table = LeaseTable(10.0, clock=clock)
    table.grant("0", "a", {"x": 1})
    table.grant("1", "b", {"x": 2})
    clock.now += 6
    assert table.renew("a") == ["0"]
    clock.now += 6  # "1" unrenewed for 12 s, "0" for 6 s
    assert table.next_expiry() == 0.0
    assert [lease.trial_id for lease in table.pop_expired()] == ["1"]
    assert "1" not in table and len(table) == 1
    with pytest.raises(LeaseError, match=r"^trial 0 is leased to a, not b$"):
        table.check("0", "b")
    with pytest.raises(LeaseError, match=r"^trial 1 is not leased \(it expired or has ended\)$"):
        table.check("1", "b")
    clock.now += 11
    assert [lease.trial_id for lease in table.pop_expired()] == ["0"]
    with pytest.raises(ValueError, match="lease timeout must be a finite number"):
        LeaseTable(0)


def test_tuner_ids_carry_worker_and_search():
    assert worker_tuner_id(7, "job-12") == "worker7@job-12"
    assert parse_tuner_id("worker7@job-12") == ("7", "job-12")
    with pytest.raises(ValueError, match=r"^tuner id 'tuner0' is not of the form "):
        parse_tuner_id("tuner0")


# --- the chief's decisions (no gRPC, a hand-driven clock) -------------------------------------


def test_expired_lease_fails_the_trial_once_and_reissues_its_values(tmp_path):
    clock = FakeClock()
    oracle = random_oracle(max_trials=3)
    chief = make_chief(oracle, tmp_path, lease_timeout=5.0, clock=clock)
    first = chief.create_trial(W0)
    second = chief.create_trial(W1)
    assert (first["status"], first["trial_id"], second["trial_id"]) == ("RUNNING", "0", "1")
    assert chief.create_trial(W0) == first  # a repeated call gets the same trial
    chief.update_trial(W1, "1", {"val_loss": 0.5}, step=1)
    clock.now += 4
    chief.heartbeat(W1)
    clock.now += 2  # W0 silent for 6 s > 5 s
    assert chief.expire() == ["0"]
    ends = ends_of(tmp_path)
    assert [(r["trial_id"], r["status"], r["error"], r["worker_id"]) for r in ends] == [
        ("0", "FAILED", "lease expired (worker 0)", "0")]
    assert ends[0]["hyperparameters"] == first["values"]
    assert oracle.trials["0"].status == "FAILED"
    assert chief.expire() == []  # exactly once
    # the next worker to ask gets the same values as a new trial
    reissued = chief.create_trial(W2)
    assert reissued["trial_id"] == "2"
    assert reissued["values"] == {**first["values"], "tuner/rerun_of": "0"}
    assert chief.progress()["lease_expired"] == 1
    # the dead worker, had it only been frozen, is refused everywhere
    assert chief.update_trial(W0, "0", {"val_loss": 0.1}, step=1)["status"] == "STOPPED"
    assert chief.record(W0, "0", "trial_end", {"status": "COMPLETED"}) == {
        "accepted": False, "reason": "trial 0 has ended"}
    assert chief.record(W0, "1", "epoch", {"epoch": 1}) == {
        "accepted": False, "reason": f"trial 1 is leased to {W1}, not {W0}"}
    assert chief.end_trial(W0, "0", "COMPLETED")["accepted"] is False
    assert len(ends_of(tmp_path)) == 1
    # max_trials=3 counts the re-run as the same trial: one more new trial is possible
    chief.update_trial(W2, "2", {"val_loss": 0.3}, step=1)
    assert chief.end_trial(W2, "2", "COMPLETED") == {"accepted": True}
    assert chief.end_trial(W2, "2", "COMPLETED") == {"accepted": True}  # repeated: idempotent
    assert chief.create_trial(W2)["trial_id"] == "3"


def test_asha_promotion_is_reissued_with_parent_and_initial_epoch(tmp_path):
    clock = FakeClock()
    oracle = asha_oracle()
    chief = make_chief(oracle, tmp_path, lease_timeout=5.0, clock=clock)
    for worker, loss in ((W0, 0.9), (W1, 0.4)):
        trial = chief.create_trial(worker)
        chief.update_trial(worker, trial["trial_id"], {"val_loss": loss}, step=1)
        chief.end_trial(worker, trial["trial_id"], "COMPLETED")
    promotion = chief.create_trial(W0)
    values = promotion["values"]
    assert (values["tuner/trial_id"], values["tuner/initial_epoch"], values["tuner/epochs"],
            values["tuner/rung"]) == ("1", 1, 2, 1)
    clock.now += 6
    chief.heartbeat(W1)
    assert chief.expire() == [promotion["trial_id"]]
    again = chief.create_trial(W1)
    assert again["trial_id"] != promotion["trial_id"]
    assert again["values"] == {**values, "tuner/rerun_of": promotion["trial_id"]}
    chief.update_trial(W1, again["trial_id"], {"val_loss": 0.2}, step=2)
    chief.end_trial(W1, again["trial_id"], "COMPLETED")
    assert oracle.rung_sizes() == [2, 1]  # the re-run's result counts at the promoted rung
    end = [r for r in ends_of(tmp_path) if r["trial_id"] == promotion["trial_id"]]
    assert [(r["parent_id"], r["initial_epoch"], r["rung"], r["target_epochs"]) for r in end] \
        == [("1", 1, 1, 2)]


def test_a_worker_that_recorded_its_end_before_vanishing_keeps_its_result(tmp_path):
    clock = FakeClock()
    oracle = random_oracle(max_trials=2)
    chief = make_chief(oracle, tmp_path, lease_timeout=5.0, clock=clock)
    trial = chief.create_trial(W0)
    chief.update_trial(W0, "0", {"val_loss": 0.25}, step=1)
    assert chief.record(W0, "0", "trial_end", {"status": "COMPLETED",
                                                "metrics": {"val_loss": 0.25}}) == {
        "accepted": True}
    clock.now += 6  # gone before end_trial: the logged end stands
    assert chief.expire() == ["0"]
    assert [r["status"] for r in ends_of(tmp_path)] == ["COMPLETED"]
    assert oracle.trials["0"].status == "COMPLETED"
    assert chief.create_trial(W1)["values"] != trial["values"]  # nothing re-issued
    assert chief.progress()["best"] == {"trial_id": "0", "objective": "val_loss", "value": 0.25}


def test_no_new_trials_keeps_one_standby_worker_until_the_last_trial_ends(tmp_path):
    oracle = random_oracle(max_trials=2)
    chief = make_chief(oracle, tmp_path)
    chief.create_trial(W0)
    chief.create_trial(W1)
    assert chief.create_trial(W2)["status"] == "IDLE"  # standby: a lease might expire
    assert chief.create_trial(W3)["status"] == "STOPPED"
    assert not chief.finished()
    for worker, trial_id in ((W0, "0"), (W1, "1")):
        chief.update_trial(worker, trial_id, {"val_loss": 1.0}, step=1)
        chief.end_trial(worker, trial_id, "COMPLETED")
    assert chief.finished()
    assert chief.create_trial(W2)["status"] == "STOPPED"


def test_progress_file_and_line(tmp_path):
    oracle = random_oracle(max_trials=4)
    chief = make_chief(oracle, tmp_path, node_hour_budget=2.0)
    for worker, status, loss in ((W0, "COMPLETED", 0.7), (W1, "FAILED", None),
                                 (W2, "COMPLETED", 0.3)):
        trial = chief.create_trial(worker)
        if loss is not None:
            chief.update_trial(worker, trial["trial_id"], {"val_loss": loss}, step=1)
        chief.end_trial(worker, trial["trial_id"], status, message="boom" if loss is None
                        else None)
    chief.create_trial(W3)
    info = chief.report_progress(print_line=True)
    with open(tmp_path / "progress.json") as fh:
        saved = json.load(fh)
    assert saved == info
    assert (info["completed"], info["failed"], info["running"], info["trials"]) == (2, 1, 1, 4)
    assert info["best"] == {"trial_id": "2", "objective": "val_loss", "value": 0.3}
    assert info["budget_left"]["trials_left"] == 0
    assert 2.0 - 0.01 < info["budget_left"]["node_hours_left"] <= 2.0
    line = chief.out.getvalue().strip().splitlines()[-1]
    assert "trials: 2 done, 1 running, 1 failed | best val_loss 0.3 (trial 2)" in line
    assert "left: 2 node-hours, 0 trials" in line


def test_chief_resumes_with_finished_trials_and_leases_the_running_ones(tmp_path):
    clock = FakeClock()
    chief = make_chief(asha_oracle(), tmp_path, lease_timeout=5.0, clock=clock)
    done = chief.create_trial(W0)
    chief.update_trial(W0, done["trial_id"], {"val_loss": 0.5}, step=1)
    chief.end_trial(W0, done["trial_id"], "COMPLETED")
    running = chief.create_trial(W1)
    # a new chief process on the same directory (the old one is simply gone, and with it its
    # lock on the state log)
    chief.log.close()
    clock2 = FakeClock()
    again = make_chief(asha_oracle(), tmp_path, lease_timeout=5.0, clock=clock2, resume=True)
    assert again.oracle.trials[done["trial_id"]].status == "COMPLETED"
    assert again.progress()["completed"] == 1 and again.progress()["running"] == 1
    # the old worker reconnects and finishes its trial on the new chief
    assert again.create_trial(W1) == running
    again.update_trial(W1, running["trial_id"], {"val_loss": 0.4}, step=1)
    assert again.end_trial(W1, running["trial_id"], "COMPLETED") == {"accepted": True}
    # a trial whose worker does not come back is re-issued after the lease timeout
    third = again.create_trial(W2)
    again.log.close()
    third_chief = make_chief(asha_oracle(), tmp_path, lease_timeout=5.0, clock=FakeClock(),
                             resume=True)
    third_chief.clock.now += 6
    assert third_chief.expire() == [third["trial_id"]]
    assert third_chief.create_trial(W0)["values"] == {**third["values"],
                                                      "tuner/rerun_of": third["trial_id"]}
    assert third_chief.progress()["completed"] == 2


# --- over gRPC --------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    chief = make_chief(random_oracle(max_trials=4), tmp_path, lease_timeout=30.0)
    port = chief.start("127.0.0.1:0")
    yield chief, f"127.0.0.1:{port}"
    chief.stop(grace=0)


@pytest.mark.timeout(60)
def test_worker_of_another_search_is_refused(served):
    chief, address = served
    with ChiefClient(address, 3, "other-search", retry_for=2.0, secret=chief.secret) as client:
        with pytest.raises(WrongSearch) as err:
            client.create_trial()
    assert str(err.value) == (
        f"chief at {address} refused worker worker3@other-search: wrong search: the caller "
        "belongs to search 'other-search', this chief serves another one")
    assert chief.oracle.trials == {}


@pytest.mark.timeout(60)
def test_port_in_use_names_the_port(served, tmp_path):
    chief, address = served
    other = make_chief(random_oracle(max_trials=1), tmp_path / "b")
    with pytest.raises(ChiefError) as err:
        other.start(address)
    assert str(err.value) == (
        f"cannot listen on {address}: port {chief.port} is in use (or 127.0.0.1 is not an "
        "address of this machine); choose another port in --chief_address")


@pytest.mark.timeout(60)
def test_unreachable_chief_retries_with_backoff_then_names_the_address():
    port = free_port()
    lines: list[str] = []
    client = ChiefClient(f"127.0.0.1:{port}", 0, SID, retry_for=1.5, backoff_initial=0.2,
                         backoff_max=0.4, rpc_timeout=2.0, log=lines.append)
    start = time.monotonic()
    with pytest.raises(ChiefUnreachable) as err:
        client.create_trial()
    client.close()
    assert time.monotonic() - start >= 1.0
    message = str(err.value)
    assert message.startswith(f"cannot reach the chief at 127.0.0.1:{port}: ")
    assert message.endswith("is the chief running and is --chief_address right?")
    assert client.retries >= 3  # 0.2, 0.4, 0.4, ... within 1.5 s
    assert lines[0].startswith(f"worker 0: chief at 127.0.0.1:{port} unreachable (UNAVAILABLE)")


@pytest.mark.timeout(60)
def test_threads_search_with_heartbeats_records_every_trial_once(served, tmp_path):
    chief, address = served
    logs = []

    def worker(n):
        with ChiefClient(address, n, SID, heartbeat_interval=0.1,
                         secret=chief.secret) as client:
            logs.append(run_sleep_worker(client, trial_seconds=lambda v: 0.3, idle_wait=0.05,
                                         records=True,
                                         epoch_updates=True))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    assert chief.serve(tick=0.05, drain=2.0) == "finished"
    for thread in threads:
        thread.join(10)
    assert sorted(r["trial_id"] for r in ends_of(tmp_path)) == ["0", "1", "2", "3"]
    assert all(r["status"] == "COMPLETED" for r in ends_of(tmp_path))
    assert sum(log.trials for log in logs) == 4 and not any(log.error for log in logs)


@pytest.mark.timeout(60)
def test_one_round_trip_per_trial_and_an_unused_prefetched_trial_is_given_back(served):
    chief, address = served  # random search, 4 trials
    calls: list[str] = []
    client = ChiefClient(address, 0, SID, heartbeat_interval=0, secret=chief.secret)
    plain_call = client._call
    client._call = lambda method, **kw: calls.append(method) or plain_call(method, **kw)
    first = client.create_trial()
    assert client.end_trial(RemoteTrial(first.trial_id, "COMPLETED", Values({})),
                            metrics={"val_loss": 0.25}, step=3)
    second = client.create_trial()  # prefetched by end_trial: no call
    assert calls == ["CreateTrial", "EndAndCreate"]
    assert (first.trial_id, second.trial_id, second.status) == ("0", "1", "RUNNING")
    ended = chief.oracle.trials["0"]
    assert (ended.status, ended.score, ended.best_step) == ("COMPLETED", 0.25, 3)
    # stopping with a prefetched, unstarted trial gives it back; the next worker gets its values
    assert client.end_trial(RemoteTrial("1", "COMPLETED", Values({})),
                            metrics={"val_loss": 0.5}, step=1)
    unused = client._next
    client.close()
    assert calls[-2:] == ["EndAndCreate", "GiveBack"]
    assert chief.oracle.trials[unused["trial_id"]].status == "FAILED"
    assert chief.oracle.trials[unused["trial_id"]].message == "returned unstarted (worker 0)"
    with ChiefClient(address, 1, SID, heartbeat_interval=0, secret=chief.secret) as other:
        rerun = other.create_trial()
        assert rerun.hyperparameters.values == {**unused["values"],
                                                "tuner/rerun_of": unused["trial_id"]}
        assert rerun.trial_id not in ("0", "1", unused["trial_id"])
    assert chief.give_back(W1, "0") == {"accepted": False,
                                        "reason": f"trial 0 is not leased to {W1}"}


def test_end_trial_may_carry_the_last_update(tmp_path):
    chief = make_chief(random_oracle(max_trials=2), tmp_path)
    trial = chief.create_trial(W0)
    assert chief.end_trial(W0, trial["trial_id"], "COMPLETED", metrics={"val_loss": 0.3},
                           step=2) == {"accepted": True}
    ended = chief.oracle.trials[trial["trial_id"]]
    assert (ended.status, ended.score, ended.best_step) == ("COMPLETED", 0.3, 2)
    both = chief.end_and_create(W1, "7", "COMPLETED", metrics={"val_loss": 0.1})
    assert both["end"] == {"accepted": False, "reason": f"trial 7 not ended by {W1}: its lease "
                                                        "expired or it has ended"}
    assert both["next"]["status"] == "RUNNING" and both["next"]["trial_id"] == "1"


def test_remote_recorder_sends_records_to_the_chief_and_drops_those_of_a_lost_trial(tmp_path):
    class Client:
        def __init__(self):
            self.sent = []

        def record(self, event, trial_id, **fields):
            self.sent.append((event, trial_id, fields))
            return trial_id != "5"

    client = Client()
    remote = RemoteRecorder(client)
    assert remote.append("trial_start", "6", rung=0) is True
    assert remote.append("trial_end", "5", status="COMPLETED") is False
    assert client.sent == [("trial_start", "6", {"rung": 0}),
                           ("trial_end", "5", {"status": "COMPLETED"})]
    assert not os.path.exists(tmp_path / "trials.jsonl")  # a worker writes no file
    assert RemoteTrial("1", "RUNNING", Values({"a": 1})).hyperparameters.values == {"a": 1}


def test_records_go_through_the_log_in_order_and_only_from_the_holder(tmp_path):
    chief = make_chief(random_oracle(max_trials=2), tmp_path)
    trial = chief.create_trial(W0)["trial_id"]
    assert chief.record(W0, trial, "trial_start", {"rung": None, "worker_id": "forged"}) == {
        "accepted": True}
    assert chief.record(W1, trial, "epoch", {"epoch": 1})["accepted"] is False
    assert chief.record(W0, trial, "epoch", {"epoch": 1, "metrics": {"val_loss": 0.4}}) == {
        "accepted": True}
    with pytest.raises(ValueError, match="trial_end needs status"):
        chief.record(W0, trial, "trial_end", {"status": "DONE"})
    assert chief.record(W0, trial, "trial_end", {"status": "COMPLETED",
                                                 "metrics": {"val_loss": 0.4}})["accepted"]
    assert chief.record(W0, trial, "trial_end", {"status": "COMPLETED"}) == {
        "accepted": True}  # a retried call: logged once
    assert chief.end_trial(W0, trial, "COMPLETED", metrics={"val_loss": 0.4}, step=1) == {
        "accepted": True}
    recs = list(read_records(tmp_path / "trials.jsonl"))
    assert [(r["event"], r["worker_id"]) for r in recs] == [
        ("trial_start", "0"), ("epoch", "0"), ("trial_end", "0")]  # the holder, not "forged"
    from tuners.distributed.statelog import LOG_FILE, read_log
    entries, _ = read_log(str(tmp_path / LOG_FILE))
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert [e["kind"] for e in entries] == ["create", "record", "record", "record"]
    assert [e["record"] for e in entries[1:]] == recs  # trials.jsonl follows the log


# --- processes: SIGKILL a worker, SIGKILL the chief -------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_worker(n: int, address: str, run_dir, seconds: float, *extra: str):
    cmd = [PY, "-m", "tuners.distributed.worker", f"--chief_address={address}", f"--search_id={SID}",
           f"--worker_id={n}", f"--run_dir={run_dir}", f"--trial_seconds={seconds}",
           "--heartbeat_interval=0.3", "--idle_wait=0.2", *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def assert_each_trial_ended_once(run_dir, trial_ids) -> dict[str, dict]:
    ends = ends_of(run_dir)
    ids = [r["trial_id"] for r in ends]
    assert sorted(ids) == sorted(trial_ids) and len(set(ids)) == len(ids)
    return {r["trial_id"]: r for r in ends}


@pytest.mark.timeout(120)
def test_sigkill_of_a_worker_mid_trial(tmp_path):
    oracle = random_oracle(max_trials=5)
    chief = make_chief(oracle, tmp_path, lease_timeout=2.0)
    port = chief.start("127.0.0.1:0")
    address = f"127.0.0.1:{port}"
    outcome: list[str] = []
    server = threading.Thread(target=lambda: outcome.append(chief.serve(tick=0.1, drain=5.0)))
    server.start()
    victim = start_worker(1, address, tmp_path, 30.0)  # its trial would take 30 s
    try:
        wait_for(lambda: any(lease.worker.startswith(W1 + "#") for lease in chief.leases.leases()), 60,
                 "worker 1 to hold a trial")
        killed = next(lease for lease in chief.leases.leases() if lease.worker.startswith(W1))
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        survivor = start_worker(0, address, tmp_path, 0.3)
        out, err = survivor.communicate(timeout=90)
        assert survivor.returncode == 0, err
    finally:
        for proc in (victim,):
            if proc.poll() is None:
                proc.kill()
        server.join(20)  # the chief ends by itself once the search is done
        chief.request_stop()
        server.join(30)
    assert outcome == ["finished"]  # the chief ended although a worker died
    ends = assert_each_trial_ended_once(tmp_path, oracle.trials)
    dead = ends[killed.trial_id]
    assert (dead["status"], dead["error"]) == ("FAILED", "lease expired (worker 1)")
    rerun = [r for r in ends.values() if r["trial_id"] != killed.trial_id
             and r["hyperparameters"] == dead["hyperparameters"]]
    assert len(rerun) == 1 and rerun[0]["status"] == "COMPLETED" and rerun[0]["worker_id"] == "0"
    assert sum(r["status"] == "COMPLETED" for r in ends.values()) == 5
    assert json.loads(out.strip().splitlines()[-1])["trials"] == 5


@pytest.mark.timeout(240)
def test_sigkill_and_restart_of_the_chief(tmp_path):
    port = free_port()
    address = f"127.0.0.1:{port}"
    run_dir = tmp_path / "search"
    chief_cmd = [PY, "-m", "benchmark.run", "--role=chief", f"--chief_address={address}",
                 f"--search_id={SID}", f"--output_dir={tmp_path}", "--run_name=search",
                 "--tuner=random", "--max_trials=6", "--lease_timeout=20",
                 "--progress_interval=1"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    log1 = open(tmp_path / "chief1.log", "w")
    chief = subprocess.Popen(chief_cmd, cwd=ROOT, stdout=log1, stderr=subprocess.STDOUT,
                             env=env)
    workers = [start_worker(n, address, run_dir, 1.0, "--retry_for=150") for n in range(2)]
    chief2 = None
    try:
        wait_for(lambda: len(ends_of(run_dir)) >= 2, 150, "two finished trials")
        before = {r["trial_id"]: r for r in ends_of(run_dir)}
        chief.send_signal(signal.SIGKILL)
        chief.wait(10)
        log2 = open(tmp_path / "chief2.log", "w")
        chief2 = subprocess.Popen([*chief_cmd, "--resume"], cwd=ROOT, stdout=log2,
                                  stderr=subprocess.STDOUT, env=env)
        assert chief2.wait(180) == 0, (tmp_path / "chief2.log").read_text()[-3000:]
        for proc in workers:
            try:
                out, err = proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
                raise AssertionError(err[-3000:]) from None
            assert proc.returncode == 0, err
    finally:
        for proc in [chief, chief2, *workers]:
            if proc is not None and proc.poll() is None:
                proc.kill()
    text = (tmp_path / "chief2.log").read_text()
    assert "resumed search s1: " in text
    ends = assert_each_trial_ended_once(run_dir, [str(i) for i in range(6)])
    for trial_id, record in before.items():  # earlier results kept, not re-run
        assert ends[trial_id] == record
    assert all(r["status"] == "COMPLETED" for r in ends.values())
    with open(run_dir / "best.json") as fh:
        best = json.load(fh)
    assert (best["trials"], best["completed"], best["search_id"]) == (6, 6, SID)
    with open(run_dir / "progress.json") as fh:
        progress = json.load(fh)
    assert (progress["state"], progress["completed"], progress["running"]) == ("finished", 6, 0)
    # The chief logs the allocation: the killed run has no stop, the resumed one does.
    from tuners.mllog import read_mllog

    marks = [(e.key, e.metadata.get("status")) for e in read_mllog(run_dir / "mllog.txt")
             if e.key in ("run_start", "run_stop")]
    assert marks == [("run_start", None), ("run_start", None), ("run_stop", "finished")]


# --- real training: benchmark.run --workers=2 (slow) ------------------------------------------


def tiny_flagfile(path) -> str:
    from benchmark import experiments

    lines = []
    for section, fields in experiments.tiny_overrides(os.path.join(ROOT, ".data", "tfds"),
                                                      max_trials=4).items():
        for name, value in fields.items():
            if (section, name) in (("launch", "workers"), ("launch", "threads_per_rank")):
                continue
            value = str(value).lower() if isinstance(value, bool) else value
            lines.append(f"--{section}.{name}={value}")
    lines.append("--launch.threads_per_rank=1")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def pid_of(*needles: str, environ: str | None = None) -> int | None:
    """A process (not horovodrun) whose command line holds ``needles`` and, if given, whose
    environment holds the entry ``environ`` (e.g. ``HOROVOD_RANK=1``)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace")
            if environ is not None:
                with open(f"/proc/{entry}/environ", "rb") as fh:
                    if environ.encode() not in fh.read().split(b"\0"):
                        continue
        except OSError:
            continue
        if all(needle in cmdline for needle in needles) and "horovodrun" not in cmdline:
            return int(entry)
    return None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_local_launcher_survives_a_killed_worker_group(tmp_path):
    """benchmark.run --workers=2 trains the tiny MLPF search; worker group 1 is SIGKILLed."""
    flagfile = tiny_flagfile(tmp_path / "tiny.cfg")
    run_dir = tmp_path / "runs" / "dist"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    cmd = [PY, "-m", "benchmark.run", f"--flagfile={flagfile}", "--workers=2",
           f"--output_dir={tmp_path / 'runs'}", "--run_name=dist", "--lease_timeout=15",
           "--heartbeat_interval=1", "--progress_interval=5"]
    with open(tmp_path / "launcher.log", "w") as log:
        launcher = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env=env)
        try:
            starts = lambda: [r for r in read_records(run_dir / "trials.jsonl")  # noqa: E731
                              if r["event"] == "trial_start" and r["worker_id"] == "1"] \
                if (run_dir / "trials.jsonl").exists() else []
            wait_for(lambda: starts(), 600, "worker group 1 to start a trial")
            victim = starts()[0]["trial_id"]
            pid = pid_of("--worker_id=1", f"--output_dir={tmp_path / 'runs'}")
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            assert launcher.wait(600) == 0, (tmp_path / "launcher.log").read_text()[-3000:]
        finally:
            if launcher.poll() is None:
                launcher.send_signal(signal.SIGINT)
                launcher.wait(60)
    ends = {r["trial_id"]: r for r in ends_of(run_dir)}
    assert len(ends) == len(list(ends_of(run_dir)))  # each trial ended once
    if ends[victim]["status"] == "FAILED":  # killed before it finished (the usual case)
        assert ends[victim]["error"] == "lease expired (worker 1)"
    assert sum(r["status"] == "COMPLETED" for r in ends.values()) == 4
    with open(run_dir / "best.json") as fh:
        assert json.load(fh)["completed"] == 4
    assert "worker group(s) 1 failed; see" in (tmp_path / "launcher.log").read_text()
    from tuners.mllog import read_mllog

    marks = [(e.key, e.value, e.metadata.get("status")) for e in read_mllog(run_dir / "mllog.txt")
             if e.key in ("run_start", "number_of_nodes", "run_stop")]
    assert marks == [("run_start", None, None), ("number_of_nodes", 2, None),
                     ("run_stop", None, "finished")]


def test_an_oracle_error_reaches_the_caller_and_does_not_lock_the_oracle(tmp_path):
    oracle = random_oracle(max_trials=3)
    chief = make_chief(oracle, tmp_path)
    trial = chief.create_trial(W0)
    with pytest.raises(ValueError, match="Objective value missing"):
        chief.update_trial(W0, trial["trial_id"], {"loss": 1.0}, step=1)
    result = []
    other = threading.Thread(target=lambda: result.append(chief.create_trial(W1)))
    other.start()
    other.join(10)
    assert result and result[0]["status"] == "RUNNING"  # not blocked by a leaked lock


# --- benchmark.run's role flags ---------------------------------------------------------------


def role_flags(*argv):
    from absl import flags

    from benchmark import run

    fv = flags.FlagValues()
    run.define_run_flags(fv)
    fv(["benchmark.run", *argv])
    return fv


def test_role_flags_are_checked_before_anything_starts():
    from benchmark.launcher import RoleError, check_role_flags

    assert check_role_flags(role_flags(), workers=1) == "single"
    assert check_role_flags(role_flags(), workers=3) == "standalone"
    assert check_role_flags(role_flags("--role=chief", "--chief_address=node1:8470"), 4) \
        == "chief"
    cases = {
        ("--role=worker", "--chief_address=h:1", "--search_id=s"): "--role=worker needs "
                                                                  "--worker_id",
        ("--role=worker", "--worker_id=1", "--chief_address=h:1", "--search_id=a@b"):
            "--search_id='a@b': must not contain '@'",
        ("--role=worker", "--worker_id=1", "--chief_address=h", "--search_id=s"):
            "--chief_address: chief address 'h': expected HOST:PORT, e.g. 127.0.0.1:8470",
        ("--role=chief",): "--role=chief needs --chief_address=HOST:PORT (where to listen)",
        ("--worker_id=2",): "--worker_id='2' is only for --role=worker",
    }
    for argv, message in cases.items():
        with pytest.raises(RoleError) as err:
            check_role_flags(role_flags(*argv), workers=1)
        assert str(err.value) == message


def test_worker_commands_carry_the_users_flags_and_the_role(tmp_path, monkeypatch):
    from benchmark.launcher import RoleError, worker_command

    argv = ["--tuner=asha", "--workers=2", "--resume", "--role=standalone", "--max_trials=8"]
    assert worker_command(argv, 1, "127.0.0.1:5000", "sid", ranks=1, python="py") == [
        "py", "-m", "benchmark.run", "--tuner=asha", "--workers=2", "--max_trials=8",
        "--role=worker", "--worker_id=1", "--chief_address=127.0.0.1:5000", "--search_id=sid"]
    # horovodrun beside the interpreter (an unactivated venv) wins over the one on PATH
    env_bin, path_bin = tmp_path / "venv" / "bin", tmp_path / "elsewhere"
    for directory in (env_bin, path_bin):
        directory.mkdir(parents=True)
        (directory / "horovodrun").write_text("#!/bin/sh\n")
        (directory / "horovodrun").chmod(0o755)
    monkeypatch.setenv("PATH", str(path_bin))
    python = str(env_bin / "python")
    assert worker_command(argv, 0, "127.0.0.1:5000", "sid", ranks=2, python=python)[:6] == [
        str(env_bin / "horovodrun"), "-np", "2", "-H", "localhost:2", "--gloo"]
    (env_bin / "horovodrun").unlink()
    assert worker_command(argv, 0, "a:1", "sid", ranks=2, python=python)[0] == str(
        path_bin / "horovodrun")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RoleError) as err:
        worker_command(argv, 0, "a:1", "sid", ranks=2, python=python)
    assert str(err.value) == (
        f"--launch.ranks_per_worker > 1 needs horovodrun, found neither beside {python} nor "
        "on PATH; install Horovod in this environment")


def test_one_fsync_per_call_that_changes_state_and_none_for_progress_records(tmp_path):
    chief = make_chief(random_oracle(max_trials=3), tmp_path)
    log = chief.log
    trial = chief.create_trial(W0)["trial_id"]
    assert (log.fsyncs, log.synced, log.seq) == (1, 1, 1)  # the hand-out is on disk
    chief.record(W0, trial, "trial_start", {})
    chief.record(W0, trial, "epoch", {"epoch": 1, "metrics": {"val_loss": 0.5}})
    chief.update_trial(W0, trial, {"val_loss": 0.5}, step=1)
    assert (log.fsyncs, log.synced, log.seq) == (1, 1, 3)  # progress rides with the next
    chief.record(W0, trial, "trial_end", {"status": "COMPLETED"})
    assert (log.fsyncs, log.synced, log.seq) == (2, 4, 4)
    both = chief.end_and_create(W0, trial, "COMPLETED")  # the next hand-out: one more
    assert both["next"]["status"] == "RUNNING"
    assert (log.fsyncs, log.synced, log.seq) == (3, 5, 5)


def test_a_resumed_chiefs_leases_count_from_when_it_listens(tmp_path):
    chief = make_chief(random_oracle(max_trials=3), tmp_path, lease_timeout=5.0,
                       clock=FakeClock())
    running = chief.create_trial(W0)["trial_id"]
    chief.log.close()  # the chief process is gone
    clock = FakeClock()
    again = make_chief(random_oracle(max_trials=3), tmp_path, lease_timeout=5.0, clock=clock,
                       resume=True)
    clock.now += 30  # a slow start (imports, a large log to replay)
    again.start("127.0.0.1:0")
    try:
        assert again.expire() == []  # its worker still has the whole lease to come back
        clock.now += 6
        assert again.expire() == [running]
    finally:
        again.stop(grace=0)
