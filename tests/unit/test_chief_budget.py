"""The chief of a distributed search charges its node-hour budget on allocated node-hours and
records which limit stopped the search."""

import io

from tuners.budget import AllocationBudget
from tuners.config import SearchConfig
from tuners.distributed.chief import Chief, worker_tuner_id
from tuners.oracles import make_oracle
from tuners.space import build_space

SID = "s1"


def test_chief_stops_issuing_when_the_allocation_is_spent(tmp_path):
    """3 nodes held (2 workers + the chief's own), budget 0.5 node-hours = 600 s of wall time;
    the trials themselves are short, so a trial-time budget would never bind."""
    now = [0.0]
    budget = AllocationBudget(0.5, nodes=3, start=0.0, clock=lambda: now[0])
    oracle = make_oracle(SearchConfig(tuner="random", max_trials=0, node_hour_budget=0.5,
                                      max_epochs=1, min_epochs=1), build_space("reduced"))
    chief = Chief(oracle, search_id=SID, run_dir=str(tmp_path), budget=budget,
                  progress_interval=0, out=io.StringIO())
    workers = [worker_tuner_id(n, SID) for n in range(2)]
    issued = 0
    while True:
        worker = workers[issued % 2]
        reply = chief.create_trial(worker)
        if reply["status"] != "RUNNING":
            break
        issued += 1
        chief.update_trial(worker, reply["trial_id"], {"val_loss": 1.0 / issued}, step=1)
        chief.end_trial(worker, reply["trial_id"], "COMPLETED")
        now[0] += 250.0  # 250 s of wall time per trial, idle time included
    assert issued == 3  # asked at 0, 250 and 500 s; at 750 s 0.625 node-hours are spent
    assert chief.stop_reason == "node_hour_budget"
    assert chief.progress()["budget_left"]["node_hours_left"] == 0.0
    assert chief.finished()


def test_chief_names_the_trial_cap_when_it_ends_the_search(tmp_path):
    oracle = make_oracle(SearchConfig(tuner="random", max_trials=1, max_epochs=1,
                                      min_epochs=1), build_space("reduced"))
    chief = Chief(oracle, search_id=SID, run_dir=str(tmp_path), progress_interval=0,
                  out=io.StringIO())
    worker = worker_tuner_id(0, SID)
    reply = chief.create_trial(worker)
    chief.update_trial(worker, reply["trial_id"], {"val_loss": 1.0}, step=1)
    chief.end_trial(worker, reply["trial_id"], "COMPLETED")
    assert chief.create_trial(worker)["status"] != "RUNNING"
    assert chief.stop_reason == "max_trials"


def test_the_serve_loop_freezes_the_heap_every_30_s_or_every_50_ended_trials(tmp_path,
                                                                               monkeypatch):
    """``Chief.freeze_heap`` (called every tick of ``serve``) moves the long-lived objects out
    of the garbage collector's reach at the first tick, then after 30 s or 50 more ended
    trials, whichever comes first."""
    from tuners.distributed import chief as chief_module

    now, frozen = [0.0], []
    monkeypatch.setattr(chief_module.gc, "freeze", lambda: frozen.append(now[0]))
    oracle = make_oracle(SearchConfig(tuner="random", max_trials=200, max_epochs=1,
                                      min_epochs=1), build_space("reduced"))
    chief = Chief(oracle, search_id=SID, run_dir=str(tmp_path), progress_interval=0,
                  out=io.StringIO(), clock=lambda: now[0], log_fsync=False)
    worker = worker_tuner_id(0, SID)
    chief.freeze_heap()
    assert frozen == [0.0]
    now[0] = 29.0
    chief.freeze_heap()
    assert frozen == [0.0]  # neither 30 s nor 50 trials yet
    now[0] = 30.0
    chief.freeze_heap()
    assert frozen == [0.0, 30.0]
    reply = chief.create_trial(worker)
    for n in range(50):
        chief.update_trial(worker, reply["trial_id"], {"val_loss": 1.0 / (n + 1)}, step=1)
        reply = chief.end_and_create(worker, reply["trial_id"], "COMPLETED")["next"]
        now[0] += 0.01
        chief.freeze_heap()
    assert frozen == [0.0, 30.0, now[0]]  # at the 50th end, 0.5 s after the last freeze
    chief.stop()
