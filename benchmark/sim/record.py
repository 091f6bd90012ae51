"""Record real MLPF learning curves into the table that ``benchmark.sim.replay --curves`` replays.

Configurations are drawn at random (seeded) from a search space of :mod:`tuners.space`; each
is trained from scratch with :func:`mlpf_tf.train.train` for ``--epochs`` epochs on the data,
model and training sections of a registered experiment (default ``curves``, what the shipped
table ``benchmark/sim/data/curves_mlpf.csv.gz`` is recorded on: Pythia ttbar events padded to
512 elements, the reference MLPF with its widths divided by 8, the reference's Delphes
training for the presets' 100 epochs; about a minute per configuration on one core). After each
epoch the validation loss and the epoch's wall seconds are kept; after each configuration the
whole table is rewritten atomically (format in :mod:`benchmark.sim.curves`), so an interrupted
recording keeps what it finished and a rerun with the same flags skips the configurations
already complete (``config_id`` = ``c<index>``; index i is always the i-th draw of the seed).

A configuration whose loss becomes non-finite, whose training gives no validation loss, or
whose values the model rejects, is reported and left out (the table holds finite losses only).
By default (``--isolate``) each configuration trains in a fresh child process, so no
TensorFlow or data-pipeline state carries over from one training to the next.

Per configuration the table holds, besides the per-epoch validation loss and train seconds:
``setup_seconds`` (wall time of the training call outside its epochs -- model build, input
pipeline, optimizer; the dataset itself is built once before any clock runs -- plus the first epoch's excess over the median later epoch, i.e. tracing, which is
taken out of epoch 1's seconds), ``restore_seconds`` (that setup plus a measured checkpoint
load of the trained weights: what a promoted trial pays), ``peak_memory_mb`` (the process's
peak resident memory; per configuration with ``--isolate``) and ``params``.

Splitting and resuming: ``--shard=i/n`` records the configurations whose index is i modulo n
(each shard to its own ``--output``; rerunning a shard resumes it). The file's first line is a
header (``# mlpf-curve-table <json>``) with the data, model and train sections, space, seed,
counts, code version and command; a resumed shard must agree with it.
``--merge=a,b,...`` checks that the shards agree on all of that (the command aside) and cover
1/n .. n/n once, and writes the merged table (compressed when ``--output`` ends in ``.gz``)
with a manifest beside it (``<name>.manifest.json``: size, configurations, epochs, command,
code version, Spearman rank correlation of the epoch-k loss with the final loss for
k = 1, 3, 9, 27, median setup and epoch seconds, total recorded seconds). An unsharded
recording writes its manifest when it is complete.

    python -m benchmark.sim.record --experiment=curves --space=reduced --configs=256 \
        --epochs=100 --threads=1 --output=runs/curves_mlpf.csv.gz
    python -m benchmark.sim.record ... --shard=0/2 --output=runs/t0.csv   # machine A
    python -m benchmark.sim.record ... --shard=1/2 --output=runs/t1.csv   # machine B
    python -m benchmark.sim.record --merge=runs/t0.csv,runs/t1.csv --output=runs/t.csv.gz
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from absl import app, flags

from benchmark.sim.curves import (
    TABLE_COLUMNS,
    CurveError,
    configuration,
    table_frame,
    write_curves,
)

FLAGS = flags.FLAGS

#: header fields every shard of one table must agree on
AGREE_KEYS = ("experiment", "space", "seed", "configs", "epochs", "data", "model", "train",
              "code_version")
#: epochs whose loss ranks are compared with the final loss's in the manifest
SPEARMAN_EPOCHS = (1, 3, 9, 27)


def code_version() -> str:
    """``git describe --always --dirty`` of the code's checkout ("unknown" outside git)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "-C", here, "describe", "--always", "--dirty"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"


