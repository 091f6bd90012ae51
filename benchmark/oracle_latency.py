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

With ``--chief`` (default on) the same oracle is then measured behind the chief
(:class:`tuners.distributed.chief.Chief`, in-process, no gRPC), which appends every decision
to its state log (:mod:`tuners.distributed.statelog`) and forces it to disk before a call
returns. Filled to ``--trials`` trials (log not forced while filling), then for
``--chief_decisions`` trials: the decision inside the chief (``populate_space``), the chief's
``create + update + end`` per trial as a stand-in worker makes them (``update_trial`` and
``EndAndCreate``: one ``fsync`` per trial), the same when the worker also sends its
``trial_start`` / ``epoch`` / ``trial_end`` records (the ``trial_end`` is forced, the others
ride with the next forced write: two ``fsync`` per trial), the same without forcing the log, and ``--workers`` threads calling at once (group commit: concurrent calls
share an ``fsync``; wall time per trial and fsyncs per trial). ``--chief_dir``: where the run
directory goes (default: a temporary directory; it must be on the disk you care about, not a
``tmpfs``). A bare ``fsync`` of one appended line on that disk is timed first. Beside the timed
calls a thread does what the chief's serve loop does every 0.2 s (``flush``, which writes a due
oracle snapshot, and ``freeze_heap``); printed: how long each snapshot held the chief's lock,
the garbage collector's pauses by generation during the calls, and what one full collection of
the filled chief costs with and without ``gc.freeze``.
"""

from __future__ import annotations

import gc
import heapq
import os
import random
import shutil
import tempfile
import threading
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
flags.DEFINE_boolean("chief", True, "also measure the chief with its durable state log")
flags.DEFINE_integer("chief_decisions", 500, "trials timed behind the chief, per mode",
                     lower_bound=1)
flags.DEFINE_string("chief_dir", "", "parent of the chief's run directory (default: the "
                    "system's temporary directory)")


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


def make_oracle(tuner: str):
    """A fresh ASHA or ASHA+BO oracle of the benchmark's settings."""
    import keras_tuner

    from tuners.asha import ASHABOOracle, ASHAOracle
    from tuners.space import build_space

    hp = build_space(FLAGS.space)
    common = dict(min_epochs=1, max_epochs=81, reduction_factor=3, seed=FLAGS.seed)
    if tuner == "asha":
        return ASHAOracle(keras_tuner.Objective("val_loss", "min"), hp, **common)
    if tuner == "asha_bo":
        return ASHABOOracle(keras_tuner.Objective("val_loss", "min"), hp,
                            max_fit_points=FLAGS.bo_max_fit_points,
                            gp_restarts=FLAGS.bo_gp_restarts, **common)
    raise app.UsageError(f"--tuners: unknown oracle {tuner!r}; expected asha or asha_bo")


def fill(oracle, start):
    """Record ``--trials`` trials with random proposals and no trial files (keras-tuner's
    ``_save_trial``; the caller restores it): ``start()`` makes the simulated workers. The
    journal is started first (its header names the oracle's own sampler), which takes over
    afterwards. Returns the workers and the seconds it took."""
    from tuners.samplers import RandomSampler

    oracle._writer()
    sampler, oracle.sampler = oracle.sampler, RandomSampler()
    oracle._save_trial = lambda trial: None
    t_fill = time.perf_counter()
    workers = start()
    while len(oracle.trials) < FLAGS.trials:
        workers.step()
    t_fill = time.perf_counter() - t_fill
    if hasattr(sampler, "_proposals"):
        sampler._proposals = oracle.ladder.configs_started  # warm-up is over
    oracle.sampler = sampler
    return workers, t_fill


def _measure(tuner: str, directory: str) -> None:
    import keras_tuner
    from keras_tuner.src.engine import oracle as oracle_module

    from tuners.space import build_space

    hp = build_space(FLAGS.space)
    common = dict(min_epochs=1, max_epochs=81, reduction_factor=3, seed=FLAGS.seed)
    oracle = make_oracle(tuner)
    oracle._set_project_dir(directory, tuner)
    oracle.verbose = 0

    # Fill: no trial files, random proposals (the journal is started first: its header names
    # the oracle's own sampler).
    oracle.save = lambda: None
    cluster, t_fill = fill(oracle, lambda: Cluster(oracle, FLAGS.workers, FLAGS.seed))
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


