"""Every fault point x crash window x tuner, in-process and deterministic, with a fake clock.

The subprocess suite (``test_fault_points.py``, slow) kills real processes with SIGKILL. This
one runs each scenario in this process in well under a second, so it runs with ``make test``:

- a :class:`~tuners.distributed.chief.Chief` object on a run directory, driven by simulated
  workers that call its methods in a fixed round-robin order (no gRPC, no threads), a fake
  clock advanced one second a round, ``expire`` called every round as ``serve`` would;
- a victim worker that takes one trial and is never heard of again (its lease expires, the
  chief ends the trial FAILED and re-issues its values), so every scenario has a loss to
  record and a re-issue to keep;
- the crash is planned with :func:`tuners.faults.plan`: the k-th pass through the point
  raises :class:`~tuners.faults.FaultInjected`. ``log.append`` is passed by every kind of
  state write, so it is crashed at four k's per window and tuner, found by a run without
  faults: the first hand-out after a lost worker (the re-issue), the first record after it,
  a worker's first ``trial_end`` and the chief's first ``trial_end`` (the lost worker's). A crashed chief is dropped as a killed process
  would be (its log closed, nothing flushed) and a new ``Chief(resume=True)`` with a fresh oracle
  is built from the run directory; the workers keep their sessions and repeat the call whose
  answer they never got. A crashed worker is gone for good and a new one (another id) joins.

After the search: it finished; every trial id has exactly one ``trial_end`` in
``trials.jsonl``; every end a worker was told was accepted (COMPLETED) is there as COMPLETED;
a fresh oracle reloaded from the run directory has exactly the statuses of ``trials.jsonl``;
a resumed chief on the final directory finds nothing running and nothing to re-issue. The state
log is not fsynced here (``log_fsync=False``): an in-process crash cannot lose the page cache.
"""

from __future__ import annotations

import functools
import io
import os
import random
import secrets
import tempfile
from unittest import mock

import pytest

from tuners import faults
from tuners.config import SearchConfig
from tuners.distributed.chief import Chief, holder_id, worker_tuner_id
from tuners.distributed.statelog import StateLog, read_log
from tuners.distributed.worker import synthetic_objective
from tuners.oracles import make_oracle
from tuners.records import read_records
from tuners.space import build_space

SID = "suite1"
LEASE = 3.0
CONFIGS = {
    "random": dict(tuner="random", max_trials=5, min_epochs=1, max_epochs=2),
    "hyperband": dict(tuner="hyperband", min_epochs=1, max_epochs=2, reduction_factor=2,
                      hyperband_iterations=1, max_trials=0),
    "asha": dict(tuner="asha", min_epochs=1, max_epochs=2, reduction_factor=2, max_trials=6),
    "asha_bo": dict(tuner="asha_bo", min_epochs=1, max_epochs=2, reduction_factor=2,
                    max_trials=6, num_initial_points=3, bo_gp_restarts=0),
}
# the k-th pass at which to crash (the search is under way by then); log.append: which
# write, see log_kinds
NTH = {"oracle.save": 5, "worker.record_end": 2, "worker.end_call": 2}
LOG_WRITES = ("reissue", "record", "worker_end", "chief_end")
SCENARIOS = [(tuner, point + window, write) for tuner in CONFIGS for point in faults.POINTS
             for window in ("", "+")
             for write in (LOG_WRITES if point == "log.append" else (None,))]


