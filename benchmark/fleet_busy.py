"""How busy a large fleet of workers stays: ASHA vs keras-tuner's stock Hyperband over gRPC.

    python -m benchmark.fleet_busy                         # 64 and 256 workers, both tuners
    python -m benchmark.fleet_busy --workers=256 --tuners=asha --duration=30

For each tuner and fleet size a chief (:class:`tuners.distributed.chief.Chief`, the lease-aware gRPC
server) serves the oracle on loopback; the workers are threads spread over ``--processes``
processes (:func:`tuners.distributed.worker.run_sleep_worker`: heartbeats, the search-id guard, every call
a real gRPC call). A trial is a sleep drawn uniformly from ``--trial_seconds_min`` ..
``--trial_seconds_max`` (no TensorFlow, no training), reporting a synthetic objective.

Both tuners get the same search: the reduced MLPF space, ``--max_epochs`` and
``--reduction_factor``, and a budget of N trials with N = workers * duration / mean trial
time (so every configuration runs about ``--duration`` seconds if the fleet stays busy).
Hyperband runs as many iterations as N trials need (``--search.hyperband_iterations``) and stops
at N trials too. Each configuration is bounded by ``--timeout``.

Printed per configuration: the busy fraction = time the workers spent in trials (sleeping)
/ time the workers existed (from their start to the STOPPED answer), trials finished,
IDLE answers, wall time (with process start-up), trials per second, the workers' time outside
trials per trial (``ms/trial``: the gRPC round trip -- one per trial, see
:class:`tuners.distributed.worker.ChiefClient` -- IDLE waits, the tail of the search), the CPU time of the
chief's process per trial (``chief ms``: oracle decisions, journal, gRPC serving; what limits
a fleet's size on one chief core) and the machine's load average (the figures degrade on a
machine shared with other jobs).
The ASHA goal is >= 95% busy at 256 workers.
Seeds are fixed (``--seed``): the configurations and the trial lengths each worker draws are
the same on every run; the timing of the machine is not.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import os
import random
import sys
import tempfile
import threading
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("workers", ["64", "256"], "fleet sizes (simulated worker groups)")
flags.DEFINE_list("tuners", ["asha", "hyperband"], "tuners to compare: asha, hyperband, random")
flags.DEFINE_float("trial_seconds_min", 0.5, "shortest trial (sleep), seconds", lower_bound=0.0)
flags.DEFINE_float("trial_seconds_max", 1.0, "longest trial (sleep), seconds", lower_bound=0.0)
flags.DEFINE_float("duration", 45.0, "target seconds per configuration (sets the trial budget)",
                   lower_bound=1.0)
flags.DEFINE_float("timeout", 120.0, "hard bound per configuration, seconds", lower_bound=1.0)
flags.DEFINE_integer("processes", 4, "worker processes (the workers are threads in them)",
                     lower_bound=1)
flags.DEFINE_integer("max_epochs", 27, "epochs of a full trial (top rung / Hyperband max)",
                     lower_bound=1)
flags.DEFINE_integer("min_epochs", 1, "ASHA bottom rung", lower_bound=1)
flags.DEFINE_integer("reduction_factor", 3, "eta", lower_bound=2)
flags.DEFINE_float("heartbeat_interval", 2.0, "worker heartbeat period, seconds", lower_bound=0)
flags.DEFINE_float("idle_wait", 0.5, "a worker's wait after an IDLE answer, seconds",
                   lower_bound=0.0)
flags.DEFINE_float("save_interval", 5.0, "chief: coalesce oracle state writes (seconds)",
                   lower_bound=0.0)
flags.DEFINE_integer("threads", 4, "chief gRPC server threads", lower_bound=1)
flags.DEFINE_boolean("prefetch", True, "workers end a trial and get the next in one call "
                     "(--noprefetch: separate EndTrial and CreateTrial calls)")
flags.DEFINE_integer("seed", 1, "seed of the oracles and of the trial lengths", lower_bound=1)

SEARCH_ID = "fleet"


@dataclasses.dataclass
class Result:
    tuner: str
    workers: int
    trial_budget: int
    busy_fraction: float
    trials: int
    idle_answers: int
    wall_seconds: float
    chief_outcome: str
    errors: int
    overhead_ms: float = 0.0  # worker time outside trials per trial (calls, waits)
    load: float = 0.0  # 1-minute load average of the machine when the configuration ended
    chief_cpu_ms: float = 0.0  # CPU time of the chief's process per trial
    first_error: str | None = None


def trial_budget(workers: int, duration: float, mean_trial: float) -> int:
    """Trials a fleet finishes in ``duration`` seconds when always busy."""
    return max(workers, int(round(workers * duration / mean_trial)))


def hyperband_trials_per_iteration(max_epochs: int, factor: int) -> int:
    """Trials one keras-tuner Hyperband iteration issues (its bracket and round sizes)."""
    brackets, epochs = 0, float(max_epochs)
    while epochs >= 1:
        epochs /= factor
        brackets += 1
    end_size0 = math.ceil(1 + math.log(max_epochs, factor))
    total = 0
    for bracket in range(brackets):
        end_size = end_size0 / (bracket + 1)
        total += sum(math.ceil(end_size * factor ** (bracket - r)) for r in range(bracket + 1))
    return total


def make_oracle(tuner: str, budget: int):
    """The oracle of ``tuner`` for the reduced space with a budget of ``budget`` trials."""
    from tuners.config import SearchConfig
    from tuners.oracles import make_oracle as build
    from tuners.space import build_space

    iterations = 1
    if tuner == "hyperband":
        iterations = math.ceil(budget / hyperband_trials_per_iteration(
            FLAGS.max_epochs, FLAGS.reduction_factor))
    cfg = SearchConfig(tuner=tuner, space="reduced", max_trials=budget,
                       max_epochs=FLAGS.max_epochs, min_epochs=FLAGS.min_epochs,
                       reduction_factor=FLAGS.reduction_factor, seed=FLAGS.seed,
                       hyperband_iterations=iterations, max_consecutive_failed_trials=10**9)
    return build(cfg, build_space("reduced"))


def _worker_process(address: str, worker_ids: list[int], seed: int, low: float, high: float,
                    heartbeat: float, idle_wait: float, deadline_in: float, queue,
                    prefetch: bool = True, secret: str | None = None) -> None:
    """One process running ``worker_ids`` as threads; puts their WorkerLogs on ``queue``."""
    from tuners.distributed.worker import ChiefClient, run_sleep_worker

    deadline = time.monotonic() + deadline_in
    logs = []

    def one(worker_id: int) -> None:
        rng = random.Random(seed * 100_003 + worker_id)
        client = ChiefClient(address, worker_id, SEARCH_ID, heartbeat_interval=heartbeat,
                             retry_for=10.0, backoff_initial=0.1, backoff_max=1.0,
                             rpc_timeout=30.0, log=lambda line: None, prefetch=prefetch,
                             secret=secret)
        try:
            logs.append(run_sleep_worker(client, trial_seconds=lambda values: rng.uniform(
                low, high), idle_wait=idle_wait, deadline=deadline, seed=worker_id))
        finally:
            client.close()

    threads = [threading.Thread(target=one, args=(w,), daemon=True) for w in worker_ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(deadline_in + 30.0)
    queue.put([dataclasses.asdict(log) for log in logs])


def run_configuration(tuner: str, workers: int) -> Result:
    from tuners.distributed.chief import Chief

    low, high = FLAGS.trial_seconds_min, FLAGS.trial_seconds_max
    budget = trial_budget(workers, FLAGS.duration, (low + high) / 2.0)
    with tempfile.TemporaryDirectory(prefix="fleet-") as run_dir:
        oracle = make_oracle(tuner, budget)
        chief = Chief(oracle, search_id=SEARCH_ID, run_dir=run_dir, lease_timeout=30.0,
                      save_interval=FLAGS.save_interval, threads=FLAGS.threads,
                      progress_interval=0, worker_wait=FLAGS.timeout, out=open(os.devnull, "w"))
        port = chief.start("127.0.0.1:0")
        outcome: list[str] = []
        server = threading.Thread(target=lambda: outcome.append(chief.serve(drain=2.0)),
                                  daemon=True)
        server.start()
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        groups = [list(range(p, workers, FLAGS.processes)) for p in range(FLAGS.processes)]
        start = time.monotonic()
        cpu_start = time.process_time()  # this process: the chief's server threads
        procs = [ctx.Process(target=_worker_process, daemon=True,
                             args=(f"127.0.0.1:{port}", group, FLAGS.seed, low, high,
                                   FLAGS.heartbeat_interval, FLAGS.idle_wait, FLAGS.timeout,
                                   queue, FLAGS.prefetch, chief.secret))
                 for group in groups if group]
        for proc in procs:
            proc.start()
        logs = []
        for _ in procs:
            try:
                logs.extend(queue.get(timeout=FLAGS.timeout + 60.0))
            except Exception:  # noqa: BLE001 - a process died: counted as missing workers
                break
        wall = time.monotonic() - start
        chief_cpu = time.process_time() - cpu_start
        for proc in procs:
            proc.join(10.0)
            if proc.is_alive():
                proc.kill()
        server.join(10.0)  # the chief ends by itself once the last trial ended
        chief.request_stop()
        server.join(30.0)
    busy = sum(log["busy_seconds"] for log in logs)
    alive = sum(log["finished"] - log["started"] for log in logs)
    return Result(tuner=tuner, workers=workers, trial_budget=budget,
                  busy_fraction=busy / alive if alive else 0.0,
                  trials=sum(log["trials"] for log in logs),
                  idle_answers=sum(log["idle_answers"] for log in logs), wall_seconds=wall,
                  chief_outcome=outcome[0] if outcome else "running",
                  errors=sum(1 for log in logs if log["error"]) + workers - len(logs),
                  overhead_ms=1000.0 * (alive - busy) / max(1, sum(log["trials"] for log in logs)),
                  load=os.getloadavg()[0],
                  chief_cpu_ms=1000.0 * chief_cpu / max(1, sum(log["trials"] for log in logs)),
                  first_error=next((log["error"] for log in logs if log["error"]), None))


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    tuners = [t.strip() for t in FLAGS.tuners]
    for tuner in tuners:
        if tuner not in ("asha", "hyperband", "random"):
            print(f"fleet_busy: error: --tuners: unknown tuner {tuner!r} (asha, hyperband, "
                  "random)", file=sys.stderr)
            return 2
    try:
        sizes = [int(w) for w in FLAGS.workers]
    except ValueError:
        print(f"fleet_busy: error: --workers={','.join(FLAGS.workers)}: expected integers",
              file=sys.stderr)
        return 2
    if FLAGS.trial_seconds_max < FLAGS.trial_seconds_min:
        print("fleet_busy: error: --trial_seconds_max must be >= --trial_seconds_min",
              file=sys.stderr)
        return 2
    print(f"trials: sleeps of {FLAGS.trial_seconds_min:g}-{FLAGS.trial_seconds_max:g} s; "
          f"max_epochs {FLAGS.max_epochs}, eta {FLAGS.reduction_factor}; target "
          f"{FLAGS.duration:g} s per configuration; {FLAGS.processes} worker processes; "
          f"chief: {FLAGS.threads} threads, state written every {FLAGS.save_interval:g} s; "
          f"idle wait {FLAGS.idle_wait:g} s; heartbeat {FLAGS.heartbeat_interval:g} s; "
          f"{'one call' if FLAGS.prefetch else 'two calls'} per trial",
          flush=True)
    print(f"{'tuner':<10} {'workers':>7} {'budget':>7} {'busy':>7} {'trials':>7} "
          f"{'IDLE':>7} {'wall s':>7} {'trials/s':>8} {'ms/trial':>8} {'chief ms':>8} "
          f"{'load':>5}  chief",
          flush=True)
    results = []
    for workers in sizes:
        for tuner in tuners:
            r = run_configuration(tuner, workers)
            results.append(r)
            print(f"{r.tuner:<10} {r.workers:>7} {r.trial_budget:>7} "
                  f"{100 * r.busy_fraction:>6.1f}% {r.trials:>7} {r.idle_answers:>7} "
                  f"{r.wall_seconds:>7.1f} {r.trials / r.wall_seconds:>8.1f} "
                  f"{r.overhead_ms:>8.1f} {r.chief_cpu_ms:>8.2f} {r.load:>5.1f}  "
                  f"{r.chief_outcome}{f', {r.errors} worker errors' if r.errors else ''}",
                  flush=True)
            if r.first_error:
                print(f"  first worker error: {r.first_error}", flush=True)
    return 0


if __name__ == "__main__":
    app.run(main)
