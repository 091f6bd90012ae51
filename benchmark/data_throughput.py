"""Throughput of the data path: event generation and the tf.data input pipeline.

    python -m benchmark.data_throughput [--gun_events=300 --ttbar_events=20 ...]

Prints
  * generation events/s of ``generate_events`` for the particle gun, Pythia ttbar without
    pileup and ttbar with ``--pileup`` interactions (without the generator set-up, see
    :func:`time_generation`; plus mean elements per event);
  * for each ``--sizes`` value S: events of S/2..S elements written as Delphes files, built
    into a delphes_pf TFDS dataset (build events/s), then read through ``build_pipeline``
    (fixed padding to S, shuffling, batching): steady-state events/s and MB/s of the padded
    batches (X, y, w; float32), measured over ``--epochs`` epochs after one warm-up epoch.
Defaults take about one to three minutes on two cores. :func:`nightly_pipeline_throughput` is
the fixed measurement of the nightly regression suite. ``run()`` is the
``mlpf-data-throughput`` console entry point.
"""

from __future__ import annotations

import os
import tempfile
import time

import numpy as np
from absl import app, flags

from benchmark import slowdown

FLAGS = flags.FLAGS


def define_flags_once() -> None:
    """Define this program's flags (at run time, so importing the module defines none)."""
    if "gun_events" in FLAGS:
        return
    flags.DEFINE_integer("gun_events", 300, "particle-gun events to time (0 = skip)", lower_bound=0)
    flags.DEFINE_integer("ttbar_events", 50, "Pythia ttbar events without pileup (0 = skip)",
                         lower_bound=0)
    flags.DEFINE_integer("pileup_events", 10, "Pythia ttbar events with --pileup (0 = skip)",
                         lower_bound=0)
    flags.DEFINE_float("pileup", 20.0, "mean pileup interactions of the pileup measurement",
                       lower_bound=0.0)
    flags.DEFINE_list("sizes", ["256", "1024", "4096"], "max_elements values of the pipeline runs")
    flags.DEFINE_integer("pipeline_elements", 400_000,
                         "elements per pipeline run (events = this / size)", lower_bound=1)
    flags.DEFINE_integer("batch_size", 8, "events per batch", lower_bound=1)
    flags.DEFINE_integer("epochs", 2, "timed epochs per pipeline run", lower_bound=1)
    flags.DEFINE_integer("threads", 2, "TensorFlow intra-op threads", lower_bound=1)
    flags.DEFINE_integer("seed", 1, "seed of generation and shuffling", lower_bound=1)


def time_generation(process: str, n_events: int, pileup: float, seed: int) -> dict:
    """Events/s of ``generate_events`` for one process, without the generator set-up.

    After a warm-up run, a 1-event run measures set-up + one event (t1); the n-event run takes
    tn; the steady rate
    is (n - 1) / (tn - t1). (Pythia produces events in batches, so timing from the first
    yielded event would not separate the set-up.)
    """
    from mlpf_tf.data.generate import generate_events

    def timed(n: int) -> tuple[float, int]:
        start = time.perf_counter()
        elements = sum(ev.X.shape[0] for ev in generate_events(process, n, seed=seed,
                                                               pileup=pileup))
        return time.perf_counter() - start, elements

    timed(1)  # warm-up: file caches of the generator's set-up (Pythia reads its XML data)
    t1, _ = timed(1)
    tn, elements = timed(n_events)
    steady = tn - t1
    rate = (n_events - 1) / steady if n_events > 1 and steady > 0 else n_events / tn
    return {"events_per_s": rate, "elements_per_event": elements / n_events,
            "setup_s": max(0.0, t1 - tn / n_events), "seconds": tn}


