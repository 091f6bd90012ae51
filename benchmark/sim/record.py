"""Record real MLPF learning curves into the table that ``benchmark.sim.replay --curves`` replays.

Configurations are drawn at random (seeded) from a search space of :mod:`tuners.space`; each
is trained from scratch with :func:`mlpf_tf.train.train` for ``--epochs`` epochs on the data,
model and training sections of a registered experiment (default ``smoke``: synthetic events and
a reduced graph network, so a configuration takes seconds to minutes on two cores). After each
epoch the validation loss and the epoch's wall seconds are kept; after each configuration the
whole table is rewritten atomically (format in :mod:`benchmark.sim.curves`), so an interrupted
recording keeps what it finished and a rerun with the same flags skips the configurations
already complete (``config_id`` = ``c<index>``; index i is always the i-th draw of the seed).

A configuration whose loss becomes non-finite, whose training gives no validation loss, or
whose values the model rejects, is reported and left out (the table holds finite losses only).
By default (``--isolate``) each configuration trains in a fresh child process, so no
TensorFlow or data-pipeline state carries over from one training to the next.

    python -m benchmark.sim.record --experiment=smoke --space=reduced --configs=256 \
        --epochs=30 --jobs=2 --threads=1 --output=benchmark/sim/data/curves_synthetic.csv
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Sequence
from typing import Any

from absl import app, flags

from benchmark.sim.curves import TABLE_COLUMNS, CurveError, configuration, write_curves

FLAGS = flags.FLAGS


def sample_configurations(space, count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` configurations drawn from ``space``; the i-th draw depends on (seed, i) only."""
    out = []
    for index in range(count):
        rng = random.Random(f"{seed}-{index}")
        out.append({hp.name: hp.random_sample(rng.randrange(2**31)) for hp in space.space})
    return out


def record_configuration(config_id: str, values: dict[str, Any], data_cfg, model_cfg,
                         train_cfg, epochs: int, train_fn=None) -> list[dict[str, Any]]:
    """Train one configuration; table rows (one per epoch) of its curve."""
    from mlpf_tf import distributed
    from tuners.hypermodel import apply_values

    if train_fn is None:
        from mlpf_tf.train import train as train_fn
    model, train = apply_values(values, model_cfg, train_cfg)
    stamps: list[float] = []
    start = time.perf_counter()

    def on_epoch_end(epoch_index: int, logs: dict[str, float]) -> None:
        stamps.append(time.perf_counter())

    result = train_fn(data_cfg, model, train, run_dir=None, initial_epoch=0, epochs=epochs,
                      context=distributed.LOCAL, on_epoch_end=on_epoch_end)
    missing = [i + 1 for i, h in enumerate(result.history) if "val_loss" not in h]
    if missing:
        raise CurveError(f"{config_id}: training gave no val_loss after epoch(s) {missing[:5]} "
                         "(the validation split produced no result)")
    losses = [float(h["val_loss"]) for h in result.history]
    seconds = list(getattr(result, "epoch_seconds", None) or [])
    if len(seconds) != len(losses):  # fall back to our own clock around each epoch
        seconds = [b - a for a, b in zip([start, *stamps], stamps)]
    rows = []
    for epoch, (loss, wall) in enumerate(zip(losses, seconds), start=1):
        rows.append({"config_id": config_id, **configuration(values), "epoch": epoch,
                     "val_loss": loss, "epoch_seconds": float(wall)})
    return rows


