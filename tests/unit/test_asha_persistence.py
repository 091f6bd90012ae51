"""ASHA oracle persistence: journal + snapshot layout, and crashes at the worst moments.

A crash is simulated on the files a killed chief leaves: a journal whose last line was cut
short, a missing or stale snapshot, a write that dies half way. After ``reload()`` the oracle
must hold exactly the state of the last completed call and then decide exactly as an oracle
that never crashed. Synthetic scores only, no training."""

import heapq
import json
import os
import random
import shutil

import keras_tuner as kt
import pytest

from tuners import journal
from tuners.asha import JOURNAL_FILE, SNAPSHOT_FILE, ASHAOracle

RUNNING = "RUNNING"


def space():
    hp = kt.HyperParameters()
    hp.Float("x", 0.0, 1.0)
    hp.Int("units", 8, 64, step=8)
    hp.Choice("act", ["relu", "elu"])
    return hp


def new_oracle(directory, **kwargs):
    args = dict(min_epochs=1, max_epochs=27, reduction_factor=3, seed=5, snapshot_every=25)
    args.update(kwargs)
    oracle = ASHAOracle(kt.Objective("val_loss", "min"), space(), **args)
    oracle._set_project_dir(str(directory), "p")
    oracle.verbose = 0
    return oracle


def reloaded(directory, **kwargs):
    oracle = new_oracle(directory, **kwargs)
    oracle.reload()
    return oracle


def loss(values):
    return (values["x"] - 0.3) ** 2 + 0.001 * values["units"] + 1.0 / values["tuner/epochs"]


class Driver:
    """Workers with random durations; ``steps`` ends the earliest trial and starts one."""

    def __init__(self, oracle, workers, seed, running=None):
        self.oracle, self.rng, self.log = oracle, random.Random(seed), []
        self.running = [] if running is None else list(running)
        self.now, self.order = 0.0, 0
        if running is None:
            for w in range(workers):
                self.start(w)

    def start(self, worker):
        trial = self.oracle.create_trial(f"w{worker}")
        v = trial.hyperparameters.values
        self.log.append((trial.trial_id, trial.status, v.get("tuner/trial_id"),
                         v.get("tuner/rung"), v.get("x")))
        if trial.status == RUNNING:
            dur = (v["tuner/epochs"] - v["tuner/initial_epoch"]) * self.rng.uniform(0.2, 3.0)
            heapq.heappush(self.running, (self.now + dur, self.order, worker, trial.trial_id))
            self.order += 1

    def end_next(self):
        self.now, _, worker, trial_id = heapq.heappop(self.running)
        trial = self.oracle.get_trial(trial_id)
        self.oracle.update_trial(trial_id, {"val_loss": loss(trial.hyperparameters.values)})
        trial.status = "COMPLETED"
        self.oracle.end_trial(trial)
        return worker

    def steps(self, n):
        for _ in range(n):
            self.start(self.end_next())
        return self.log


def comparable(oracle):
    state = json.loads(journal.dumps(oracle.get_state()))
    state["tried_so_far"] = sorted(state["tried_so_far"])
    # which worker a re-issued trial went to is keras-tuner's retry order: compare the trials
    state["ongoing_trials"] = sorted(state["ongoing_trials"].values())
    trials = {tid: json.loads(journal.dumps(t.get_state())) for tid, t in oracle.trials.items()}
    return state, trials


def resume_running(oracle, running):
    """Workers ask again after a restart and get the interrupted trials back (in keras-tuner's
    retry order); each keeps the finish time its trial had. Returns the new running heap."""
    finish = {trial_id: (t, order) for t, order, _, trial_id in running}
    again = []
    for _, _, worker, _ in sorted(running):
        trial = oracle.create_trial(f"w{worker}")
        again.append((*finish[trial.trial_id], worker, trial.trial_id))
    heapq.heapify(again)
    return again