def test_the_suite_covers_every_point_window_and_tuner():
    assert len(faults.POINTS) == 4 and set(NTH) | {"log.append"} == set(faults.POINTS)
    assert len(SCENARIOS) == (3 + len(LOG_WRITES)) * 2 * 4 == 56
    print(f"{len(faults.POINTS)} fault points (log.append at {len(LOG_WRITES)} kinds of "
          f"write) x 2 windows x {len(CONFIGS)} tuners = {len(SCENARIOS)} scenarios")


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class Search:
    """A chief that can crash and be rebuilt from its run directory."""

    def __init__(self, tuner: str, run_dir: str):
        self.cfg = SearchConfig(space="reduced", seed=3, max_consecutive_failed_trials=2,
                                **CONFIGS[tuner])
        self.run_dir = run_dir
        self.clock = FakeClock()
        self.restarts = 0
        self.chief = self._build(resume=False)

    def oracle(self):
        return make_oracle(self.cfg, build_space("reduced"))

    def _build(self, resume: bool) -> Chief:
        return Chief(self.oracle(), search_id=SID, run_dir=self.run_dir, resume=resume,
                     lease_timeout=LEASE, clock=self.clock, progress_interval=0,
                     out=io.StringIO(), default_epochs=self.cfg.max_epochs, log_fsync=False)

    def crashed(self) -> None:
        """The chief process died: its log handle goes (nothing is flushed); restart it."""
        self.chief.log.close()
        self.restarts += 1
        self.chief = self._build(resume=True)

    def call(self, method: str, *args, **kwargs):
        """One call to the chief; a crash inside it restarts the chief and the caller repeats
        the call (its answer was lost)."""
        while True:
            try:
                return getattr(self.chief, method)(*args, **kwargs)
            except faults.FaultInjected as exc:
                if exc.point.startswith("worker."):
                    raise
                self.crashed()


class Worker:
    """A stand-in worker group: one trial at a time, an epoch per round, records to the
    chief, then its end. ``vanish_after_start``: takes one trial, then is never heard of."""

    def __init__(self, n: int, search: Search, vanish_after_start: bool = False):
        self.holder = holder_id(worker_tuner_id(n, SID), secrets.token_hex(16))
        self.search = search
        self.vanish = vanish_after_start
        self.trial: dict | None = None
        self.epoch = 0
        self.alive = True
        self.stopped = False
        self.rng = random.Random(n)
        self.completed: set[str] = set()  # ends the chief accepted from this worker

    def step(self) -> None:
        call = self.search.call
        if self.trial is None:
            reply = call("create_trial", self.holder)
            if reply["status"] == "STOPPED":
                self.stopped = True
            elif reply["status"] == "RUNNING":
                self.trial = reply
                values = reply["values"]
                self.epoch = int(values.get("tuner/initial_epoch", 0) or 0)
                call("record", self.holder, reply["trial_id"], "trial_start",
                     {"hyperparameters": values, "initial_epoch": self.epoch})
                if self.vanish:
                    self.alive = False
            return
        trial_id, values = self.trial["trial_id"], self.trial["values"]
        last = int(values.get("tuner/epochs", self.search.cfg.max_epochs) or 1)
        call("heartbeat", self.holder, trial_id, self.epoch)
        if self.epoch < last:
            self.epoch += 1
            metrics = {"val_loss": synthetic_objective(values, self.epoch, self.rng)}
            self.metrics = metrics
            call("record", self.holder, trial_id, "epoch", {"epoch": self.epoch,
                                                             "metrics": metrics})
            call("update_trial", self.holder, trial_id, metrics, step=self.epoch)
            return
        faults.fault_point("worker.record_end")
        call("record", self.holder, trial_id, "trial_end",
             {"status": "COMPLETED", "metrics": self.metrics, "epochs": self.epoch})
        faults.fault_point("worker.record_end+")
        faults.fault_point("worker.end_call")
        reply = call("end_trial", self.holder, trial_id, "COMPLETED")
        faults.fault_point("worker.end_call+")
        if reply["accepted"]:
            self.completed.add(trial_id)
        self.trial = None


@functools.cache
def log_kinds(tuner: str) -> tuple[str, ...]:
    """The kind of each state log append of ``tuner``'s search without faults, in order:
    "create", "record" (trial_start, epoch), "worker_end" or "chief_end" (a trial_end)."""
    kinds: list[str] = []
    append = StateLog.append

    def spy(log, *entries, **kwargs):
        entry = entries[0]
        if entry["kind"] == "create":
            kinds.append("create")
        elif entry["record"]["event"] != "trial_end":
            kinds.append("record")
        else:
            kinds.append("chief_end" if entry["holder"] == "chief" else "worker_end")
        return append(log, *entries, **kwargs)

    with tempfile.TemporaryDirectory() as run_dir, mock.patch.object(StateLog, "append", spy):
        run_search(tuner, run_dir, None)
    return tuple(kinds)


