"""Horovod weak-scaling efficiency of MLPF training: N ranks versus 1, same batch per rank.

    python -m benchmark.weak_scaling [--ranks=2 --batch_size=4 --elements=512 --steps=20
                                      --epochs=3 --threads=1 --repeats=2 --[no]pin
                                      --model.<field>=...]

The default step is the one the suite's training took on ttbar events without pileup: batches
of 4 events (161-493 elements each), which bucketed padding pads to 512 elements. (The default
dataset is now ttbar with pileup 20, about 1,100 elements per event: ``--elements=1280``.)

Launches ``horovodrun -np 1`` and ``horovodrun -np N --gloo`` subprocesses on localhost, each
training the real MLPF model (``ModelConfig`` defaults = the small model, overridable with
``--model.*`` flags) through ``mlpf_tf.train.train`` on in-memory schema-shaped events with
``--elements`` elements each (every rank its own events), ``--threads`` intra-op threads and
one inter-op thread per rank. The first epoch (tracing) is not timed; the throughput of a run
is N x batch x steps / median epoch time of the remaining epochs (events per second).

    efficiency = throughput(N ranks) / (N x throughput(1 rank))    (goal: >= 85 %)

Each rank is bound to ``--threads`` cores of its own (``--pin``, the default), so the 1-rank
and the N-rank runs get the same cores per rank, as with ``--bind-to core`` / ``srun
--cpu-bind=cores`` on a cluster; with ``--nopin`` a lone rank also runs its Horovod, Python and
inter-op threads on the cores the other ranks would use, which flatters the baseline and lets
the ranks of the scaled run migrate between cores.

With ``--repeats`` > 1 the 1-rank and N-rank runs alternate and each keeps its best run: other
processes on a shared machine only ever slow a run down. N x threads should not exceed the
cores, or the ranks compete for them and the figure measures the oversubscription.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

from absl import app, flags

FLAGS = flags.FLAGS
GOAL = 0.85
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def define_flags_once() -> None:
    """Define this program's flags at run time (importing the module defines none)."""
    if "weak_worker" in FLAGS:
        return
    from mlpf_tf.configbase import define_flags
    from mlpf_tf.model.config import ModelConfig

    flags.DEFINE_integer("ranks", 2, "ranks of the scaled run (compared with 1 rank)",
                         lower_bound=2)
    flags.DEFINE_integer("batch_size", 4, "events per batch per rank", lower_bound=1)
    flags.DEFINE_integer("elements", 512, "elements per event (512: what ttbar events without "
                         "pileup are padded to in their batches of 4)", lower_bound=1)
    flags.DEFINE_integer("steps", 20, "optimizer steps per epoch", lower_bound=1)
    flags.DEFINE_integer("epochs", 3, "epochs per run; the first (tracing) is not timed",
                         lower_bound=2)
    flags.DEFINE_integer("threads", 1, "TensorFlow intra-op threads per rank", lower_bound=1)
    flags.DEFINE_boolean("pin", True, "pin each rank to its own core(s) (local rank r -> the "
                         "r-th allowed cores), as `--bind-to core` does on a cluster; --nopin "
                         "lets the 1-rank run spill onto idle cores")
    flags.DEFINE_integer("repeats", 1, "alternating runs per rank count; the best is kept",
                         lower_bound=1)
    flags.DEFINE_integer("timeout", 1800, "seconds allowed per horovodrun launch",
                         lower_bound=1)
    flags.DEFINE_string("output", "", "also write the result as JSON to this file")
    # Internal: one rank of a launched run.
    flags.DEFINE_boolean("weak_worker", False, "internal: run as a rank of a timed run")
    flags.DEFINE_string("weak_model_json", "", "internal: ModelConfig as JSON")
    flags.DEFINE_string("weak_result", "", "internal: where rank 0 writes its timings")
    define_flags(ModelConfig)


# --- one rank of a timed run -------------------------------------------------------------------


def _events(n_events: int, n_elements: int, seed: int):
    """(X, y, w) of schema-shaped random events, every element real (cost is value-free)."""
    from benchmark.throughput import synthetic_batch

    return synthetic_batch(n_events, n_elements, seed)


def pin_to_cores(threads: int) -> set[int]:
    """Bind this process (and every thread it starts later) to ``threads`` cores of its own,
    chosen by the local rank horovodrun passes in the environment; returns them."""
    cores = sorted(os.sched_getaffinity(0))
    local_rank = int(os.environ.get("HOROVOD_LOCAL_RANK", "0"))
    first = local_rank * threads % len(cores)
    chosen = set(cores[first:first + threads]) or set(cores)
    os.sched_setaffinity(0, chosen)
    return chosen


