"""HorovodTuner + TrialRunner with a stand-in trainer: oracle protocol, records, failures.

The stand-in follows the contract of ``mlpf_tf.train.train`` (callbacks driven per epoch, a
checkpoint with ``latest`` pointer and ``meta.json`` per trial, NonFiniteLossError) so the
search logic is tested in seconds; the real trainer is exercised by
tests/integration/test_tiny_search.py and tests/parallel/test_hvd_search.py.
"""

import json
import math
import os

import keras_tuner
import pytest

from mlpf_tf import distributed
from mlpf_tf.data.config import DataConfig
from mlpf_tf.model.config import ModelConfig
from mlpf_tf.train import CHECKPOINT_SUBDIR, NonFiniteLossError
from mlpf_tf.train_config import TrainConfig
from tuners import horovod_tuner
from tuners.budget import AllocationBudget
from tuners.config import SearchConfig
from tuners.horovod_tuner import HorovodTuner, SearchAborted
from tuners.oracles import make_oracle
from tuners.records import TrialRecorder, read_records
from tuners.space import reduced_space
from tuners.trial_runner import TrialRunner


class _Counter:
    def __init__(self, value):
        self.value = value

    def numpy(self):
        return self.value


class _Optimizer:
    def __init__(self, iterations):
        self.iterations = _Counter(iterations)


class _Model:
    def __init__(self, iterations):
        self.optimizer = _Optimizer(iterations)
        self.stop_training = False