def nth_log_append(tuner: str, write: str) -> int:
    """k of the first ``log.append`` pass of this kind of write (see LOG_WRITES)."""
    kinds = log_kinds(tuner)
    lost = kinds.index("chief_end")
    if write == "reissue":
        return kinds.index("create", lost) + 1
    if write == "record":
        return kinds.index("record", lost) + 1
    return kinds.index(write) + 1


def run_search(tuner: str, run_dir: str, fault: str | None,
               nth: int = 0) -> tuple[Search, list[Worker]]:
    search = Search(tuner, run_dir)
    point = fault.rstrip("+") if fault else None
    faults.plan({fault: nth or NTH[point]} if fault else None)
    workers = [Worker(9, search, vanish_after_start=True), Worker(0, search),
               Worker(1, search)]
    crashed_workers = 0
    try:
        for _ in range(3000):
            for worker in list(workers):
                if not worker.alive or worker.stopped:
                    continue
                try:
                    worker.step()
                except faults.FaultInjected:  # the worker process died here
                    worker.alive = False
                    crashed_workers += 1
                    workers.append(Worker(10 + crashed_workers, search))
            search.clock.now += 1.0
            search.call("expire")
            if search.chief.finished() and all(w.stopped or not w.alive for w in workers):
                break
        else:
            raise AssertionError(f"the search did not finish: {search.chief.progress()}")
        reached = search.restarts + crashed_workers if fault else 1
    finally:
        faults.plan(None)
    assert reached, f"the fault point {fault}:{nth or NTH[point]} was never reached"
    search.chief.stop()
    return search, workers


def check_outcome(search: Search, workers: list[Worker]) -> dict[str, str]:
    run_dir = search.run_dir
    ends = [r for r in read_records(f"{run_dir}/trials.jsonl") if r["event"] == "trial_end"]
    ids = [r["trial_id"] for r in ends]
    assert len(ids) == len(set(ids)), f"duplicate ends: {sorted(ids)}"
    statuses = {r["trial_id"]: r["status"] for r in ends}
    for worker in workers:  # no COMPLETED result lost
        assert all(statuses.get(t) == "COMPLETED" for t in worker.completed), worker.holder
    oracle = search.oracle()
    oracle._set_project_dir(run_dir, "keras_tuner")
    oracle.reload()
    assert {t.trial_id: t.status for t in oracle.trials.values()} == statuses
    assert "FAILED" in statuses.values()  # the victim's trial, ended by the chief
    rerun_of = {t.hyperparameters.values.get("tuner/rerun_of") for t in oracle.trials.values()}
    lost = [r["trial_id"] for r in ends if r["status"] == "FAILED"]
    assert set(lost) <= rerun_of  # every lost trial's values were run again
    again = Chief(search.oracle(), search_id=SID, run_dir=run_dir, resume=True,
                  lease_timeout=LEASE, clock=search.clock, progress_interval=0,
                  out=io.StringIO(), log_fsync=False)
    try:
        assert len(again.leases) == 0 and again._reissues == []
        assert again.finished() or not again._oracle_stopped
    finally:
        again.log.close()
    return statuses


def test_the_search_without_faults(tmp_path):
    search, workers = run_search("asha", str(tmp_path), None)
    statuses = check_outcome(search, workers)
    assert search.restarts == 0
    assert sum(s == "COMPLETED" for s in statuses.values()) >= 6


@pytest.mark.timeout(60)
@pytest.mark.parametrize("tuner, fault, write", SCENARIOS,
                         ids=[f"{t}-{f}" + (f"@{w}" if w else "") for t, f, w in SCENARIOS])
def test_crash_at_a_fault_point_then_resume(tuner, fault, write, tmp_path):
    nth = nth_log_append(tuner, write) if write else 0
    search, workers = run_search(tuner, str(tmp_path), fault, nth)
    statuses = check_outcome(search, workers)
    if fault.startswith(("log.", "oracle.")):
        assert search.restarts == 1
    if CONFIGS[tuner]["max_trials"]:  # the trial budget is reached in completed trials
        assert sum(s == "COMPLETED" for s in statuses.values()) >= CONFIGS[tuner]["max_trials"]