def table_header(config, experiment: str, space_name: str, seed: int, configs: int,
                 epochs: int, shard: tuple[int, int] = (0, 1),
                 command: str | None = None) -> dict[str, Any]:
    """What a table was recorded on (see the module docstring); paths are left out of data."""
    data = {k: v for k, v in config.data.to_dict().items() if not k.endswith("_dir")}
    train = {k: v for k, v in config.train.to_dict().items() if k != "num_threads"}
    return {"experiment": experiment, "space": space_name, "seed": seed, "configs": configs,
            "epochs": epochs, "data": data, "model": config.model.to_dict(), "train": train,
            "code_version": code_version(), "shard": f"{shard[0]}/{shard[1]}",
            "command": command if command is not None else " ".join(sys.argv)}


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` -> (i, n) with 0 <= i < n; a clear error otherwise."""
    try:
        i, n = (int(x) for x in str(text).split("/"))
    except ValueError:
        raise CurveError(f"--shard={text}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise CurveError(f"--shard={text}: need 0 <= i < n")
    return i, n


def _disagreement(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    for key in AGREE_KEYS:
        if a.get(key) != b.get(key):
            return key
    return None


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
    total = time.perf_counter() - start
    missing = [i + 1 for i, h in enumerate(result.history) if "val_loss" not in h]
    if missing:
        raise CurveError(f"{config_id}: training gave no val_loss after epoch(s) {missing[:5]} "
                         "(the validation split produced no result)")
    losses = [float(h["val_loss"]) for h in result.history]
    seconds = [float(s) for s in (getattr(result, "epoch_seconds", None) or [])]
    if len(seconds) != len(losses):  # fall back to our own clock around each epoch
        seconds = [b - a for a, b in zip([start, *stamps], stamps)]
    # setup: the call's time outside its epochs (build, data, optimizer) plus the first
    # epoch's excess over the later ones (tracing), which epoch 1 then no longer carries
    outside = max(0.0, total - sum(seconds))
    trace = max(0.0, seconds[0] - float(np.median(seconds[1:]))) if len(seconds) > 1 else 0.0
    seconds[0] -= trace
    setup = outside + trace
    trained = getattr(result, "model", None)
    restore = setup + checkpoint_load_seconds(trained)
    params = int(trained.count_params()) if trained is not None else 0
    rows = []
    for epoch, (loss, wall) in enumerate(zip(losses, seconds), start=1):
        rows.append({"config_id": config_id, **configuration(values), "epoch": epoch,
                     "val_loss": loss, "epoch_seconds": float(wall), "setup_seconds": setup,
                     "restore_seconds": restore, "peak_memory_mb": peak_memory_mb(),
                     "params": params})
    return rows


def checkpoint_load_seconds(model) -> float:
    """Seconds to load a trained model's weights back from a checkpoint (0 without a model)."""
    import tempfile

    if model is None or not hasattr(model, "save_weights"):
        return 0.0
    with tempfile.TemporaryDirectory(prefix="restore-probe-") as tmp:
        path = os.path.join(tmp, "ckpt")
        model.save_weights(path)
        t0 = time.perf_counter()
        model.load_weights(path)
        return time.perf_counter() - t0


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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


def existing_rows(path: str, header: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows already recorded at ``path`` (none if it does not exist); with ``header``, the
    file's header must agree with it (same data, model, code version, shard, ...)."""
    if not os.path.exists(path):
        return []
    from benchmark.sim.curves import load_curves

    load_curves(path)  # validates; raises CurveError naming the file
    found, frame = table_frame(path)
    if header is not None:
        key = _disagreement(found, header) or (
            "shard" if found.get("shard", "0/1") != header.get("shard", "0/1") else None)
        if key:
            raise CurveError(f"{path}: recorded with another {key} ({found.get(key)!r}, now "
                             f"{header.get(key)!r}); resume with the same settings or write "
                             "to another --output")
    return frame.to_dict("records")


def record(experiment: str, space_name: str, configs: int, epochs: int, seed: int,
           output: str, threads: int = 2, train_fn=None, log=print,
           isolate: bool = False, jobs: int = 1, shard: tuple[int, int] = (0, 1),
           overrides: dict[str, dict[str, Any]] | None = None,
           command: str | None = None) -> list[dict[str, Any]]:
    """Record ``configs`` curves of ``epochs`` epochs into ``output``; returns all rows.

    ``isolate`` trains every configuration in its own process (see :func:`record_in_child`);
    ``jobs`` > 1 runs that many such processes at once (each with ``threads`` intra-op
    threads). This process alone writes the table, after every finished configuration.
    ``shard`` (i, n) records only the configurations whose index is i modulo n.
    ``overrides`` (in-process recording only) replace the experiment's config sections, e.g.
    :func:`benchmark.experiments.tiny_overrides` in tests. A complete unsharded table gets its
    manifest (:func:`write_manifest`).
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
    if overrides is not None and isolate:
        raise CurveError("overrides apply to in-process recording only (isolate=False)")
    index_of_shard, shards = shard
    config = Config(experiment=experiment).override(
        overrides if overrides is not None else experiments.get(experiment).overrides)
    config.train = config.train.replace(num_threads=threads)
    config.validate()
    header = table_header(config, experiment, space_name, seed, configs, epochs, shard,
                          command)
    rows = existing_rows(output, header)
    if train_fn is None:
        # build the dataset once, before any clock runs: a trial of a search finds it built,
        # so its generation is not part of any configuration's setup seconds
        from mlpf_tf.data.datasets import prepare_dataset

        prepare_dataset(config.data)
    done = {}
    for row in rows:
        done[row["config_id"]] = max(done.get(row["config_id"], 0), int(row["epoch"]))
    space = build_space(space_name)
    pending = []
    for index, values in enumerate(sample_configurations(space, configs, seed)):
        config_id = f"c{index:03d}"
        if index % shards != index_of_shard:
            continue
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
            write_curves(output, rows, header)
            log(f"{progress}: {len(new)} epochs in {seconds:.1f} s, val_loss "
                f"{new[0]['val_loss']:.4f} -> {new[-1]['val_loss']:.4f}")
    if not rows:
        raise CurveError(f"{output}: no configuration could be recorded")
    recorded = {r["config_id"] for r in rows}
    if shards == 1 and len(recorded) == configs:
        write_manifest(output, rows, header)
    return rows


def manifest_path(table: str) -> str:
    """``<table without .gz and .csv>.manifest.json``."""
    base = table[:-3] if table.endswith(".gz") else table
    base = base[:-4] if base.endswith(".csv") else base
    return base + ".manifest.json"


def table_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Configurations, epochs, Spearman correlations of epoch-k with final loss, medians."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    per_config = frame.groupby("config_id")
    epochs = int(per_config["epoch"].max().min())
    losses = frame.pivot(index="config_id", columns="epoch", values="val_loss")
    final = losses[epochs]
    spearman = {}
    for k in SPEARMAN_EPOCHS:
        if k < epochs and len(losses) > 2:
            spearman[str(k)] = round(float(losses[k].rank().corr(final.rank())), 4)
    first = per_config.first()

    def median(column):
        return float(first[column].median()) if column in first else None

    return {"configurations": int(len(losses)), "epochs": epochs,
            "spearman_vs_final": spearman,
            "median_epoch_seconds": float(frame["epoch_seconds"].median()),
            "median_setup_seconds": median("setup_seconds"),
            "median_restore_seconds": median("restore_seconds"),
            "max_peak_memory_mb": (float(first["peak_memory_mb"].max())
                                   if "peak_memory_mb" in first else None),
            "median_params": median("params"),
            "recorded_seconds": float(frame["epoch_seconds"].sum()
                                      + (first["setup_seconds"].sum()
                                         if "setup_seconds" in first else 0.0))}


def write_manifest(table: str, rows: list[dict[str, Any]], header: dict[str, Any]) -> dict:
    """Write the table's manifest (module docstring) atomically beside it; returns it."""
    from mlpf_tf.configbase import atomic_write_text

    manifest = {"table": os.path.basename(table), "size_bytes": os.path.getsize(table),
                **table_summary(rows), "command": header.get("command"),
                "code_version": header.get("code_version"),
                "experiment": header.get("experiment"), "space": header.get("space"),
                "seed": header.get("seed")}
    atomic_write_text(manifest_path(table), json.dumps(manifest, indent=1) + "\n")
    return manifest


def merge(shard_paths: Sequence[str], output: str, log=print) -> dict[str, Any]:
    """Merge shard tables into ``output`` after checking they belong together; the manifest."""
    if not shard_paths:
        raise CurveError("--merge: no shard tables given")
    headers, frames = [], []
    for path in shard_paths:
        if not os.path.isfile(path):
            raise CurveError(f"--merge: {path}: no such file")
        header, frame = table_frame(path)
        if not header:
            raise CurveError(f"--merge: {path}: no table header (not written by this recorder)")
        headers.append(header)
        frames.append(frame)
    first = headers[0]
    for path, header in zip(shard_paths[1:], headers[1:]):
        key = _disagreement(first, header)
        if key:
            raise CurveError(f"--merge: {path} disagrees with {shard_paths[0]} on {key} "
                             f"({header.get(key)!r} vs {first.get(key)!r})")
    shards = [parse_shard(h.get("shard", "0/1")) for h in headers]
    n = shards[0][1]
    if sorted(shards) != [(i, n) for i in range(n)]:
        raise CurveError(f"--merge: shards {', '.join(h.get('shard', '?') for h in headers)} "
                         f"do not cover 0/{n} .. {n - 1}/{n} exactly once")
    rows: list[dict[str, Any]] = []
    for frame in frames:
        rows += frame.to_dict("records")
    rows.sort(key=lambda r: (r["config_id"], int(r["epoch"])))
    header = {**first, "shard": "0/1",
              "command": " ; ".join(h.get("command", "") for h in headers)}
    write_curves(output, rows, header)
    from benchmark.sim.curves import load_curves

    load_curves(output)  # the merged table must read back as a valid table
    manifest = write_manifest(output, rows, header)
    log(f"{output}: {manifest['configurations']} configurations x {manifest['epochs']} epochs "
        f"from {len(shard_paths)} shards; manifest {manifest_path(output)}")
    return manifest


def define_flags() -> None:
    if "configs" in FLAGS:
        return
    flags.DEFINE_string("experiment", "curves", "registered experiment giving data/model/train")
    flags.DEFINE_string("space", "reduced", "search space the configurations come from")
    flags.DEFINE_integer("configs", 256, "configurations to record", lower_bound=1)
    flags.DEFINE_integer("epochs", 100, "epochs per configuration", lower_bound=1)
    flags.DEFINE_integer("seed", 1, "seed of the configuration draws")
    flags.DEFINE_integer("threads", 1, "TensorFlow intra-op threads")
    flags.DEFINE_string("output", "runs/curves_mlpf.csv.gz", "table to write (CSV, or "
                        "compressed CSV when it ends in .gz)")
    flags.DEFINE_boolean("isolate", True, "train each configuration in its own process")
    flags.DEFINE_integer("jobs", 1, "configurations trained at once (processes; needs "
                         "--isolate); give each --threads=cores/jobs", lower_bound=1)
    flags.DEFINE_string("shard", "0/1", "record the configurations whose index is i mod n")
    flags.DEFINE_list("merge", [], "shard tables to check and merge into --output")
    flags.DEFINE_integer("index", -1, "internal: record only this configuration (child mode)")
    flags.DEFINE_string("rows_out", "", "internal: where child mode writes its rows (JSON)")


def main(argv: Sequence[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        shard = parse_shard(FLAGS.shard)
        if FLAGS.merge:
            merge(FLAGS.merge, FLAGS.output)
            return
    except CurveError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    if FLAGS.index >= 0:
        child_main()
        return
    from benchmark.experiments import UnknownExperiment
    from mlpf_tf.configbase import ConfigError

    t0 = time.perf_counter()
    try:
        rows = record(FLAGS.experiment, FLAGS.space, FLAGS.configs, FLAGS.epochs, FLAGS.seed,
                      FLAGS.output, threads=FLAGS.threads, isolate=FLAGS.isolate,
                      jobs=FLAGS.jobs, shard=shard)
    except (CurveError, ConfigError, UnknownExperiment, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"recording took {time.perf_counter() - t0:.1f} s wall")
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
