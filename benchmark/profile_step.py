"""Where the MLPF training step spends its time: TensorFlow profiler op statistics.

    python -m benchmark.profile_step [--preset=reference --elements=1024 --bin_size=128
                                      --batch_size=5 --threads=1 --steps=3
                                      --set=recompute=true,...]

Builds the model of a :mod:`benchmark.throughput` preset (``--set`` overrides ModelConfig
fields), runs the Keras training function twice to trace it, then records ``--steps`` steps
with ``tf.profiler.experimental`` and reads the executed TensorFlow ops back from the
profile (``*.xplane.pb``). Every op is attributed to

* a phase: ``forward`` (ops of the model's forward pass), ``backward`` (ops under
  ``gradient_tape/``), ``optimizer`` (the optimizer's update), ``metrics`` (loss and accuracy
  trackers) or ``other``;
* a component: the model's top-level layer (``encoding``, ``cg_common0``, ..., ``heads``) and,
  inside a graph layer, the part (its name scope): ``ffn_dist``, ``lsh_sort`` (bucket scores,
  argsort), ``to_bins`` / ``from_bins`` (the permutation gathers), ``adjacency`` (the
  N x bin_size kernel), ``message<i>``, ``layernorm``.

It prints milliseconds per step per phase, per component and phase, and the op types that
take the most time, plus the process's peak RSS. Times are op self-times as the profiler saw
them on one intra-op thread (``--threads``); with more threads ops overlap and the sum exceeds
the wall time.
"""

from __future__ import annotations

import collections
import glob
import os
import re
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS

#: scopes of a graph layer's parts (mlpf_tf/model/layers.py CombinedGraphLayer.call)
GRAPH_PARTS = ("ffn_dist", "lsh_sort", "to_bins", "adjacency", "from_bins", "layernorm",
               "dropout")


def define_flags_once() -> None:
    if "profile_preset" in FLAGS:
        return
    flags.DEFINE_string("profile_preset", "reference", "model preset of benchmark.throughput")
    flags.DEFINE_integer("elements", 1024, "elements per event", lower_bound=1)
    flags.DEFINE_integer("bin_size", 128, "LSH bin size", lower_bound=2)
    flags.DEFINE_integer("batch_size", 5, "events per batch", lower_bound=1)
    flags.DEFINE_integer("threads", 1, "TensorFlow intra-op threads (inter-op: 1)", lower_bound=1)
    flags.DEFINE_integer("steps", 3, "profiled training steps", lower_bound=1)
    flags.DEFINE_list("set", [], "ModelConfig overrides field=value, e.g. recompute=true")
    flags.DEFINE_integer("top", 15, "op types listed", lower_bound=1)


def phase_of(name: str) -> str:
    if name.startswith("gradient_tape/"):
        return "backward"
    if name.startswith(("Adam/", "SGD/", "Adam", "LossScaleOptimizer")):
        return "optimizer"
    if "/mlpf/" in f"/{name}" or name.startswith("mlpf"):
        return "forward"
    if re.match(r"^(mean|accuracy|particle_accuracy|loss|\w+_loss)(_\d+)?/", name) or \
            "update_state" in name or "batch_class_counts" in name:
        return "metrics"
    return "other"


def component_of(name: str) -> str:
    """Top-level layer of the model (and the part of a graph layer) an op belongs to."""
    m = re.search(r"mlpf/([A-Za-z_]+\d*)/(?:([A-Za-z_]+\d*)/)?", name)
    if not m:
        return "loss/other" if phase_of(name) in ("forward", "backward") else "-"
    layer, part = m.group(1), m.group(2) or ""
    if not layer.startswith("cg_"):
        return layer
    if part in GRAPH_PARTS or part.startswith("message"):
        return f"{layer}/{part}"
    return f"{layer}/rest"