class FakeTrainer:
    """Trains nothing: val_loss is a smooth function of lr and epoch; 10 steps per epoch."""

    STEPS = 10

    def __init__(self, fail_trials=()):
        self.fail_trials = set(fail_trials)
        self.calls = []

    def __call__(self, data_cfg, model_cfg, train_cfg, *, run_dir, initial_epoch, epochs,
                 resume_from, callbacks, context, **kwargs):
        trial_id = os.path.basename(run_dir)
        self.calls.append((trial_id, initial_epoch, epochs, resume_from))
        iterations = 0
        if resume_from is not None:
            with open(os.path.join(resume_from, "latest")) as fh:
                name = fh.read().strip()
            with open(os.path.join(resume_from, name, "meta.json")) as fh:
                meta = json.load(fh)
            assert meta["epoch"] == initial_epoch
            iterations = meta["iterations"]
        model = _Model(iterations)
        for cb in callbacks:
            cb.set_model(model)
            cb.on_train_begin()
        epoch = initial_epoch
        for epoch in range(initial_epoch, epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            if trial_id in self.fail_trials:
                raise NonFiniteLossError("non-finite training loss at epoch 1", epoch=epoch,
                                         batch=0, ranks=[0], value=math.nan)
            model.optimizer.iterations.value += self.STEPS
            val = abs(math.log10(train_cfg.lr) + 2.5) + 1.0 / (epoch + 1)
            logs = {"loss": val + 0.1, "val_loss": val}
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if model.stop_training:
                epoch += 1
                break
        else:
            epoch = epochs
        ckpt = os.path.join(run_dir, CHECKPOINT_SUBDIR)
        name = f"epoch-{epoch:04d}"
        os.makedirs(os.path.join(ckpt, name), exist_ok=True)
        with open(os.path.join(ckpt, name, "meta.json"), "w") as fh:
            json.dump({"epoch": epoch, "iterations": model.optimizer.iterations.value}, fh)
        with open(os.path.join(ckpt, "latest"), "w") as fh:
            fh.write(name + "\n")
        for cb in callbacks:
            cb.on_train_end()


def make_tuner(tmp_path, search_cfg, trainer, oracle=None, **tuner_kwargs):
    hp = reduced_space()
    oracle = oracle or make_oracle(search_cfg, hp)
    oracle.verbose = 0
    recorder = TrialRecorder(tmp_path, "s1")
    runner = TrialRunner(DataConfig(), ModelConfig(), TrainConfig(), run_dir=str(tmp_path),
                         context=distributed.LOCAL, nodes=0.5, recorder=recorder,
                         tensorboard=False, default_epochs=search_cfg.max_epochs,
                         train_fn=trainer)
    return HorovodTuner(oracle, runner, directory=str(tmp_path), context=distributed.LOCAL,
                        overwrite=True, **tuner_kwargs)


def records(tmp_path):
    return list(read_records(tmp_path / "trials.jsonl"))


ASHA = SearchConfig(tuner="asha", max_epochs=4, min_epochs=1, reduction_factor=2,
                    max_trials=10, seed=3)


def test_asha_search_records_continuations_and_a_failure(tmp_path):
    trainer = FakeTrainer(fail_trials={"01"})
    tuner = make_tuner(tmp_path, ASHA, trainer)
    tuner.search()
    recs = records(tmp_path)
    starts = {r["trial_id"]: r for r in recs if r["event"] == "trial_start"}
    ends = {r["trial_id"]: r for r in recs if r["event"] == "trial_end"}
    assert list(starts) == list(ends) == [f"{i:02d}" for i in range(10)]
    assert [t for t, _ in tuner.trials_run] == list(ends)
    # the failure is recorded, the oracle knows it, and the search went on
    assert ends["01"]["status"] == "FAILED"
    assert ends["01"]["error"].startswith("NonFiniteLossError: non-finite training loss")
    assert tuner.oracle.get_trial("01").status == "FAILED"
    assert sum(e["status"] == "COMPLETED" for e in ends.values()) == 9
    # continuations: parent's epoch and optimizer state
    promoted = [s for s in starts.values() if s["parent_id"] is not None]
    assert len(promoted) >= 3
    for s in promoted:
        parent_end = ends[s["parent_id"]]
        assert s["initial_epoch"] == parent_end["epochs"] > 0
        assert s["optimizer_iterations"] == parent_end["optimizer_iterations"] > 0
        assert s["rung"] == parent_end["rung"] + 1
        assert ends[s["trial_id"]]["optimizer_iterations"] == (
            s["optimizer_iterations"] + FakeTrainer.STEPS * (s["target_epochs"]
                                                             - s["initial_epoch"]))
    for trial_id, start in starts.items():
        epochs = [r for r in recs if r["event"] == "epoch" and r["trial_id"] == trial_id]
        end = ends[trial_id]
        if end["status"] == "COMPLETED":
            assert [r["epoch"] for r in epochs] == list(
                range(start["initial_epoch"] + 1, start["target_epochs"] + 1))
            assert end["metrics"] == epochs[-1]["metrics"]
        else:
            assert epochs == []
        for r in epochs:
            assert r["node_hours"] == pytest.approx(r["wall_seconds"] * 0.5 / 3600)
            assert (r["nodes"], r["ranks"]) == (0.5, 1)
        assert end["node_hours"] == pytest.approx(end["wall_seconds"] * 0.5 / 3600)
        assert end["hyperparameters"] == start["hyperparameters"]
        assert not any(k.startswith("tuner/") for k in start["hyperparameters"])
    # the oracle saw per-epoch metrics including the trial's cost so far
    trial = tuner.oracle.get_trial("00")
    assert trial.metrics.exists("node_hours") and trial.metrics.exists("val_loss")
    assert tuner.oracle.node_hours_spent > 0


def test_random_search_trains_max_epochs_from_scratch(tmp_path):
    cfg = SearchConfig(tuner="random", max_trials=3, max_epochs=2, min_epochs=1, seed=2)
    trainer = FakeTrainer()
    tuner = make_tuner(tmp_path, cfg, trainer)
    tuner.search()
    assert [(c[1], c[2], c[3]) for c in trainer.calls] == [(0, 2, None)] * 3
    assert len(tuner.oracle.get_best_trials(1)) == 1


def test_hyperband_continuation_resumes_the_parent_checkpoint(tmp_path):
    cfg = SearchConfig(tuner="hyperband", max_trials=0, max_epochs=2, min_epochs=1,
                       reduction_factor=2, seed=1)
    trainer = FakeTrainer()
    tuner = make_tuner(tmp_path, cfg, trainer)
    tuner.search()
    resumed = [c for c in trainer.calls if c[3] is not None]
    assert len(resumed) == 1
    trial_id, initial, target, path = resumed[0]
    start = next(r for r in records(tmp_path)
                 if r["event"] == "trial_start" and r["trial_id"] == trial_id)
    assert (initial, target) == (1, 2)
    assert path == str(tmp_path / "trials" / start["parent_id"] / CHECKPOINT_SUBDIR)
    assert start["optimizer_iterations"] == FakeTrainer.STEPS


class ScriptedOracle(keras_tuner.oracles.RandomSearchOracle):
    """Random search that answers IDLE first and can fail on end_trial or stop a trial."""

    def __init__(self, *args, end_fails_at=None, stop_on_update=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.idle_left = 2
        self.end_fails_at = end_fails_at
        self.stop_on_update = stop_on_update

    def populate_space(self, trial_id):
        if self.idle_left:
            self.idle_left -= 1
            return {"status": "IDLE"}
        return super().populate_space(trial_id)

    def update_trial(self, trial_id, metrics, step=0):
        trial = super().update_trial(trial_id, metrics, step)
        if self.stop_on_update:
            trial.status = "STOPPED"
        return trial

    def end_trial(self, trial):
        if self.end_fails_at == trial.trial_id:
            raise RuntimeError("disk full")
        return super().end_trial(trial)


def test_idle_waits_and_asks_again(tmp_path):
    cfg = SearchConfig(tuner="random", max_trials=2, max_epochs=1, min_epochs=1)
    oracle = ScriptedOracle("val_loss", max_trials=2, hyperparameters=reduced_space(), seed=1)
    tuner = make_tuner(tmp_path, cfg, FakeTrainer(), oracle=oracle, idle_wait=0.01)
    tuner.search()
    assert oracle.idle_left == 0 and len(tuner.trials_run) == 2


def test_oracle_error_aborts_the_search_on_every_rank(tmp_path):
    cfg = SearchConfig(tuner="random", max_trials=5, max_epochs=1, min_epochs=1)
    oracle = ScriptedOracle("val_loss", max_trials=5, hyperparameters=reduced_space(), seed=1,
                            end_fails_at="1")
    tuner = make_tuner(tmp_path, cfg, FakeTrainer(), oracle=oracle, idle_wait=0.0)
    with pytest.raises(SearchAborted, match=r"^oracle.end_trial failed: RuntimeError: disk "
                                            r"full$"):
        tuner.search()
    assert [t for t, _ in tuner.trials_run] == ["0", "1"]


def test_oracle_stop_request_ends_the_trial_early(tmp_path):
    cfg = SearchConfig(tuner="random", max_trials=1, max_epochs=3, min_epochs=1)
    oracle = ScriptedOracle("val_loss", max_trials=1, hyperparameters=reduced_space(), seed=1,
                            stop_on_update=True)
    tuner = make_tuner(tmp_path, cfg, FakeTrainer(), oracle=oracle, idle_wait=0.0)
    tuner.search()
    end = [r for r in records(tmp_path) if r["event"] == "trial_end"][0]
    assert (end["epochs"], end["stopped_early"], end["status"]) == (1, True, "COMPLETED")


class ClockedTrainer(FakeTrainer):
    """Each trial takes ``seconds`` on a fake clock (set-up and idle time included)."""

    def __init__(self, now, seconds):
        super().__init__()
        self.now, self.seconds = now, seconds

    def __call__(self, *args, **kwargs):
        self.now[0] += self.seconds
        return super().__call__(*args, **kwargs)


def test_node_hour_budget_is_charged_on_allocated_hours(tmp_path):
    """2 nodes held, budget 1 node-hour = 1800 s of wall time; trials of 700 s: trials start
    at 0, 700 and 1400 s (0.78 node-hours used), none at 2100 s; no trial cap is reached."""
    now = [0.0]
    budget = AllocationBudget(1.0, nodes=2, start=0.0, clock=lambda: now[0])
    cfg = SearchConfig(tuner="random", max_trials=0, node_hour_budget=1.0, max_epochs=1,
                       min_epochs=1)
    tuner = make_tuner(tmp_path, cfg, ClockedTrainer(now, 700.0), budget=budget)
    tuner.search()
    assert len(tuner.trials_run) == 3
    assert tuner.stop_reason == "node_hour_budget"
    assert budget.used() == pytest.approx(2100 * 2 / 3600)
    # a resumed search is charged for its earlier segments too
    resumed = AllocationBudget(1.0, nodes=2, start=0.0, earlier_node_hours=0.9,
                               clock=lambda: 180.0)
    assert resumed.used() == pytest.approx(1.0) and resumed.spent()


def test_stop_reason_names_the_trial_cap(tmp_path):
    cfg = SearchConfig(tuner="random", max_trials=2, max_epochs=1, min_epochs=1)
    tuner = make_tuner(tmp_path, cfg, FakeTrainer())
    tuner.search()
    assert len(tuner.trials_run) == 2 and tuner.stop_reason == "max_trials"


def test_outcomes_are_agreed_over_ranks(tmp_path, monkeypatch):
    tuner = make_tuner(tmp_path, ASHA, FakeTrainer())
    from tuners.trial_runner import TrialOutcome

    ok = TrialOutcome(status="COMPLETED", metrics={"val_loss": 1.0}, epochs=1, start_time=0.0,
                      wall_seconds=1.0, node_hours=1.0)
    monkeypatch.setattr(horovod_tuner.distributed, "allgather_object",
                        lambda obj, ctx=None: [obj, ("FAILED", "CheckpointError: boom")])
    agreed = tuner._agree(ok)
    assert (agreed.status, agreed.error) == ("FAILED", "CheckpointError: boom (rank 1 of 2)")
    monkeypatch.setattr(horovod_tuner.distributed, "allgather_object",
                        lambda obj, ctx=None: [obj, obj])
    assert tuner._agree(ok) is ok


def test_a_failed_record_write_aborts_at_the_next_trial(tmp_path):
    cfg = SearchConfig(tuner="random", max_trials=5, max_epochs=1, min_epochs=1)
    tuner = make_tuner(tmp_path, cfg, FakeTrainer())
    recorder = tuner.runner.recorder
    original = recorder.append

    def append(event, trial_id, **fields):
        if event == "epoch" and trial_id == "1":
            raise OSError(28, "No space left on device")
        return original(event, trial_id, **fields)

    recorder.append = append
    with pytest.raises(SearchAborted) as err:
        tuner.search()
    assert str(err.value) == ("writing the search records failed: OSError: [Errno 28] No space "
                              "left on device")
    assert [t for t, _ in tuner.trials_run] == ["0", "1"]  # trial 1 itself still finished


def test_resume_continues_the_oracle_state(tmp_path):
    first = make_tuner(tmp_path, ASHA.replace(max_trials=4), FakeTrainer())
    first.search()
    more = ASHA.replace(max_trials=8)
    oracle = make_oracle(more, reduced_space())
    oracle.verbose = 0
    runner = TrialRunner(DataConfig(), ModelConfig(), TrainConfig(), run_dir=str(tmp_path),
                         context=distributed.LOCAL, nodes=0.5,
                         recorder=TrialRecorder(tmp_path, "s1"), tensorboard=False,
                         default_epochs=4, train_fn=FakeTrainer())
    second = HorovodTuner(oracle, runner, directory=str(tmp_path), context=distributed.LOCAL,
                          overwrite=False)
    second.search()
    assert [t for t, _ in first.trials_run] == ["0", "1", "2", "3"]
    assert [t for t, _ in second.trials_run] == ["4", "5", "6", "7"]
    assert len(oracle.trials) == 8 and sum(oracle.rung_sizes()) == 8
    ends = [r["trial_id"] for r in records(tmp_path) if r["event"] == "trial_end"]
    assert ends == [str(i) for i in range(8)]


class ClientLike:
    """A remote-oracle client's surface (not a keras_tuner.Oracle): delegates to a local one."""

    def __init__(self, oracle):
        self._oracle = oracle
        self.calls = []

    @property
    def objective(self):
        return self._oracle.objective

    def create_trial(self, tuner_id):
        self.calls.append(("create_trial", tuner_id))
        return self._oracle.create_trial(tuner_id)

    def update_trial(self, trial_id, metrics, step=0):
        self.calls.append(("update_trial", trial_id, step))
        return self._oracle.update_trial(trial_id, metrics, step)

    def end_trial(self, trial):
        self.calls.append(("end_trial", trial.trial_id, trial.status))
        return self._oracle.end_trial(trial)


def test_a_remote_oracle_client_plugs_in(tmp_path):
    cfg = SearchConfig(tuner="random", max_trials=2, max_epochs=2, min_epochs=1, seed=4)
    local = make_oracle(cfg, reduced_space())
    local._set_project_dir(str(tmp_path), "chief")
    local.verbose = 0
    client = ClientLike(local)
    runner = TrialRunner(DataConfig(), ModelConfig(), TrainConfig(), run_dir=str(tmp_path),
                         context=distributed.LOCAL, recorder=TrialRecorder(tmp_path, "s1"),
                         tensorboard=False, default_epochs=2, train_fn=FakeTrainer())
    tuner = HorovodTuner(client, runner, directory=str(tmp_path), context=distributed.LOCAL,
                         tuner_id="worker3@s1")
    tuner.search()
    assert client.calls == [
        ("create_trial", "worker3@s1"), ("update_trial", "0", 1), ("update_trial", "0", 2),
        ("end_trial", "0", "COMPLETED"), ("create_trial", "worker3@s1"),
        ("update_trial", "1", 1), ("update_trial", "1", 2), ("end_trial", "1", "COMPLETED"),
        ("create_trial", "worker3@s1")]
    assert not (tmp_path / "keras_tuner").exists()  # the chief keeps the search state


@pytest.mark.parametrize("tuner", ["random", "hyperband", "asha", "asha_bo"])
def test_comparison_searches_spend_the_budget_and_stop_on_nothing_else(tmp_path, tuner):
    """The ``compare`` preset's search section: every tuner runs until the allocated budget is
    spent (over by less than one trial of its single worker), never stopping on a trial cap."""
    from benchmark import experiments

    preset = dict(experiments.get("compare").overrides["search"], tuner=tuner)
    cfg = SearchConfig(**preset)
    assert (cfg.max_trials, cfg.hyperband_iterations) == (0, 0)
    now = [0.0]
    trial_seconds = 37.0
    budget = AllocationBudget(cfg.node_hour_budget, nodes=1, start=0.0, clock=lambda: now[0])
    search = make_tuner(tmp_path, cfg, ClockedTrainer(now, trial_seconds), budget=budget)
    search.search()
    assert search.stop_reason == "node_hour_budget"
    used = budget.used()
    assert cfg.node_hour_budget <= used < cfg.node_hour_budget + trial_seconds / 3600
    assert len(search.trials_run) == math.ceil(cfg.node_hour_budget * 3600 / trial_seconds)


def test_wall_time_signal_suspends_the_trial_and_a_resumed_search_continues_it(tmp_path):
    """A real chief on loopback and the tuner with its ChiefClient: the chief's wind-down
    (SIGUSR1) during epoch 1 suspends trial 0 after that epoch (checkpointed, given back, no
    trial_end); a resumed chief hands it out again and it trains epochs 2 and 3 only, from its
    own checkpoint, with no second trial_start."""
    import io
    import threading

    from tuners.distributed.chief import Chief
    from tuners.distributed.worker import ChiefClient, RemoteRecorder

    cfg = SearchConfig(tuner="random", max_trials=2, max_epochs=3, min_epochs=1, seed=4)
    run_dir = tmp_path / "run"

    def search(resume: bool, trainer, wind_down_at: int | None):
        chief = Chief(make_oracle(cfg, reduced_space()), search_id="wt", run_dir=str(run_dir),
                      resume=resume, lease_timeout=30.0, progress_interval=0,
                      out=io.StringIO())
        port = chief.start("127.0.0.1:0")
        outcome = []
        server = threading.Thread(target=lambda: outcome.append(chief.serve(tick=0.05,
                                                                            drain=1.0)))
        server.start()
        client = ChiefClient(f"127.0.0.1:{port}", 0, "wt", secret=chief.secret,
                             heartbeat_interval=0.2, retry_for=10)
        update = client.update_trial

        def update_then_signal(trial_id, metrics, step=0):
            if step == wind_down_at:
                chief.wind_down()  # as SIGUSR1 does; the reply to this update says so
            return update(trial_id, metrics, step)

        client.update_trial = update_then_signal
        runner = TrialRunner(DataConfig(), ModelConfig(), TrainConfig(), run_dir=str(run_dir),
                             context=distributed.LOCAL,
                             recorder=RemoteRecorder(client),
                             tensorboard=False, default_epochs=3, train_fn=trainer)
        tuner = HorovodTuner(client, runner, directory=str(run_dir),
                             context=distributed.LOCAL, tuner_id=client.tuner_id)
        try:
            tuner.search()
        finally:
            client.close()
            server.join(30)
        return tuner, outcome, chief

    first = FakeTrainer()
    tuner, outcome, chief = search(False, first, wind_down_at=1)
    assert outcome == ["suspended"]
    assert tuner.trials_run == [("0", "SUSPENDED")]
    before = list(read_records(run_dir / "trials.jsonl"))
    assert [(r["event"], r.get("epoch")) for r in before] == [
        ("trial_start", None), ("epoch", 1), ("trial_suspend", 1)]
    with open(run_dir / "trials" / "0" / CHECKPOINT_SUBDIR / "latest") as fh:
        assert fh.read().strip() == "epoch-0001"  # checkpointed at the stop

    os.remove(run_dir / "trials.jsonl")  # the state log is the truth: resume rewrites it
    second = FakeTrainer()
    tuner, outcome, chief = search(True, second, wind_down_at=None)
    assert outcome == ["finished"]
    assert [(t, s) for t, s in tuner.trials_run] == [("0", "COMPLETED"), ("1", "COMPLETED")]
    assert second.calls[0] == ("0", 1, 3, str(run_dir / "trials" / "0" / CHECKPOINT_SUBDIR))
    after = list(read_records(run_dir / "trials.jsonl"))[len(before):]
    assert [(r["event"], r.get("epoch")) for r in after if r["trial_id"] == "0"] == [
        ("epoch", 2), ("epoch", 3), ("trial_end", None)]
    end = next(r for r in after if r["event"] == "trial_end" and r["trial_id"] == "0")
    assert end["status"] == "COMPLETED" and end["epochs"] == 3 and end["initial_epoch"] == 0
    assert chief.oracle.trials["0"].status == "COMPLETED"


def test_a_failure_on_one_rank_during_training_ends_the_group_instead_of_agreeing(
        tmp_path, monkeypatch):
    """In a group of 2, a rank whose training raises (other ranks may wait in the step's
    allreduce) ends the group through distributed.abort_group instead of entering the outcome
    allgather; a NonFiniteLossError (every rank raises it together) is agreed on as before,
    and so is an error before training starts."""
    from tuners.trial_runner import RAISE_ENV, TrialSpec

    class Aborted(Exception):
        pass

    aborts = []

    def abort_group(message, ctx=None):
        aborts.append((message, ctx.rank))
        raise Aborted

    monkeypatch.setattr(distributed, "abort_group", abort_group)
    ctx = distributed.Context(rank=1, size=2, enabled=True)

    class RaisingTrainer(FakeTrainer):
        def __call__(self, *args, callbacks, **kwargs):
            for cb in callbacks:  # what model.fit does before the first step
                cb.set_model(_Model(0))
                cb.on_train_begin()
            for cb in callbacks:
                cb.on_epoch_begin(0)
                cb.on_train_batch_begin(0)

    def run(trainer, trial_id="0", lr=0.01):
        runner = TrialRunner(DataConfig(), ModelConfig(), TrainConfig(), run_dir=str(tmp_path),
                             context=ctx, tensorboard=False, default_epochs=2,
                             train_fn=trainer)
        return runner.run(TrialSpec.from_values(trial_id, {"lr": lr}, default_epochs=2))

    monkeypatch.setenv(RAISE_ENV, "0@1,1@0")
    with pytest.raises(Aborted):
        run(RaisingTrainer())
    assert aborts == [("trial 0 failed on this rank alone: RuntimeError: injected fault: rank "
                       "1 raises in trial 0's training step", 1)]
    outcome = run(RaisingTrainer(), trial_id="1")  # injected on rank 0 only: nothing raised
    assert outcome.status == "FAILED" and outcome.error == "no val_loss was reported"
    outcome = run(FakeTrainer(fail_trials={"2"}), trial_id="2")
    assert outcome.status == "FAILED" and outcome.error.startswith("NonFiniteLossError: ")
    outcome = run(FakeTrainer(), trial_id="3", lr="not a number")
    assert outcome.status == "FAILED"
    assert len(aborts) == 1
