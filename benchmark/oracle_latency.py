"""Decision latency of the ASHA and ASHA+BO oracles with 10,000 trials already recorded.

    python -m benchmark.oracle_latency [--trials 10000] [--decisions 2000] [--io_decisions 200]
        [--tuners asha,asha_bo] [--space reference] [--bo_max_fit_points 256]

For each oracle: records ``--trials`` trials (new configurations and promotions, synthetic
scores, 8 simulated workers finishing out of order, no training), then times

- ``populate_space`` (the decision alone: promote or sample) for ``--decisions`` further
  trials, reporting median / p90 / max of wall-clock and of thread CPU time (the machine may
  be shared), split into promotions and new configurations;
- ``update_trial`` + ``end_trial`` and ``create_trial`` end to end, including persistence (one
  journal line per call, flushed, and the atomic ``trial_<id>/trial.json`` mirror), for
  ``--io_decisions`` trials, and their sum per trial (the acceptance figure); then the same
  with ``journal_fsync`` (every line forced to disk) for ``--fsync_decisions`` trials;
- a compacted snapshot (``oracle.json``, written every ``max(snapshot_every, trials)`` journal
  lines) and its cost amortised per journal line; ``reload()`` of the whole state.

The filling phase skips the trial files (keras-tuner's ``_save_trial``) but journals every call,
so the journal and snapshots are those of a real run of that size. For ASHA+BO the history is
filled with the random sampler (the model would be refitted for each of thousands of
configurations), then the Bayesian sampler takes over: each new configuration fits the GP on at
most ``--bo_max_fit_points`` results of the highest rung with enough of them (best half + most
recent), so its cost does not grow with the number of trials. Also printed: the time keras-tuner's
own consecutive-failure check (a scan of all ended trials, replaced by a counter in
ASHAOracle) would take per ``end_trial`` at this size.
"""

from __future__ import annotations

import heapq
import os
import random
import shutil
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmark import slowdown

FLAGS = flags.FLAGS
flags.DEFINE_integer("trials", 10_000, "trials recorded before measuring", lower_bound=1)
flags.DEFINE_integer("decisions", 2000, "decisions timed (populate_space)", lower_bound=1)
flags.DEFINE_integer("io_decisions", 1000, "create_trial/end_trial timed with persistence",
                     lower_bound=0)
flags.DEFINE_integer("fsync_decisions", 100, "the same with journal_fsync (0: skip)",
                     lower_bound=0)
flags.DEFINE_list("tuners", ["asha", "asha_bo"], "oracles to measure: asha, asha_bo")
flags.DEFINE_enum("space", "reference", ["reference", "reduced"], "search space")
flags.DEFINE_integer("workers", 8, "simulated concurrent workers", lower_bound=1)
flags.DEFINE_integer("bo_max_fit_points", 256, "ASHA+BO: GP fit size cap", lower_bound=2)
flags.DEFINE_integer("bo_gp_restarts", 5, "ASHA+BO: GP kernel optimiser restarts", lower_bound=0)
flags.DEFINE_integer("seed", 1, "seed", lower_bound=1)


def synthetic_loss(values: dict, noise: float) -> float:
    """A smooth function of the numeric hyperparameters plus a learning-curve term."""
    numeric = [float(v) for k, v in sorted(values.items())
               if not k.startswith("tuner/") and isinstance(v, (int, float))]
    shape = sum((x % 1.0 - 0.4) ** 2 for x in numeric) / max(len(numeric), 1)
    return shape + 1.0 / values["tuner/epochs"] + noise


class Cluster:
    """Simulated workers: each asks the oracle for a trial and ends it after a random time."""

    def __init__(self, oracle, workers: int, seed: int):
        self.oracle = oracle
        self.rng = random.Random(seed)
        self.running: list = []
        self.now = 0.0
        self.order = 0
        for w in range(workers):
            self.start(w)

    def start(self, worker: int):
        trial = self.oracle.create_trial(f"w{worker}")
        if trial.status == "RUNNING":
            v = trial.hyperparameters.values
            duration = (v["tuner/epochs"] - v["tuner/initial_epoch"]) * self.rng.uniform(0.3, 3)
            heapq.heappush(self.running, (self.now + duration, self.order, worker, trial))
            self.order += 1
        return trial

    def step(self, timer: list | None = None):
        """End the earliest trial and hand its worker a new one."""
        self.now, _, worker, trial = heapq.heappop(self.running)
        loss = synthetic_loss(trial.hyperparameters.values, self.rng.gauss(0, 0.01))
        t0, c0 = time.perf_counter(), time.thread_time()
        self.oracle.update_trial(trial.trial_id, {"val_loss": loss})
        trial.status = "COMPLETED"
        self.oracle.end_trial(trial)
        t1, c1 = time.perf_counter(), time.thread_time()
        self.start(worker)
        t2, c2 = time.perf_counter(), time.thread_time()
        if timer is not None:
            timer.append((t1 - t0, c1 - c0, t2 - t1, c2 - c1))