def op_events(logdir: str):
    """(op name "scope/op:Type", microseconds) of every TensorFlow op in the profile."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))
    if not files:
        raise RuntimeError(f"no *.xplane.pb under {logdir}: the profiler wrote nothing")
    space = xplane_pb2.XSpace()
    with open(files[-1], "rb") as fh:
        space.ParseFromString(fh.read())
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        meta = plane.event_metadata
        for line in plane.lines:
            if not line.name.startswith("tf_Compute") and not line.name.startswith("tf_"):
                continue
            for ev in line.events:
                name = meta[ev.metadata_id].name
                if ":" in name and not name.startswith(("ExecutorState", "Iterator")):
                    yield name, ev.duration_ps / 1e6


def summarise(events, steps: int, top: int) -> list[str]:
    by_phase = collections.Counter()
    by_comp = collections.Counter()
    by_type = collections.Counter()
    for name, us in events:
        phase = phase_of(name)
        by_phase[phase] += us
        by_comp[(component_of(name), phase)] += us
        by_type[(name.rsplit(":", 1)[-1], phase)] += us
    total = sum(by_phase.values())
    lines = [f"total op time {total / steps / 1e3:9.1f} ms/step"]
    lines.append("-- by phase (ms/step, % of op time) --")
    for phase, us in by_phase.most_common():
        lines.append(f"{phase:>10}: {us / steps / 1e3:9.1f}  {100 * us / total:5.1f}%")
    lines.append("-- by component: forward / backward ms/step --")
    comps = sorted({c for c, _ in by_comp}, key=lambda c: -sum(
        by_comp[(c, p)] for p in ("forward", "backward")))
    for comp in comps:
        f, b = by_comp[(comp, "forward")], by_comp[(comp, "backward")]
        if f + b == 0:
            continue
        lines.append(f"{comp:>24}: {f / steps / 1e3:8.1f} / {b / steps / 1e3:8.1f}  "
                     f"({100 * (f + b) / total:4.1f}%)")
    lines.append(f"-- top {top} op types (ms/step, phase) --")
    for (op, phase), us in by_type.most_common(top):
        lines.append(f"{op:>24} {phase:>9}: {us / steps / 1e3:8.1f}  {100 * us / total:5.1f}%")
    return lines


def _main(argv) -> None:
    del argv
    from benchmark.throughput import PRESETS, parse_overrides

    if FLAGS.profile_preset not in PRESETS:
        raise app.UsageError(f"--profile_preset={FLAGS.profile_preset}: unknown; known: "
                             f"{', '.join(PRESETS)}")
    overrides = parse_overrides(FLAGS.set)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from benchmark.throughput import (
        _set_threads,
        build_compiled,
        model_config,
        peak_rss_mb,
        synthetic_batch,
    )

    _set_threads(FLAGS.threads)
    cfg = model_config(FLAGS.profile_preset, bin_size=FLAGS.bin_size, **overrides)
    model = build_compiled(cfg, 1)
    batch = synthetic_batch(FLAGS.batch_size, FLAGS.elements, 1)
    train_fn = model.make_train_function()
    it = iter(tf.data.Dataset.from_tensors(batch).repeat())
    start = time.perf_counter()
    float(train_fn(it)["loss"])
    first = time.perf_counter() - start
    start = time.perf_counter()
    float(train_fn(it)["loss"])
    second = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(FLAGS.steps):
            float(train_fn(it)["loss"])
        wall = (time.perf_counter() - start) / FLAGS.steps
        tf.profiler.experimental.stop()
        events = list(op_events(logdir))
    print(f"preset {FLAGS.profile_preset} {overrides or ''} N={FLAGS.elements} "
          f"bin={FLAGS.bin_size} B={FLAGS.batch_size} threads={FLAGS.threads}: first step "
          f"{first:.1f} s, second {second:.2f} s, profiled {wall:.2f} s/step; peak RSS "
          f"{peak_rss_mb():.0f} MB")
    for line in summarise(events, FLAGS.steps, FLAGS.top):
        print(line)


def run() -> None:
    from benchmark.throughput import one_line_usage_errors

    define_flags_once()
    app.run(one_line_usage_errors("benchmark.profile_step", _main))


if __name__ == "__main__":
    run()