def test_layout_one_journal_line_per_call_and_trial_file_when_ended(tmp_path):
    oracle = new_oracle(tmp_path, snapshot_every=1000)
    t = oracle.create_trial("w0")
    project = tmp_path / "p"
    assert (project / SNAPSHOT_FILE).exists()  # written when the journal starts
    assert not (project / f"trial_{t.trial_id}" / "trial.json").exists()
    oracle.update_trial(t.trial_id, {"val_loss": 0.5})
    t.status = "COMPLETED"
    oracle.end_trial(t)
    header, records, size = journal.read_journal(str(project / JOURNAL_FILE))
    assert header["settings"] == {"min_epochs": 1, "max_epochs": 27, "reduction_factor": 3,
                                  "brackets": 1}
    assert [(r["op"], r["n"]) for r in records] == [("create", 1), ("update", 2), ("end", 3)]
    assert records[0]["dec"]["start"] is True and records[0]["values"]["tuner/epochs"] == 1
    assert size == os.path.getsize(project / JOURNAL_FILE)
    with open(project / f"trial_{t.trial_id}" / "trial.json") as fh:
        saved = json.load(fh)
    assert saved["status"] == "COMPLETED" and saved["score"] == 0.5


def test_snapshots_are_taken_every_interval_and_cover_the_journal(tmp_path):
    oracle = new_oracle(tmp_path, snapshot_every=25)
    Driver(oracle, 3, seed=1).steps(30)  # 93 journal lines
    with open(tmp_path / "p" / SNAPSHOT_FILE) as fh:
        snap = json.load(fh)
    assert snap["journal"]["ops"] == oracle._ops_at_snapshot
    assert oracle._ops - 25 < snap["journal"]["ops"] <= oracle._ops
    assert {t["trial_id"] for t in snap["trials"]} <= set(oracle.trials)
    assert comparable(reloaded(tmp_path))[1] == comparable(oracle)[1]


@pytest.mark.parametrize("drop_snapshot", [False, True])
def test_reload_resumes_with_identical_decisions_with_or_without_snapshot(tmp_path,
                                                                          drop_snapshot):
    a = new_oracle(tmp_path / "a")
    driver_a = Driver(a, 4, seed=3)
    driver_a.steps(60)
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    if drop_snapshot:
        os.remove(tmp_path / "b" / "p" / SNAPSHOT_FILE)
    b = reloaded(tmp_path / "b")
    assert b.interrupted_trials == {tid: t.trial_id for tid, t in a.ongoing_trials.items()}
    running_b = resume_running(b, driver_a.running)
    assert comparable(b) == comparable(a)
    driver_b = Driver(b, 4, seed=9, running=running_b)
    driver_a.rng, driver_a.log = random.Random(9), []
    assert driver_a.steps(80) == driver_b.steps(80)
    assert comparable(b) == comparable(a)