def _stats(values_s: list[float]) -> str:
    if not values_s:
        return "n=0"
    ms = np.array(values_s) * 1e3
    return (f"n={len(ms):5d}  median {np.median(ms):8.3f} ms  p90 {np.percentile(ms, 90):8.3f} ms"
            f"  max {ms.max():8.3f} ms")


def measure(tuner: str) -> None:
    """Fill and time one oracle in a temporary project directory (removed afterwards)."""
    directory = tempfile.mkdtemp(prefix="oracle-latency-")
    try:
        _measure(tuner, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _measure(tuner: str, directory: str) -> None:
    import keras_tuner
    from keras_tuner.src.engine import oracle as oracle_module

    from tuners.asha import ASHABOOracle, ASHAOracle
    from tuners.samplers import RandomSampler
    from tuners.space import build_space

    hp = build_space(FLAGS.space)
    common = dict(min_epochs=1, max_epochs=81, reduction_factor=3, seed=FLAGS.seed)
    if tuner == "asha":
        oracle = ASHAOracle(keras_tuner.Objective("val_loss", "min"), hp, **common)
    elif tuner == "asha_bo":
        oracle = ASHABOOracle(keras_tuner.Objective("val_loss", "min"), hp,
                              max_fit_points=FLAGS.bo_max_fit_points,
                              gp_restarts=FLAGS.bo_gp_restarts, **common)
    else:
        raise app.UsageError(f"--tuners: unknown oracle {tuner!r}; expected asha or asha_bo")
    oracle._set_project_dir(directory, tuner)
    oracle.verbose = 0

    # Fill: no trial files, random proposals (the journal is started first: its header names
    # the oracle's own sampler).
    oracle._writer()
    sampler = oracle.sampler
    oracle.sampler = RandomSampler()
    oracle._save_trial = lambda trial: None
    oracle.save = lambda: None
    t_fill = time.perf_counter()
    cluster = Cluster(oracle, FLAGS.workers, FLAGS.seed)
    while len(oracle.trials) < FLAGS.trials:
        cluster.step()
    t_fill = time.perf_counter() - t_fill
    if hasattr(sampler, "_proposals"):
        sampler._proposals = oracle.ladder.configs_started  # warm-up is over
    oracle.sampler = sampler
    print(f"[{tuner}] recorded {len(oracle.trials)} trials in {t_fill:.1f} s "
          f"(rung sizes {oracle.rung_sizes()}, {FLAGS.workers} workers)")

    # Decision latency: populate_space alone.
    decide = oracle.populate_space
    promotion: list[tuple[float, float]] = []
    new: list[tuple[float, float]] = []

    def timed_populate_space(trial_id):
        t0, c0 = time.perf_counter(), time.thread_time()
        response = decide(trial_id)
        elapsed = (time.perf_counter() - t0, time.thread_time() - c0)
        values = response.get("values") or {}
        (promotion if "tuner/trial_id" in values else new).append(elapsed)
        return response

    oracle.populate_space = timed_populate_space
    for _ in range(FLAGS.decisions):
        cluster.step()
    for what, times in (("all", promotion + new), ("promotions", promotion),
                        ("new configs", new)):
        print(f"[{tuner}] populate_space wall, {what:11s}: {_stats([t[0] for t in times])}")
        print(f"[{tuner}] populate_space CPU,  {what:11s}: {_stats([t[1] for t in times])}")

    # End to end with persistence: journal line per call + trial.json mirror.
    del oracle._save_trial, oracle.save
    for fsync, count in ((False, FLAGS.io_decisions), (True, FLAGS.fsync_decisions)):
        if not count:
            continue
        oracle.journal_fsync = oracle._journal.fsync = fsync
        io_times: list = []
        for _ in range(count):
            cluster.step(io_times)
        mode = "journal+fsync" if fsync else "journal"
        for i, what in enumerate(("update+end_trial wall", "update+end_trial CPU ",
                                  "create_trial wall    ", "create_trial CPU     ")):
            print(f"[{tuner}] {what} ({mode}): {_stats([t[i] for t in io_times])}")
        print(f"[{tuner}] create+update+end wall ({mode}): "
              f"{_stats([t[0] + t[2] for t in io_times])}")
        print(f"[{tuner}] create+update+end CPU  ({mode}): "
              f"{_stats([t[1] + t[3] for t in io_times])}")
    oracle.journal_fsync = oracle._journal.fsync = False
    project = os.path.join(directory, tuner)
    journal_size = os.path.getsize(os.path.join(project, "oracle.journal.jsonl"))
    print(f"[{tuner}] journal: {oracle._ops} lines, {journal_size / 1e6:.2f} MB "
          f"({journal_size / max(oracle._ops, 1):.0f} bytes per line)")
    t0, c0 = time.perf_counter(), time.thread_time()
    oracle.snapshot()  # trials changed since the last one are serialised again
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    t0, c0 = time.perf_counter(), time.thread_time()
    oracle.snapshot()  # nothing changed since: joining cached trial states + writing
    wall2, cpu2 = time.perf_counter() - t0, time.thread_time() - c0
    size = os.path.getsize(os.path.join(project, "oracle.json"))
    interval = max(oracle.snapshot_every, len(oracle.trials))
    print(f"[{tuner}] snapshot oracle.json {size / 1e6:.2f} MB: {wall * 1e3:.0f} ms wall / "
          f"{cpu * 1e3:.0f} ms CPU after {FLAGS.io_decisions + FLAGS.fsync_decisions} trials "
          f"changed, {wall2 * 1e3:.0f} ms / {cpu2 * 1e3:.0f} ms with none; every {interval} "
          f"lines: {cpu / interval * 1e3:.3f} ms CPU amortised per line")
    for _ in range(50):  # a journal tail after the snapshot, as after a crash
        cluster.step()
    again = type(oracle)(keras_tuner.Objective("val_loss", "min"), hp, **(
        common if tuner == "asha" else dict(common, max_fit_points=FLAGS.bo_max_fit_points,
                                            gp_restarts=FLAGS.bo_gp_restarts)))
    again._set_project_dir(directory, tuner)
    again.verbose = 0
    t0, c0 = time.perf_counter(), time.thread_time()
    again.reload()
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    assert again.rung_sizes() == oracle.rung_sizes() and len(again.trials) == len(oracle.trials)
    print(f"[{tuner}] reload of {len(again.trials)} trials (snapshot + "
          f"{oracle._ops - oracle._ops_at_snapshot} journal lines): {wall:.2f} s wall / "
          f"{cpu:.2f} s CPU")
    t0 = time.perf_counter()
    oracle_module.Oracle._check_consecutive_failures(oracle)
    scan = time.perf_counter() - t0
    print(f"[{tuner}] keras-tuner's consecutive-failure scan at {len(oracle.end_order)} ended "
          f"trials: {scan * 1e3:.3f} ms per end_trial (ASHAOracle keeps a counter instead)")


def nightly_decision_latency_ms(trials: int = 3000, decisions: int = 500, seed: int = 1) -> float:
    """Median ASHA decision (populate_space) CPU time in ms with ``trials`` trials recorded.

    The nightly suite's oracle metric: smaller is better. Reduced space, 8 simulated workers,
    persistence to a temporary directory (removed afterwards).
    """
    import keras_tuner

    from tuners.asha import ASHAOracle
    from tuners.space import build_space

    directory = tempfile.mkdtemp(prefix="oracle-nightly-")
    try:
        oracle = ASHAOracle(keras_tuner.Objective("val_loss", "min"), build_space("reduced"),
                            min_epochs=1, max_epochs=81, reduction_factor=3, seed=seed)
        oracle._set_project_dir(directory, "nightly")
        oracle.verbose = 0
        oracle._save_trial = lambda trial: None
        cluster = Cluster(oracle, 8, seed)
        while len(oracle.trials) < trials:
            cluster.step()
        decide, times = oracle.populate_space, []

        slow = slowdown.fraction()  # the nightly suite's test switch (0: none)

        def timed(trial_id):
            t0 = time.thread_time()  # CPU time of this thread: steady on a shared machine
            response = decide(trial_id)
            slowdown.pad(time.thread_time() - t0, slow)
            times.append(time.thread_time() - t0)
            return response

        oracle.populate_space = timed
        for _ in range(decisions):
            cluster.step()
        return float(np.median(times) * 1e3)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main(argv) -> None:
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for tuner in FLAGS.tuners:
        measure(tuner.strip())


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