class ChiefFleet:
    """Simulated workers calling a chief in-process: each ends its trial after a random time
    (``update_trial`` with the result, then ``end_and_create``, which brings the next)."""

    def __init__(self, chief, workers: int, seed: int):
        from tuners.distributed.chief import worker_tuner_id

        self.chief = chief
        self.rng = random.Random(seed)
        self.lock = threading.Lock()  # the simulation's own state, for calls from threads
        self.running: list = []
        self.now = 0.0
        self.order = 0
        for w in range(workers):
            self._push(worker_tuner_id(w, chief.search_id), chief.create_trial(
                worker_tuner_id(w, chief.search_id)))

    def _push(self, worker: str, reply: dict) -> None:
        with self.lock:
            self._push_locked(worker, reply)

    def _push_locked(self, worker: str, reply: dict) -> None:
        if reply["status"] == "RUNNING":
            v = reply["values"]
            duration = (v["tuner/epochs"] - v["tuner/initial_epoch"]) * self.rng.uniform(0.3, 3)
            heapq.heappush(self.running, (self.now + duration, self.order, worker, reply))
            self.order += 1

    def pop(self):
        with self.lock:
            self.now, _, worker, reply = heapq.heappop(self.running)
            values = reply["values"]
            return worker, reply["trial_id"], values, synthetic_loss(values,
                                                                     self.rng.gauss(0, 0.01))

    def step(self, records: bool = False) -> float:
        """End the earliest trial and hand its worker the next; the chief's wall seconds."""
        worker, trial_id, values, loss = self.pop()
        return self.finish(worker, trial_id, values, loss, records)

    def finish(self, worker, trial_id, values, loss, records: bool) -> float:
        chief, epochs = self.chief, values["tuner/epochs"]
        t0 = time.perf_counter()
        if records:
            chief.record(worker, trial_id, "trial_start", {"hyperparameters": values})
            chief.record(worker, trial_id, "epoch", {"epoch": epochs,
                                                     "metrics": {"val_loss": loss}})
        chief.update_trial(worker, trial_id, {"val_loss": loss}, step=epochs)
        if records:
            chief.record(worker, trial_id, "trial_end", {
                "status": "COMPLETED", "metrics": {"val_loss": loss}, "epochs": epochs})
        reply = chief.end_and_create(worker, trial_id, "COMPLETED")
        elapsed = time.perf_counter() - t0
        self._push(worker, reply["next"])
        return elapsed


def fsync_seconds(directory: str, count: int = 200) -> list[float]:
    """Wall seconds of ``fsync`` after appending one short line, ``count`` times."""
    path = os.path.join(directory, "fsync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    times = []
    try:
        for i in range(count):
            os.write(fd, b"%08d {\"probe\": true}\n" % i)
            t0 = time.perf_counter()
            os.fsync(fd)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)
    return times