def record_in_child(index: int, experiment: str, space_name: str, configs: int, epochs: int,
                    seed: int, threads: int) -> list[dict[str, Any]]:
    """Record configuration ``index`` in a fresh Python process (no state shared between the
    trainings of different configurations); raises CurveError with the child's last words."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "rows.json")
        cmd = [sys.executable, "-m", "benchmark.sim.record", f"--experiment={experiment}",
               f"--space={space_name}", f"--configs={configs}", f"--epochs={epochs}",
               f"--seed={seed}", f"--threads={threads}", f"--index={index}",
               f"--rows_out={out}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not os.path.exists(out):
            lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
            raise CurveError(lines[-1] if lines else f"exit code {proc.returncode}")
        with open(out) as fh:
            return json.load(fh)


def existing_rows(path: str) -> list[dict[str, Any]]:
    """Rows already recorded at ``path`` (none if it does not exist)."""
    if not os.path.exists(path):
        return []
    import pandas as pd

    from benchmark.sim.curves import load_curves

    load_curves(path)  # validates; raises CurveError naming the file
    return pd.read_csv(path).to_dict("records")


def record(experiment: str, space_name: str, configs: int, epochs: int, seed: int,
           output: str, threads: int = 2, train_fn=None, log=print,
           isolate: bool = False, jobs: int = 1) -> list[dict[str, Any]]:
    """Record ``configs`` curves of ``epochs`` epochs into ``output``; returns all rows.

    ``isolate`` trains every configuration in its own process (see :func:`record_in_child`);
    ``jobs`` > 1 runs that many such processes at once (each with ``threads`` intra-op
    threads). This process alone writes the table, after every finished configuration.
    """
    import math
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from benchmark import experiments
    from benchmark.config import Config
    from tuners.space import build_space

    if configs < 1 or epochs < 1:
        raise CurveError(f"--configs={configs} and --epochs={epochs} must be >= 1")
    if jobs < 1 or (jobs > 1 and not isolate):
        raise CurveError(f"--jobs={jobs}: must be >= 1, and > 1 needs --isolate")
    config = Config(experiment=experiment).override(experiments.get(experiment).overrides)
    config.train = config.train.replace(num_threads=threads)
    config.validate()
    rows = existing_rows(output)
    done = {}
    for row in rows:
        done[row["config_id"]] = max(done.get(row["config_id"], 0), int(row["epoch"]))
    space = build_space(space_name)
    pending = []
    for index, values in enumerate(sample_configurations(space, configs, seed)):
        config_id = f"c{index:03d}"
        if done.get(config_id, 0) >= epochs:
            log(f"{config_id}: already recorded")
        else:
            pending.append((index, config_id, values))

    def one(index: int, config_id: str, values: dict[str, Any]):
        t0 = time.perf_counter()
        if isolate:
            new = record_in_child(index, experiment, space_name, configs, epochs, seed,
                                  threads)
        else:
            new = record_configuration(config_id, values, config.data, config.model,
                                       config.train, epochs, train_fn=train_fn)
        return new, time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(one, *item): item[1] for item in pending}
        for finished, future in enumerate(as_completed(futures), start=1):
            config_id = futures[future]
            progress = f"[{finished}/{len(pending)}] {config_id}"
            try:
                new, seconds = future.result()
            except Exception as exc:  # a failing configuration is left out, the rest go on
                log(f"{progress}: left out ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''})")
                continue
            if not new or not all(math.isfinite(r["val_loss"]) for r in new):
                log(f"{progress}: left out (non-finite or no validation loss)")
                continue
            rows = [r for r in rows if r["config_id"] != config_id] + new
            rows.sort(key=lambda r: (r["config_id"], int(r["epoch"])))
            write_curves(output, rows)
            log(f"{progress}: {len(new)} epochs in {seconds:.1f} s, val_loss "
                f"{new[0]['val_loss']:.4f} -> {new[-1]['val_loss']:.4f}")
    if not rows:
        raise CurveError(f"{output}: no configuration could be recorded")
    return rows


def define_flags() -> None:
    if "configs" in FLAGS:
        return
    flags.DEFINE_string("experiment", "smoke", "registered experiment giving data/model/train")
    flags.DEFINE_string("space", "reduced", "search space the configurations come from")
    flags.DEFINE_integer("configs", 24, "configurations to record", lower_bound=1)
    flags.DEFINE_integer("epochs", 12, "epochs per configuration", lower_bound=1)
    flags.DEFINE_integer("seed", 1, "seed of the configuration draws")
    flags.DEFINE_integer("threads", 2, "TensorFlow intra-op threads")
    flags.DEFINE_string("output", "runs/curves_synthetic.csv", "table to write (CSV)")
    flags.DEFINE_boolean("isolate", True, "train each configuration in its own process")
    flags.DEFINE_integer("jobs", 1, "configurations trained at once (processes; needs "
                         "--isolate); give each --threads=cores/jobs", lower_bound=1)
    flags.DEFINE_integer("index", -1, "internal: record only this configuration (child mode)")
    flags.DEFINE_string("rows_out", "", "internal: where child mode writes its rows (JSON)")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    if FLAGS.index >= 0:
        child_main()
        return
    rows = record(FLAGS.experiment, FLAGS.space, FLAGS.configs, FLAGS.epochs, FLAGS.seed,
                  FLAGS.output, threads=FLAGS.threads, isolate=FLAGS.isolate,
                  jobs=FLAGS.jobs)
    n = len({r["config_id"] for r in rows})
    print(f"{FLAGS.output}: {n} configurations, {len(rows)} rows "
          f"(columns: {', '.join(TABLE_COLUMNS)} + hyperparameters)")


def child_main() -> None:
    """Child mode: train configuration ``--index`` and write its rows to ``--rows_out``."""
    import json

    from benchmark import experiments
    from benchmark.config import Config
    from mlpf_tf.configbase import atomic_write_text
    from tuners.space import build_space

    if not FLAGS.rows_out:
        raise app.UsageError("--index needs --rows_out")
    if FLAGS.index >= FLAGS.configs:
        raise app.UsageError(f"--index={FLAGS.index}: must be < --configs={FLAGS.configs}")
    config = Config(experiment=FLAGS.experiment).override(
        experiments.get(FLAGS.experiment).overrides)
    config.train = config.train.replace(num_threads=FLAGS.threads)
    config.validate()
    values = sample_configurations(build_space(FLAGS.space), FLAGS.configs,
                                   FLAGS.seed)[FLAGS.index]
    rows = record_configuration(f"c{FLAGS.index:03d}", values, config.data, config.model,
                                config.train, FLAGS.epochs)
    atomic_write_text(FLAGS.rows_out, json.dumps(rows))


def run() -> None:
    """Console-script entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
