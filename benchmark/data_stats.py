"""Build the configured dataset (default: synthetic ttbar) and report its statistics.

    python -m benchmark.data_stats --output_dir runs/make_run [--data_dir DIR] [--data.<field>=...]

Builds the dataset into the data directory (``--data_dir``, else ``--data.data_dir``, default
``.data/tfds``; a dataset already built there is reused), then prints per split the
statistics of :func:`mlpf_tf.data.stats.event_statistics` (elements per event, class fractions
of ygen and ycand, ...) and writes them with the data config to ``<output_dir>/data_stats.yaml``
(atomically). ``run()`` is the ``mlpf-data-stats`` console entry point.

``--compare_detectors=delphes_cms,optimistic`` also builds the same events through each
detector preset (``optimistic`` with the project's target conventions, ``delphes_cms`` with the
reference's) and prints a Markdown table of one split (``--compare_split``): elements per
event, ygen / ycand class fractions and the ycand efficiency and fake rate per class.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator

import numpy as np
from absl import app, flags

from mlpf_tf.configbase import (
    ConfigError,
    atomic_write_text,
    define_flags,
    dump_yaml,
    section_from_flags,
)
from mlpf_tf.data.config import SPLITS, DataConfig

STATS_FILE = "data_stats.yaml"

FLAGS = flags.FLAGS


def define_flags_once() -> None:
    """Define this program's flags (at run time, so importing the module defines none)."""
    if "output_dir" in FLAGS:
        return
    flags.DEFINE_string("output_dir", "runs/data_stats", "directory for data_stats.yaml")
    flags.DEFINE_string("data_dir", None, "TFDS data directory (overrides --data.data_dir)")
    flags.DEFINE_integer("max_events", 0, "events per split to analyse (0 = all)", lower_bound=0)
    flags.DEFINE_integer("threads", 2, "TensorFlow intra-op threads", lower_bound=1)
    flags.DEFINE_list("compare_detectors", [],
                      "synthetic_pf: also build the dataset with each of these detector presets "
                      "(e.g. delphes_cms,optimistic; each with its own target conventions) and "
                      "print a table of their statistics side by side")
    flags.DEFINE_string("compare_split", "validation", "split the comparison table describes")
    define_flags(DataConfig)


def plain(value):
    """numpy scalars/arrays and tuples -> plain Python values for YAML."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def _events(ds, total: int, split: str) -> Iterator:
    """Events of a split as schema.Event, with a progress line every ~10%."""
    from mlpf_tf.data.schema import Event

    step = max(1, total // 10)
    start = time.monotonic()
    for i, ex in enumerate(ds.as_numpy_iterator(), start=1):
        yield Event(ex["X"], ex["ygen"], ex["ycand"])
        if i % step == 0 or i == total:
            print(f"  {split}: {i}/{total} events read ({time.monotonic() - start:.1f} s)",
                  file=sys.stderr, flush=True)


def collect(cfg: DataConfig, max_events: int = 0) -> dict:
    """Build (if needed) and summarise every split of ``cfg``'s dataset."""
    from mlpf_tf.data import datasets
    from mlpf_tf.data.stats import event_statistics

    start = time.monotonic()
    builder = datasets.prepare_dataset(cfg)
    build_s = time.monotonic() - start
    out = {"dataset": f"{cfg.dataset}/{builder.builder_config.name}",
           "data_dir": str(builder.data_dir), "prepare_seconds": round(build_s, 2),
           "data": cfg.to_dict(), "splits": {}}
    for split in SPLITS:
        if split not in builder.info.splits:
            continue
        total = builder.info.splits[split].num_examples
        ds = datasets.load_split(cfg, split, prepare=False)
        if max_events:
            ds, total = ds.take(max_events), min(total, max_events)
        out["splits"][split] = {"events": total,
                                "stats": plain(event_statistics(_events(ds, total, split)))}
    return out


def compare_detectors(cfg: DataConfig, presets: list[str], split: str,
                      max_events: int = 0) -> dict:
    """Statistics of ``split`` built with each detector preset; prints the comparison table."""
    from mlpf_tf.data.config import DETECTORS
    from mlpf_tf.data.stats import comparison_table

    if cfg.dataset != "synthetic_pf":
        raise app.UsageError("--compare_detectors applies to --data.dataset=synthetic_pf")
    unknown = [p for p in presets if p not in DETECTORS]
    if unknown:
        raise app.UsageError(f"--compare_detectors: unknown presets {unknown}; known: "
                             f"{', '.join(DETECTORS)}")
    stats = {}
    for preset in presets:
        targets = "project" if preset == "optimistic" else "reference"
        entry = collect(cfg.replace(detector=preset, targets=targets), max_events)
        if split not in entry["splits"]:
            raise app.UsageError(f"--compare_split={split!r}: not a split of {entry['dataset']}")
        stats[preset] = entry["splits"][split]["stats"]
    print(f"\n{cfg.config} {split} split, per detector preset:")
    print(comparison_table(stats))
    return stats


def _print(summary: dict) -> None:
    from mlpf_tf.data.stats import format_statistics

    print(f"dataset {summary['dataset']} in {summary['data_dir']} "
          f"(prepared in {summary['prepare_seconds']} s)")
    for split, entry in summary["splits"].items():
        print(f"[{split}]")
        for line in format_statistics(entry["stats"]).splitlines():
            print(f"  {line}")


def main(argv) -> None:
    del argv
    import tensorflow as tf
    from absl import logging

    logging.set_verbosity(logging.WARNING)
    tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    try:
        cfg = section_from_flags(DataConfig)
        if FLAGS.data_dir:
            cfg = cfg.replace(data_dir=FLAGS.data_dir)
        cfg.validate()
    except ConfigError as exc:
        raise app.UsageError(str(exc)) from None
    summary = collect(cfg, FLAGS.max_events)
    _print(summary)
    if FLAGS.compare_detectors:
        summary["comparison"] = compare_detectors(cfg, FLAGS.compare_detectors,
                                                  FLAGS.compare_split, FLAGS.max_events)
    path = os.path.join(FLAGS.output_dir, STATS_FILE)
    atomic_write_text(path, dump_yaml(summary))
    print(f"wrote {path}")


def run() -> None:
    """Console entry point ``mlpf-data-stats``."""
    define_flags_once()
    app.run(main)


if __name__ == "__main__":
    run()