def random_events(rng: np.random.Generator, n_events: int, size: int):
    """Schema-valid events of size/2..size elements (content irrelevant for throughput)."""
    from mlpf_tf.data import schema

    for _ in range(n_events):
        n = int(rng.integers(max(1, size // 2), size + 1))
        X = rng.normal(size=(n, schema.NUM_FEATURES)).astype(np.float32)
        X[:, schema.F_TYPE] = rng.integers(1, 3, n)
        y = rng.normal(size=(n, schema.NUM_TARGETS)).astype(np.float32)
        y[:, schema.T_CLS] = rng.integers(0, schema.NUM_CLASSES, n)
        yield schema.Event(X, y, y.copy())


def time_pipeline(size: int, n_events: int, workdir: str, *, batch_size: int = 8,
                  epochs: int = 2, seed: int = 0) -> dict:
    """Build a delphes_pf dataset of ``n_events`` events and time the pipeline over it."""
    from mlpf_tf.data import datasets
    from mlpf_tf.data.config import DataConfig
    from mlpf_tf.data.delphes_reader import write_delphes_file
    from mlpf_tf.data.pipeline import build_pipeline

    rng = np.random.default_rng(seed + size)
    manual = os.path.join(workdir, f"manual_{size}")
    write_delphes_file(os.path.join(manual, "tev14_pythia8_ttbar_0_0.pkl.bz2"),
                       random_events(rng, n_events, size), strip=False)
    cfg = DataConfig(dataset="delphes_pf", config="default", manual_dir=manual,
                     data_dir=os.path.join(workdir, f"tfds_{size}"), max_elements=size,
                     padding="fixed", shuffle_buffer=min(n_events, 256))
    start = time.perf_counter()
    datasets.prepare_dataset(cfg)
    build_s = time.perf_counter() - start
    ds = build_pipeline(cfg, "train", batch_size, seed=seed)
    for _ in ds:  # warm-up epoch: tracing, file caches
        pass
    events = nbytes = 0
    slow = slowdown.fraction()  # the nightly suite's test switch (0: none)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(epochs):
        step_cpu = time.process_time()
        for X, y, w in ds:
            events += int(X.shape[0])
            nbytes += (int(np.prod(X.shape)) + int(np.prod(y.shape)) + int(np.prod(w.shape))) * 4
        slowdown.pad(time.process_time() - step_cpu, slow)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu
    return {"events": n_events, "build_events_per_s": n_events / build_s,
            "events_per_s": events / seconds, "mb_per_s": nbytes / seconds / 1e6,
            "events_per_cpu_s": events / cpu_seconds}


def nightly_pipeline_throughput() -> float:
    """Pipeline events per CPU-second for the nightly suite: 128 events of 512..1024 elements,
    batch 8 (CPU time of the process: steady when another job shares the machine)."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    with tempfile.TemporaryDirectory(prefix="mlpf-nightly-pipeline-") as workdir:
        return time_pipeline(1024, 128, workdir, batch_size=8, epochs=3)["events_per_cpu_s"]


def main(argv) -> None:
    del argv
    import tensorflow as tf
    import tensorflow_datasets as tfds
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    tfds.disable_progress_bar()
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    try:
        sizes = [int(s) for s in FLAGS.sizes]
    except ValueError:
        raise app.UsageError(f"--sizes={','.join(FLAGS.sizes)}: expected integers") from None
    if any(s < 1 for s in sizes):
        raise app.UsageError(f"--sizes={','.join(FLAGS.sizes)}: sizes must be >= 1")

    print(f"threads: intra-op {FLAGS.threads}, inter-op 1")
    print("== event generation ==")
    for label, process, n, pileup in (("gun", "gun", FLAGS.gun_events, 0.0),
                                      ("ttbar pu0", "ttbar", FLAGS.ttbar_events, 0.0),
                                      (f"ttbar pu{FLAGS.pileup:g}", "ttbar",
                                       FLAGS.pileup_events, FLAGS.pileup)):
        if n:
            r = time_generation(process, n, pileup, FLAGS.seed)
            print(f"{label:>12}: {r['events_per_s']:9.1f} events/s  "
                  f"({n} events, {r['elements_per_event']:.0f} elements/event; set-up "
                  f"~{r['setup_s']:.2f} s, total {r['seconds']:.1f} s)",
                  flush=True)

    print(f"== input pipeline (fixed padding, batch {FLAGS.batch_size}, "
          f"{FLAGS.epochs} timed epochs) ==")
    with tempfile.TemporaryDirectory(prefix="mlpf-data-throughput-") as workdir:
        for size in sizes:
            n_events = max(FLAGS.batch_size, FLAGS.pipeline_elements // size)
            r = time_pipeline(size, n_events, workdir, batch_size=FLAGS.batch_size,
                              epochs=FLAGS.epochs, seed=FLAGS.seed)
            print(f"max_elements {size:>5}: {r['events_per_s']:9.1f} events/s  "
                  f"{r['mb_per_s']:8.1f} MB/s  ({r['events']} events; TFDS build "
                  f"{r['build_events_per_s']:.1f} events/s)", flush=True)


def run() -> None:
    """Console entry point ``mlpf-data-throughput``."""
    define_flags_once()
    app.run(main)


if __name__ == "__main__":
    run()
