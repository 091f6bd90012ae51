"""A real 4-worker search and its replay on the simulated cluster take the same decisions.

The real side is the distributed search as it runs on a cluster, minus the training: a chief
(:class:`tuners.distributed.chief.Chief`, serving the ASHA oracle over gRPC on loopback) and
four worker threads, each a :class:`tuners.distributed.worker.ChiefClient` that asks for
trials, reports every epoch and ends them. A worker's "epoch" is a wait whose length depends
on the configuration (a whole number of slots of ``SLOT`` seconds), kept against the worker's
own clock from its start, so the time each event happens is fixed by the trials it ran and not
by how long the calls took; worker w starts ``w * SLOT / 4`` seconds after worker 0, so events
of different workers are at least a quarter slot apart and arrive at the chief in the order
their times give.

The replay records the configurations the real search trained into a curve table (their
per-epoch losses and epoch seconds, no setup costs), then runs a fresh oracle with the same
settings on :class:`benchmark.sim.engine.SimCluster` with four workers and the same start
offsets. Both must create the same trials in the same order: ids, configurations, parents,
start and target epochs (promotions depend on which results were in when a worker asked, so
the order is what is tested). The same table with other epoch times decides otherwise, which
the test checks too: the agreement is not one that any timing would give.
"""

from __future__ import annotations

import math
import threading
import time

import pytest

from benchmark.sim.curves import configuration, load_curves, write_curves
from benchmark.sim.engine import SimCluster, quiet_oracle
from tuners.config import SearchConfig
from tuners.oracles import make_oracle
from tuners.space import build_space

WORKERS = 4
SLOT = 0.4  # seconds; events of two workers are at least SLOT / WORKERS apart
SID = "equiv4"


def search_config() -> SearchConfig:
    return SearchConfig(tuner="asha", space="reduced", max_epochs=4, min_epochs=1,
                        reduction_factor=2, brackets=1, max_trials=16, seed=7)


def epoch_slots(values) -> int:
    """Slots one epoch of this configuration takes (1 to 3: larger batches take longer)."""
    return 1 + int(values["batch_size"]) // 8


def loss(values, epoch: int) -> float:
    """A deterministic learning curve: the distance of lr from 10^-2.5 sets the level."""
    level = 1.0 + abs(math.log10(float(values["lr"])) + 2.5) + float(values["dropout"])
    return level * (0.5 + 1.0 / math.sqrt(epoch))


def decisions(oracle) -> list[tuple]:
    out = []
    for trial_id, trial in oracle.trials.items():
        values = trial.hyperparameters.values
        out.append((str(trial_id), values.get("tuner/trial_id") or None,
                    int(values.get("tuner/initial_epoch", 0) or 0),
                    int(values.get("tuner/epochs", 0) or 0),
                    tuple(sorted(configuration(values).items()))))
    return out


def run_real_search(run_dir: str) -> tuple[list[tuple], list[dict]]:
    from tuners.distributed.chief import Chief
    from tuners.distributed.worker import ChiefClient

    space = build_space("reduced")
    oracle = make_oracle(search_config(), space)
    chief = Chief(oracle, search_id=SID, run_dir=str(run_dir), progress_interval=0,
                  lease_timeout=60.0, default_epochs=4)
    port = chief.start("127.0.0.1:0")
    trained: dict[str, dict] = {}
    errors: list[BaseException] = []
    start = time.monotonic() + 0.5

    def work(w: int) -> None:
        try:
            client = ChiefClient(f"127.0.0.1:{port}", w, SID, secret=chief.secret,
                                 heartbeat_interval=5.0, retry_for=30.0)
            clock = start + w * SLOT / WORKERS
            time.sleep(max(0.0, clock - time.monotonic()))
            while True:
                trial = client.create_trial()
                if trial.status != "RUNNING":
                    break
                values = trial.hyperparameters.values
                first = int(values.get("tuner/initial_epoch", 0) or 0)
                last = int(values.get("tuner/epochs", 4) or 4)
                trained[str(trial.trial_id)] = values
                for epoch in range(first + 1, last + 1):
                    clock += epoch_slots(values) * SLOT
                    time.sleep(max(0.0, clock - time.monotonic()))
                    metrics = {"val_loss": loss(values, epoch)}
                    if epoch < last:
                        client.update_trial(trial.trial_id, metrics, step=epoch)
                trial.status = "COMPLETED"
                client.end_trial(trial, metrics=metrics, step=last)
            client.close()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    chief.stop()
    assert not errors, errors
    unique = {tuple(sorted(configuration(v).items())): v for v in trained.values()}
    rows = []
    for config_id, values in enumerate(unique.values()):
        for epoch in range(1, 5):
            rows.append({"config_id": f"c{config_id:03d}", **configuration(values),
                         "epoch": epoch, "val_loss": loss(values, epoch),
                         "epoch_seconds": epoch_slots(values) * SLOT,
                         "setup_seconds": 0.0, "restore_seconds": 0.0})
    return decisions(oracle), rows


def test_a_real_four_worker_asha_search_and_its_replay_decide_alike(tmp_path):
    real, rows = run_real_search(str(tmp_path / "real"))
    promotions = [d for d in real if d[1]]
    assert len(real) == 16 and len(promotions) >= 3
    table_path = str(tmp_path / "table.csv")
    write_curves(table_path, rows, {"experiment": "test", "epochs": 4})
    space = build_space("reduced")
    table = load_curves(table_path).bind(space)
    oracle = quiet_oracle(make_oracle(search_config(), space))
    result = SimCluster(oracle, table, workers=WORKERS, max_epochs=4,
                        start_offsets=[w * SLOT / WORKERS for w in range(WORKERS)]).run()
    assert len(result.trials) == 16
    simulated = decisions(oracle)
    assert [d[:4] for d in simulated] == [d[:4] for d in real]
    assert simulated == real

    # The order matters: the same table with every epoch one slot long decides otherwise, so
    # the agreement above rests on the replay charging the times the real workers took.
    class EqualEpochs:
        def val_losses(self, values, initial_epoch, epochs):
            return table.val_losses(values, initial_epoch, epochs)

        def epoch_seconds(self, values):
            return SLOT

    other = quiet_oracle(make_oracle(search_config(), space))
    SimCluster(other, EqualEpochs(), workers=WORKERS, max_epochs=4,
               start_offsets=[w * SLOT / WORKERS for w in range(WORKERS)]).run()
    assert [d[:4] for d in decisions(other)] != [d[:4] for d in real]


def test_start_offsets_are_checked_and_delay_a_workers_first_trial():
    space = build_space("reduced")
    oracle = quiet_oracle(make_oracle(SearchConfig(tuner="random", space="reduced",
                                                   max_epochs=2, min_epochs=1, max_trials=3,
                                                   seed=1), space))

    class Flat:
        def val_losses(self, values, initial_epoch, epochs):
            return [1.0] * (epochs - initial_epoch)

        def epoch_seconds(self, values):
            return 10.0

    with pytest.raises(ValueError, match="start_offsets must be 2 finite numbers"):
        SimCluster(oracle, Flat(), workers=2, max_epochs=2, start_offsets=[0.0])
    result = SimCluster(oracle, Flat(), workers=2, max_epochs=2,
                        start_offsets=[0.0, 5.0]).run()
    starts = sorted((run.start, run.worker) for run in result.trials)
    assert starts == [(0.0, 0), (5.0, 1), (20.0, 0)]