def measure_chief(tuner: str) -> None:
    """The oracle behind the chief, with its state log forced to disk (a temporary run
    directory under ``--chief_dir``, removed afterwards)."""
    directory = tempfile.mkdtemp(prefix="chief-latency-", dir=FLAGS.chief_dir or None)
    try:
        _measure_chief(tuner, directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _measure_chief(tuner: str, directory: str) -> None:
    import io

    from tuners.distributed.chief import Chief

    print(f"[chief {tuner}] bare fsync of one appended line in {directory}: "
          f"{_stats(fsync_seconds(directory))}")
    oracle = make_oracle(tuner)
    chief = Chief(oracle, search_id="latency", run_dir=os.path.join(directory, "run"),
                  lease_timeout=1e9, progress_interval=0, out=io.StringIO(),
                  default_epochs=81, log_fsync=False)
    fleet, t_fill = fill(oracle, lambda: ChiefFleet(chief, FLAGS.workers, FLAGS.seed))
    del oracle._save_trial
    log = chief.log
    print(f"[chief {tuner}] filled {len(oracle.trials)} trials through the chief in "
          f"{t_fill:.1f} s; state log {log.size / 1e6:.1f} MB, {log.seq} entries")
    t0 = time.perf_counter()
    chief.flush(force=True)  # the fill skipped the trial files (and their cached texts)
    print(f"[chief {tuner}] first snapshot after the fill: {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    gc.collect()
    full = time.perf_counter() - t0
    gc.freeze()
    t0 = time.perf_counter()
    gc.collect()
    frozen = time.perf_counter() - t0
    gc.unfreeze()  # the serve loop's freeze_heap (below) freezes it again
    print(f"[chief {tuner}] a full garbage collection of the filled chief: {full * 1e3:.1f} ms; "
          f"after gc.freeze (Chief.freeze_heap): {frozen * 1e3:.2f} ms")
    flusher = Flusher(chief)
    pauses = GcPauses()

    decide, decisions = oracle.populate_space, []

    def timed_populate_space(trial_id):
        t0 = time.perf_counter()
        response = decide(trial_id)
        decisions.append(time.perf_counter() - t0)
        return response

    oracle.populate_space = timed_populate_space
    n = FLAGS.chief_decisions
    for mode, records, forced in (("durable", False, True), ("durable, with records", True, True),
                                  ("log not forced", False, False)):
        log.fsync = forced
        decisions.clear()
        fsyncs, entries = log.fsyncs, log.seq
        times = [fleet.step(records=records) for _ in range(n)]
        print(f"[chief {tuner}] decision (populate_space) in the chief, {mode}: "
              f"{_stats(decisions)}")
        print(f"[chief {tuner}] create+update+end per trial, {mode}: {_stats(times)}; "
              f"{(log.fsyncs - fsyncs) / n:.2f} fsyncs and {(log.seq - entries) / n:.1f} log "
              "entries per trial")

    # Group commit: the workers call at once; an fsync covers every call waiting for it.
    log.fsync = True
    fsyncs = log.fsyncs
    per_worker = max(1, n // FLAGS.workers)

    def worker_loop(count: int) -> None:
        for _ in range(count):
            worker, trial_id, values, loss = fleet.pop()
            fleet.finish(worker, trial_id, values, loss, records=False)

    threads = [threading.Thread(target=worker_loop, args=(per_worker,))
               for _ in range(FLAGS.workers)]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - t0
    done = per_worker * FLAGS.workers
    print(f"[chief {tuner}] {FLAGS.workers} threads at once, durable: {done} trials in "
          f"{wall:.2f} s = {wall / done * 1e3:.3f} ms wall per trial, "
          f"{(log.fsyncs - fsyncs) / done:.2f} fsyncs per trial (group commit)")
    flusher.stop()
    pauses.stop()
    print(f"[chief {tuner}] Python's cyclic garbage collector during the timed calls: "
          + "; ".join(f"generation {g}: {_stats(pauses.seconds[g])}" for g in (0, 1, 2)))
    print(f"[chief {tuner}] flushes beside the calls (the serve loop's, every "
          f"{flusher.tick:g} s): {flusher.snapshots} oracle snapshots, held the chief's lock "
          f"{_stats(flusher.locked)}; whole flush {_stats(flusher.walls)}")
    chief.stop()


class GcPauses:
    """Wall seconds of every cyclic garbage collection (they stop all threads), by
    generation, from construction to :meth:`stop`."""

    def __init__(self):
        self.seconds: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._t0 = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.seconds[info["generation"]].append(time.perf_counter() - self._t0)

    def stop(self) -> None:
        gc.callbacks.remove(self._callback)


class Flusher:
    """What the chief's serve loop does beside the workers' calls: ``flush()`` every tick
    (a due oracle snapshot is read under the chief's lock and written after it) and
    ``freeze_heap()`` (every 30 s or 50 ended trials, and at the first tick: the filled
    state). Records the
    wall seconds of each flush that wrote a snapshot, and how long it held the lock."""

    def __init__(self, chief, tick: float = 0.2):
        self.chief, self.tick = chief, tick
        self.snapshots, self.walls, self.locked = 0, [], []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        chief, oracle = self.chief, self.chief.oracle
        parts_of = oracle.snapshot_parts

        def timed_parts():
            t0 = time.perf_counter()
            try:
                return parts_of()
            finally:
                self.locked.append(time.perf_counter() - t0)

        oracle.snapshot_parts = timed_parts
        try:
            while not self._stop.wait(self.tick):
                before = len(self.locked)
                t0 = time.perf_counter()
                chief.flush()
                chief.freeze_heap()
                if len(self.locked) > before:
                    self.snapshots += 1
                    self.walls.append(time.perf_counter() - t0)
        finally:
            del oracle.snapshot_parts

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


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
        if FLAGS.chief:
            measure_chief(tuner.strip())


def run() -> None:
    app.run(main)


if __name__ == "__main__":
    run()