def test_torn_last_line_is_dropped_and_decisions_match_the_state_before_it(tmp_path):
    a = new_oracle(tmp_path / "a")
    driver = Driver(a, 4, seed=4)
    driver.steps(40)
    now, _, worker, trial_id = heapq.heappop(driver.running)
    trial = a.get_trial(trial_id)
    a.update_trial(trial_id, {"val_loss": loss(trial.hyperparameters.values)})
    shutil.copytree(tmp_path / "a", tmp_path / "before")  # state after the last full call
    trial.status = "COMPLETED"
    a.end_trial(trial)  # the call the crash interrupts
    path = tmp_path / "a" / "p" / JOURNAL_FILE
    data = path.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    assert json.loads(data[last_start:])["op"] == "end"
    shutil.copytree(tmp_path / "a", tmp_path / "torn")
    torn_path = tmp_path / "torn" / "p" / JOURNAL_FILE
    torn_path.write_bytes(data[:last_start + (len(data) - last_start) // 2])

    ref, torn = reloaded(tmp_path / "before"), reloaded(tmp_path / "torn")
    assert torn_path.read_bytes() == data[:last_start] + json.dumps(
        {"op": "reload", "n": torn._ops}, separators=(",", ":")).encode() + b"\n"
    assert comparable(torn) == comparable(ref)
    assert torn.get_trial(trial_id).status == RUNNING  # its end was lost
    running = list(driver.running) + [(now, -1, worker, trial_id)]
    logs = [Driver(o, 4, seed=5, running=resume_running(o, running)).steps(50)
            for o in (ref, torn)]
    assert logs[0] == logs[1] and len(logs[0]) == 50
    assert comparable(torn) == comparable(ref)


def test_crash_in_the_middle_of_a_write(tmp_path, monkeypatch):
    a = new_oracle(tmp_path, snapshot_every=1000)
    driver = Driver(a, 3, seed=6)
    driver.steps(20)
    before = comparable(a)

    def dying_append(self, record):  # half a line reaches the file, then the process dies
        line = journal.dumps(record) + "\n"
        self._fh.write(line[:len(line) // 2])
        self._fh.flush()
        raise SystemExit("killed")

    monkeypatch.setattr(journal.JournalWriter, "append", dying_append)
    with pytest.raises(SystemExit):
        driver.end_next()  # update_trial's line is the one cut short
    monkeypatch.undo()
    after = reloaded(tmp_path)
    state, trials = comparable(after)
    assert trials == before[1] and state["asha"] == before[0]["asha"]
    assert state["retry_queue"] == before[0]["ongoing_trials"] or \
        sorted(state["retry_queue"]) == before[0]["ongoing_trials"]


def test_changes_made_outside_the_oracle_are_journaled(tmp_path):
    """A chief re-leases interrupted trials to their workers by editing the oracle's state."""
    a = new_oracle(tmp_path)
    driver = Driver(a, 3, seed=8)
    driver.steps(15)
    b = reloaded(tmp_path)
    for tuner_id, trial_id in b.interrupted_trials.items():
        b._retry_queue.remove(trial_id)
        b.ongoing_trials[tuner_id] = b.trials[trial_id]
    Driver(b, 3, seed=9, running=driver.running).steps(20)
    assert b._shadow == b._shadow_now()
    records = journal.read_journal(str(tmp_path / "p" / JOURNAL_FILE))[1]
    assert [r["op"] for r in records].count("sync") == 1
    assert comparable(reloaded(tmp_path, snapshot_every=10_000))[1] == comparable(b)[1]


def test_damaged_middle_line_and_other_settings_are_errors(tmp_path):
    a = new_oracle(tmp_path, snapshot_every=1000)
    Driver(a, 2, seed=1).steps(3)
    os.remove(tmp_path / "p" / SNAPSHOT_FILE)
    path = tmp_path / "p" / JOURNAL_FILE
    lines = path.read_bytes().split(b"\n")
    with pytest.raises(journal.JournalError) as err:
        reloaded(tmp_path, reduction_factor=2)
    assert str(err.value) == (f"{path}: written with settings {{'min_epochs': 1, 'max_epochs': "
                              "27, 'reduction_factor': 3, 'brackets': 1}, but this oracle has "
                              "{'min_epochs': 1, 'max_epochs': 27, 'reduction_factor': 2, "
                              "'brackets': 1}")
    lines[2] = lines[2][:10]
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(journal.JournalError, match=f"{path}: line 3 is damaged"):
        reloaded(tmp_path)


def test_older_layout_is_reloaded_and_continues_with_a_journal(tmp_path):
    a = new_oracle(tmp_path)
    driver = Driver(a, 2, seed=2)
    driver.steps(10)
    kt.Oracle.save(a)  # keras-tuner's own layout: oracle.json + trial.json of every trial
    for trial in a.trials.values():
        trial.save(os.path.join(a._get_trial_dir(trial.trial_id), "trial.json"))
    os.remove(tmp_path / "p" / JOURNAL_FILE)
    b = reloaded(tmp_path)
    assert comparable(b)[1] == comparable(a)[1]
    Driver(b, 2, seed=3, running=resume_running(b, driver.running)).steps(5)
    assert comparable(reloaded(tmp_path))[1] == comparable(b)[1]


def test_missing_state_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        reloaded(tmp_path)
    assert str(err.value) == (f"no oracle state to reload in {tmp_path / 'p'}: neither "
                              f"{JOURNAL_FILE} nor {SNAPSHOT_FILE} exists")


def test_reissue_with_a_raised_trial_cap_and_failures_replay_exactly(tmp_path):
    """What a chief does: re-issue values under a trial cap raised by one (the id width grows
    from 1 to 2 digits here), and end trials FAILED up to the consecutive-failure limit."""
    a = new_oracle(tmp_path, max_trials=9, max_consecutive_failed_trials=2,
                   snapshot_every=1000)  # all from the journal
    trials = [a.create_trial(f"w{i}") for i in range(9)]
    assert a.create_trial("w9").status == "STOPPED"
    values = dict(trials[0].hyperparameters.values)
    a.populate_space = lambda trial_id: {"status": RUNNING, "values": dict(values)}
    a.max_trials = 10
    rerun = a.create_trial("w9")
    del a.populate_space
    a.max_trials = 9
    assert rerun.trial_id == "09" and rerun.hyperparameters.values == values
    for t in trials[:7]:
        a.update_trial(t.trial_id, {"val_loss": loss(t.hyperparameters.values)})
        t.status = "COMPLETED"
        a.end_trial(t)
    trials[7].status = "FAILED"
    a.end_trial(trials[7])
    trials[8].status = "FAILED"
    with pytest.raises(RuntimeError, match="Number of consecutive failures exceeded"):
        a.end_trial(trials[8])
    b = reloaded(tmp_path, max_trials=9, max_consecutive_failed_trials=2, snapshot_every=1000)
    state_a, trials_a = comparable(a)
    state_b, trials_b = comparable(b)
    assert trials_b == trials_a and state_b["asha"] == state_a["asha"]
    assert sorted(state_b["retry_queue"]) == ["09"]  # the re-run was still running
    assert b.rung_sizes() == a.rung_sizes() == [7, 0, 0, 0]


def snapshot_text(directory):
    return (directory / "p" / SNAPSHOT_FILE).read_text()


def test_background_snapshot_is_read_under_the_lock_then_written_and_reloads_exactly(tmp_path):
    """A host that snapshots off the calls' path (the chief): calls never write oracle.json;
    ``snapshot_parts`` reads the state (ended trials from the texts cached when they ended),
    ``write_snapshot`` writes it later, and journal lines appended in between are replayed."""
    oracle = new_oracle(tmp_path, snapshot_every=25)
    oracle.background_snapshots = True
    driver = Driver(oracle, 3, seed=1)
    first = snapshot_text(tmp_path)  # written when the journal started
    driver.steps(30)  # 90 journal lines: a snapshot is due, no call wrote one
    assert oracle.snapshot_due() and snapshot_text(tmp_path) == first
    parts = oracle.snapshot_parts()
    assert not oracle.snapshot_due(any_change=True)
    oracle.write_snapshot(parts)
    snap = json.loads(snapshot_text(tmp_path))
    assert snap["journal"]["ops"] == oracle._ops
    fresh = sorted((json.loads(journal.dumps(t.get_state())) for t in oracle.trials.values()),
                   key=lambda t: t["trial_id"])
    assert sorted(snap["trials"], key=lambda t: t["trial_id"]) == fresh
    driver.steps(3)
    assert oracle.snapshot_due(any_change=True) and not oracle.snapshot_due()
    parts = oracle.snapshot_parts()
    driver.steps(4)  # lines appended between reading and writing
    oracle.write_snapshot(parts)
    assert json.loads(snapshot_text(tmp_path))["journal"]["ops"] == oracle._ops - 12
    again = reloaded(tmp_path)
    resume_running(again, driver.running)
    assert comparable(again) == comparable(oracle)


def test_the_chief_writes_the_oracle_snapshot_in_its_flush_not_in_the_calls(tmp_path):
    import io

    from tuners.distributed.chief import PROJECT_NAME, Chief, worker_tuner_id

    oracle = new_oracle(tmp_path, snapshot_every=25)
    chief = Chief(oracle, search_id="s1", run_dir=str(tmp_path / "run"), progress_interval=0,
                  out=io.StringIO(), log_fsync=False)
    assert oracle.background_snapshots
    path = tmp_path / "run" / PROJECT_NAME / SNAPSHOT_FILE
    worker = worker_tuner_id(0, "s1")
    reply = chief.create_trial(worker)
    first = path.read_text()
    for n in range(40):  # 3 journal lines per trial: due after 9 trials
        chief.update_trial(worker, reply["trial_id"], {"val_loss": 1.0 / (n + 1)},
                           step=reply["values"]["tuner/epochs"])
        reply = chief.end_and_create(worker, reply["trial_id"], "COMPLETED")["next"]
    assert oracle.snapshot_due() and path.read_text() == first
    chief.flush()
    assert not oracle.snapshot_due()
    assert json.loads(path.read_text())["journal"]["ops"] == oracle._ops
    chief.update_trial(worker, reply["trial_id"], {"val_loss": 0.5}, step=1)
    chief.stop()  # the final flush snapshots whatever the journal gained
    assert json.loads(path.read_text())["journal"]["ops"] == oracle._ops