def run_worker(model_cfg, batch_size: int, elements: int, steps: int, epochs: int,
               threads: int) -> dict[str, Any]:
    """Train under the current Horovod launch; return this run's timings (same on all ranks)."""
    import tensorflow as tf

    from mlpf_tf import distributed
    from mlpf_tf.train import configure_threads, train
    from mlpf_tf.train_config import TrainConfig

    configure_threads(threads, 1)
    ctx = distributed.init()
    distinct = min(steps, 4)  # batches of distinct events per rank, cycled
    arrays = _events(distinct * batch_size, elements, seed=1000 + ctx.rank)

    def datasets(_ctx):
        ds = tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size, drop_remainder=True)
        return ds.cache(), None

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, steps_per_epoch=steps, lr=1e-4,
                      lr_scaling="none", num_threads=threads, seed=0)
    cpu_marks = []  # process CPU seconds (all threads) at every epoch end
    result = train(None, model_cfg, cfg, datasets=datasets, context=ctx,
                   on_epoch_end=lambda e, logs: cpu_marks.append(time.process_time()))
    timed = result.epoch_seconds[1:]
    epoch_s = statistics.median(timed)
    # CPU seconds per wall second of the timed epochs, per rank: well below the thread count
    # means the rank waited (for the other rank, or for cores taken by other processes).
    cpu_share = (cpu_marks[-1] - cpu_marks[0]) / sum(timed)
    # the step's gradient allreduce alone, after training (ranks meet before each call)
    allreduce = distributed.time_gradient_allreduce(result.model.trainable_variables, 20, ctx)
    return {"ranks": ctx.size, "epoch_seconds": result.epoch_seconds,
            "step_seconds": epoch_s / steps,
            "allreduce_seconds": statistics.median(allreduce) if allreduce else 0.0,
            "gradient_mb": sum(v.shape.num_elements() * v.dtype.size
                               for v in result.model.trainable_variables) / 1e6,
            "events_per_s": ctx.size * batch_size * steps / epoch_s,
            "cpu_share": distributed.allgather_object(cpu_share, ctx),
            "final_loss": result.history[-1]["loss"]}


# --- the launcher ------------------------------------------------------------------------------


def _horovodrun() -> str:
    local = os.path.join(os.path.dirname(sys.executable), "horovodrun")
    found = local if os.path.exists(local) else shutil.which("horovodrun")
    if not found:
        raise RuntimeError("horovodrun not found next to the Python interpreter or on PATH")
    return found


def launch(ranks: int, model_cfg, *, batch_size: int, elements: int, steps: int, epochs: int,
           threads: int, timeout: int, pin: bool = True) -> dict[str, Any]:
    """One timed run with ``ranks`` ranks on localhost (a horovodrun subprocess)."""
    with tempfile.TemporaryDirectory(prefix="weak-scaling-") as tmp:
        result_path = os.path.join(tmp, "result.json")
        cmd = [_horovodrun(), "-np", str(ranks), "-H", f"localhost:{ranks}", "--gloo",
               sys.executable, "-m", "benchmark.weak_scaling", "--weak_worker",
               f"--weak_model_json={json.dumps(model_cfg.to_dict())}",
               f"--weak_result={result_path}", f"--batch_size={batch_size}",
               f"--elements={elements}", f"--steps={steps}", f"--epochs={epochs}",
               f"--threads={threads}", f"--{'' if pin else 'no'}pin"]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": str(threads),
               "TF_NUM_INTRAOP_THREADS": str(threads), "TF_NUM_INTEROP_THREADS": "1"}
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        if proc.returncode != 0 or not os.path.exists(result_path):
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
            raise RuntimeError(f"{' '.join(cmd[:8])} ... failed (exit {proc.returncode}):\n"
                               f"{tail}")
        with open(result_path) as fh:
            return json.load(fh)


def measure(model_cfg=None, *, ranks: int = 2, batch_size: int = 4, elements: int = 512,
            steps: int = 20, epochs: int = 3, threads: int = 1, repeats: int = 1,
            timeout: int = 1800, pin: bool = True) -> dict[str, Any]:
    """Weak-scaling efficiency of ``ranks`` ranks versus 1 (see the module docstring)."""
    from mlpf_tf.model.config import ModelConfig

    model_cfg = model_cfg if model_cfg is not None else ModelConfig()
    model_cfg.validate()
    kwargs = dict(batch_size=batch_size, elements=elements, steps=steps, epochs=epochs,
                  threads=threads, timeout=timeout, pin=pin)
    runs: dict[int, list[dict[str, Any]]] = {1: [], ranks: []}
    for _ in range(repeats):
        for n in (1, ranks):
            runs[n].append(launch(n, model_cfg, **kwargs))
    best = {n: max(r, key=lambda x: x["events_per_s"]) for n, r in runs.items()}
    efficiency = best[ranks]["events_per_s"] / (ranks * best[1]["events_per_s"])
    return {
        "ranks": ranks, "batch_size_per_rank": batch_size, "elements": elements,
        "steps_per_epoch": steps, "timed_epochs": epochs - 1, "threads_per_rank": threads,
        "repeats": repeats, "cores": os.cpu_count(), "pinned": pin,
        "model": "MLPF " + ", ".join(f"{k}={v}" for k, v in model_cfg.to_dict().items()
                                     if k in ("hidden_dim", "output_dim", "bin_size",
                                              "num_graph_layers_common",
                                              "num_graph_layers_energy")),
        "events_per_s_1": best[1]["events_per_s"],
        f"events_per_s_{ranks}": best[ranks]["events_per_s"],
        "step_seconds_1": best[1]["step_seconds"],
        f"step_seconds_{ranks}": best[ranks]["step_seconds"],
        "cpu_share_1": best[1]["cpu_share"],
        "allreduce_seconds": best[ranks]["allreduce_seconds"],
        "gradient_mb": best[ranks]["gradient_mb"],
        f"cpu_share_{ranks}": best[ranks]["cpu_share"],
        "load_average": os.getloadavg(),
        "all_events_per_s_1": [r["events_per_s"] for r in runs[1]],
        f"all_events_per_s_{ranks}": [r["events_per_s"] for r in runs[ranks]],
        "efficiency": efficiency,
        "goal": GOAL,
        "goal_met": efficiency >= GOAL,
    }


