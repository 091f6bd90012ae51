"""The chief admits only callers holding the search's secret, and only a trial's holder acts on it.

Over loopback gRPC: a stranger without the secret (or with a wrong one) is refused and changes
nothing, and the refusal names neither the search nor the secret; a caller posing as another
worker (the same worker id, another process) can neither end, give back nor report on that
worker's trial; two processes with one worker id never get the same trial; malformed trial
ids are refused before any use.
"""

from __future__ import annotations

import io
import os
import stat

import keras_tuner
import pytest

from tuners.distributed.chief import (
    REFUSED,
    SECRET_FILE,
    Chief,
    ChiefError,
    check_trial_id,
    load_or_create_secret,
)
from tuners.distributed.worker import (
    ChiefCallError,
    ChiefClient,
    NotAuthorised,
    RemoteTrial,
    Values,
    checked_trial_id,
)

SID = "12345"  # e.g. a SLURM job id: public


def random_oracle(max_trials: int = 4):
    hp = keras_tuner.HyperParameters()
    hp.Float("lr", 1e-4, 1e-1, sampling="log")
    return keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("val_loss", "min"), hyperparameters=hp,
        max_trials=max_trials, seed=3)


@pytest.fixture
def served(tmp_path):
    chief = Chief(random_oracle(), search_id=SID, run_dir=str(tmp_path), progress_interval=0,
                  out=io.StringIO(), lease_timeout=30.0)
    port = chief.start("127.0.0.1:0")
    yield chief, f"127.0.0.1:{port}"
    chief.stop(grace=0)


def client(address, worker_id, secret, **kwargs):
    kwargs.setdefault("heartbeat_interval", 0)
    return ChiefClient(address, worker_id, SID, secret=secret, retry_for=2.0, prefetch=False,
                       **kwargs)


def test_the_secret_file_has_256_random_bits_only_the_user_can_read(tmp_path):
    secret = load_or_create_secret(str(tmp_path))
    path = tmp_path / SECRET_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(secret) == 64 and int(secret, 16) >= 0  # 32 bytes as hex
    assert load_or_create_secret(str(tmp_path)) == secret  # a resumed chief keeps it
    (tmp_path / "b").mkdir()
    assert load_or_create_secret(str(tmp_path / "b")) != secret  # one per search
    path.chmod(0o644)
    with pytest.raises(ChiefError) as err:
        load_or_create_secret(str(tmp_path))
    assert str(err.value) == (f"{path}: mode 644 lets other users read the search secret; it "
                              "must be 600 (chmod 600)")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("secret", [None, "0" * 64, "wrong"])
def test_a_caller_without_the_secret_is_refused_and_changes_nothing(served, secret):
    chief, address = served
    with client(address, 0, secret) as stranger:
        for call in (stranger.hello, stranger.create_trial, stranger.status,
                     lambda: stranger.end_trial(RemoteTrial("0", "COMPLETED", Values({})))):
            with pytest.raises(NotAuthorised) as err:
                call()
            assert str(err.value) == (f"chief at {address} refused worker worker0@{SID}: "
                                      f"{REFUSED}")
            assert chief.secret not in str(err.value)
    assert chief.oracle.trials == {} and len(chief.leases) == 0
    assert chief._last_seen == {}
    assert not os.path.exists(os.path.join(chief.run_dir, "trials.jsonl"))


@pytest.mark.timeout(60)
def test_another_process_with_the_same_worker_id_cannot_touch_its_trials(served):
    chief, address = served
    with client(address, 0, chief.secret) as owner, client(address, 0, chief.secret) as twin:
        mine = owner.create_trial()
        other = twin.create_trial()
        assert (mine.status, other.status) == ("RUNNING", "RUNNING")
        assert mine.trial_id != other.trial_id  # exclusive claims: never the same trial
        # the twin poses as the owner: every call on the owner's trial is refused
        assert twin.update_trial(mine.trial_id, {"val_loss": 0.0}, step=1).status == "STOPPED"
        assert twin.record("trial_end", mine.trial_id, status="COMPLETED") is False
        assert twin.end_trial(RemoteTrial(mine.trial_id, "COMPLETED", Values({}))) is False
        assert chief.give_back(f"worker0@{SID}", mine.trial_id)["accepted"] is False
        lease = chief.leases.get(mine.trial_id)
        assert lease is not None and lease.worker == f"worker0@{SID}#{owner.session}"
        assert lease.metrics == {} and chief.oracle.trials[mine.trial_id].status == "RUNNING"
        # the owner is unaffected
        owner.update_trial(mine.trial_id, {"val_loss": 0.5}, step=1)
        assert owner.end_trial(RemoteTrial(mine.trial_id, "COMPLETED", Values({}))) is True
    assert chief.oracle.trials[mine.trial_id].score == 0.5


@pytest.mark.timeout(60)
def test_malformed_trial_ids_are_refused_before_any_use(served):
    chief, address = served
    with client(address, 0, chief.secret) as worker:
        with pytest.raises(ChiefCallError) as err:
            worker._call("Record", worker=worker.tuner_id, trial_id="../../etc",
                         event="epoch", fields={})
        assert "trial id '../../etc' is not a trial id" in str(err.value)
        with pytest.raises(ChiefCallError, match="may not carry a session"):
            worker._call("Hello", worker=f"worker0@{SID}#{'a' * 32}")
    assert check_trial_id("0007") == "0007"
    for bad in ("", "a/b", "..", "x" * 65, "1\n2"):
        with pytest.raises(ValueError):
            check_trial_id(bad)
        with pytest.raises(ChiefCallError, match="the chief sent a malformed trial id"):
            checked_trial_id(bad)