@pytest.mark.parametrize("tuner", ["random", "asha"])
def test_a_suspend_is_a_logged_decision_and_a_resumed_chief_continues_it_from_the_log(
        tuner, tmp_path):
    """The wall-time signal: the chief logs the give-back with an epoch as ``trial_suspend``
    before it answers (no end, no failure); a chief rebuilt from the run directory without
    ``trials.jsonl`` finds the trial to continue in the log, hands it out under the same id
    (a logged hand-out with ``tuner/resume_epoch``), and after another crash leases it again
    to the worker continuing it; the trial ends once."""
    run_dir = str(tmp_path)
    search = Search(tuner, run_dir)
    a, b, c = (holder_id(worker_tuner_id(n, SID), secrets.token_hex(16)) for n in (0, 1, 2))
    first = search.call("create_trial", a)
    trial_id = first["trial_id"]
    search.call("record", a, trial_id, "trial_start", {"initial_epoch": 0})
    search.call("record", a, trial_id, "epoch", {"epoch": 1, "metrics": {"val_loss": 0.5}})
    search.chief.wind_down()
    assert search.call("update_trial", a, trial_id, {"val_loss": 0.5}, step=1)["wind_down"]
    with pytest.raises(ValueError, match=f"epoch 7 is outside trial {trial_id}'s epochs"):
        search.call("give_back", a, trial_id, epoch=7)
    with pytest.raises(ValueError, match="event 'trial_suspend' is not one of"):
        search.call("record", a, trial_id, "trial_suspend", {"epoch": 1})
    assert search.call("give_back", a, trial_id, epoch=1) == {"accepted": True}
    entry = read_log(search.chief.log.path)[0][-1]  # on disk (the call's one sync)
    assert (entry["kind"], entry["holder"], entry["record"]["event"], entry["record"]["epoch"],
            entry["record"]["reason"]) == ("record", a, "trial_suspend", 1, "wall_time")
    assert search.call("create_trial", b) == {"status": "STOPPED"}  # no new work
    assert search.chief.suspended() and not search.chief.finished()
    assert search.chief.counts["failed"] == 0 and search.chief._consecutive_failures == 0

    os.remove(os.path.join(run_dir, "trials.jsonl"))  # the log alone says what to continue
    search.crashed()
    assert search.chief._continues == [{"trial_id": trial_id, "epoch": 1}]
    assert len(search.chief.leases) == 0 and search.chief._reissues == []
    again = search.call("create_trial", c)
    assert (again["trial_id"], again["values"]["tuner/resume_epoch"]) == (trial_id, 1)
    entry = read_log(search.chief.log.path)[0][-1]
    assert (entry["kind"], entry["holder"], entry["values"]["tuner/resume_epoch"]) == (
        "create", c, 1)
    search.crashed()  # after the continuing hand-out: the log leases it to c again
    assert search.chief._continues == [] and search.chief.leases.held_by(c)[0].trial_id == \
        trial_id
    last_epoch = int(again["values"].get("tuner/epochs", search.cfg.max_epochs))
    search.call("record", c, trial_id, "epoch", {"epoch": last_epoch,
                                                  "metrics": {"val_loss": 0.25}})
    search.call("record", c, trial_id, "trial_end",
                {"status": "COMPLETED", "metrics": {"val_loss": 0.25}, "epochs": last_epoch})
    assert search.call("end_trial", c, trial_id, "COMPLETED") == {"accepted": True}
    search.chief.stop()
    mine = [(r["event"], r.get("epoch"), r.get("status")) for r in
            read_records(os.path.join(run_dir, "trials.jsonl")) if r["trial_id"] == trial_id]
    assert mine == [("trial_start", None, None), ("epoch", 1, None), ("trial_suspend", 1, None),
                    ("epoch", last_epoch, None), ("trial_end", None, "COMPLETED")]
    assert search.chief.oracle.trials[trial_id].status == "COMPLETED"