def main(argv) -> None:
    del argv
    from mlpf_tf.configbase import atomic_write_text, section_from_flags
    from mlpf_tf.model.config import ModelConfig

    if FLAGS.weak_worker:
        if FLAGS.pin:
            pin_to_cores(FLAGS.threads)  # before TensorFlow and Horovod start their threads
        model_cfg = ModelConfig.from_dict(json.loads(FLAGS.weak_model_json))
        out = run_worker(model_cfg, FLAGS.batch_size, FLAGS.elements, FLAGS.steps,
                         FLAGS.epochs, FLAGS.threads)
        from mlpf_tf import distributed

        if distributed.current().is_root:
            atomic_write_text(FLAGS.weak_result, json.dumps(out) + "\n")
        return

    model_cfg = section_from_flags(ModelConfig)
    model_cfg.validate()
    n = FLAGS.ranks
    if n * FLAGS.threads > (os.cpu_count() or 1):
        print(f"warning: {n} ranks x {FLAGS.threads} threads exceed the {os.cpu_count()} cores")
    r = measure(model_cfg, ranks=n, batch_size=FLAGS.batch_size, elements=FLAGS.elements,
                steps=FLAGS.steps, epochs=FLAGS.epochs, threads=FLAGS.threads, pin=FLAGS.pin,
                repeats=FLAGS.repeats, timeout=FLAGS.timeout)
    print(f"weak scaling: {r['model']}; {r['elements']} elements/event, batch "
          f"{r['batch_size_per_rank']} events/rank, {r['threads_per_rank']} intra-op "
          f"thread(s)/rank{', each rank pinned to its own core(s)' if r['pinned'] else ''}, "
          f"{r['steps_per_epoch']} steps x {r['timed_epochs']} timed epochs, "
          f"best of {r['repeats']}")
    print(f"1 rank : {r['events_per_s_1']:8.2f} events/s  ({r['step_seconds_1'] * 1e3:.1f} ms "
          f"per step)  runs: {', '.join(f'{v:.2f}' for v in r['all_events_per_s_1'])}")
    print(f"{n} ranks: {r[f'events_per_s_{n}']:8.2f} events/s  "
          f"({r[f'step_seconds_{n}'] * 1e3:.1f} ms per step)  runs: "
          f"{', '.join(f'{v:.2f}' for v in r[f'all_events_per_s_{n}'])}")
    print("CPU seconds per wall second per rank (timed epochs): 1 rank "
          f"{', '.join(f'{v:.2f}' for v in r['cpu_share_1'])}; {n} ranks "
          f"{', '.join(f'{v:.2f}' for v in r[f'cpu_share_{n}'])}; load average "
          f"{', '.join(f'{v:.1f}' for v in r['load_average'])} on {r['cores']} cores")
    step_n = r[f"step_seconds_{n}"]
    print(f"gradient allreduce ({r['gradient_mb']:.2f} MB float32, {n} ranks, timed alone "
          f"after training, median of 20): {r['allreduce_seconds'] * 1e3:.2f} ms = "
          f"{r['allreduce_seconds'] / step_n:.1%} of the {n}-rank step; the step's excess over "
          f"1 rank: {(step_n - r['step_seconds_1']) * 1e3:.1f} ms")
    print(f"efficiency = throughput({n}) / ({n} x throughput(1)) = {r['efficiency']:.1%} "
          f"(goal >= {GOAL:.0%}: {'met' if r['goal_met'] else 'NOT met'})")
    if FLAGS.output:
        atomic_write_text(FLAGS.output, json.dumps(r, indent=1) + "\n")


def run() -> None:
    """Console entry point."""
    define_flags_once()
    app.run(main)


if __name__ == "__main__":
    run()
