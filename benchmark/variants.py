"""Reference versus improved MLPF: same events, same node-seconds, 3 seeds each.

    python -m benchmark.variants [--seconds=30 --seeds=0,1,2 --n_train=200 --n_validation=50
                                  --n_test=50 --width=64 --threads=1 --output_dir=runs/variants]

Both ``--model.variant`` values train on the same synthetic Pythia ttbar events (the suite's
default data, target ``ygen``), one process and ``--threads`` intra-op threads each, one after
the other, each for ``--seconds`` node-seconds of training steps (CPU seconds of the process,
see :class:`TimeBudget`: the first step, which traces the graph, and the one-batch validation
passes are not counted; the loop stops at the first batch end past the budget). Each variant
trains on its own objective. Then, for every run:

* validation loss under both definitions (:class:`~mlpf_tf.model.losses.MLPFLoss`, the
  improved per-event log1p objective, and :class:`~mlpf_tf.model.losses.ReferenceLoss`, the
  reference GeV objective), with :func:`mlpf_tf.model.evaluate.evaluate`;
* the physics table on the test split -- per-class efficiency and fake rate, pT and energy
  resolution, jet response -- from :func:`tuners.best_model.physics_metrics` (definitions in
  :mod:`reports.physics`), next to the rule-based baseline ``ycand`` on the same events.

Scaled down for a two-core machine (the reference: 45,000 Delphes ttbar events with pileup 200,
padded to 6400 elements, widths 256, 4 GPUs x 100 epochs): 200/50/50 events of ttbar without
pileup padded to 512 elements; both variants at the reference depths (3 + 3 graph layers,
heads 4/2/3 deep for the reference) but widths ``--width`` (graph outputs and heads) and
``--width`` / 2 (distance space and its FFN); bin size 64 (640 scaled by 512 / 6400 to a power of
two); Adam at a constant 1e-3 for both (a budget of seconds is too short for the reference's
1e-4 with decay every 10,000 steps); batch 4 events.

Prints one table (mean and std over seeds) and writes ``variants.json`` (every run) and
``variants.csv`` (the table) atomically into ``--output_dir``.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from typing import Any

from absl import app, flags

FLAGS = flags.FLAGS
VARIANTS = ("reference", "improved")
#: physics.json class key -> short column label
CLASS_NAMES = {"charged_hadron": "ch.had", "neutral_hadron": "n.had", "photon": "photon",
               "electron": "electron", "muon": "muon"}
RESOLUTION_CLASSES = ("charged_hadron", "neutral_hadron", "photon")


def define_flags_once() -> None:
    """Define this program's flags at run time (importing the module defines none)."""
    if "seconds" in FLAGS:
        return
    flags.DEFINE_float("seconds", 30.0, "node-seconds (CPU seconds of one thread) of training "
                       "steps per run, the same for every run", lower_bound=1.0)
    flags.DEFINE_list("seeds", ["0", "1", "2"], "training seeds; each variant runs once each")
    flags.DEFINE_integer("n_train", 200, "train events", lower_bound=8)
    flags.DEFINE_integer("n_validation", 50, "validation events", lower_bound=4)
    flags.DEFINE_integer("n_test", 50, "test events (physics table)", lower_bound=4)
    flags.DEFINE_integer("width", 64, "graph-layer output and head width (reference 256)",
                         lower_bound=4)
    flags.DEFINE_integer("batch_size", 4, "events per batch", lower_bound=1)
    flags.DEFINE_float("lr", 1e-3, "Adam learning rate (constant) for both variants")
    flags.DEFINE_integer("threads", 1, "TensorFlow intra-op threads", lower_bound=1)
    flags.DEFINE_string("data_dir", ".data/tfds", "TFDS data directory")
    flags.DEFINE_string("output_dir", "runs/variants", "where variants.json/.csv are written")


def data_config(n_train: int, n_validation: int, n_test: int, data_dir: str):
    from mlpf_tf.data.config import DataConfig

    return DataConfig(dataset="synthetic_pf", config="ttbar", data_dir=data_dir,
                      n_train=n_train, n_validation=n_validation, n_test=n_test,
                      target="ygen", max_elements=512, padding="fixed", truncate=True,
                      shuffle_buffer=n_train, cache=True)


def model_config(variant: str, width: int):
    """Both variants at the reference depths and the same widths (scaled by ``width``)."""
    from mlpf_tf.model.config import DELPHES_REFERENCE, ModelConfig

    base = {**DELPHES_REFERENCE, "variant": variant, "bin_size": 64, "output_dim": width,
            "head_hidden_dim": width, "hidden_dim": width, "distance_dim": max(2, width // 2),
            "ffn_dist_hidden_dim": max(2, width // 2)}
    if variant == "improved":
        base.update(layernorm=True, head_num_layers=2)
    cfg = ModelConfig(**base)
    cfg.validate()
    return cfg


class TimeBudget:
    """Keras callback factory: stop training once its steps have used ``seconds`` of CPU time.

    The clock is this process's CPU time (all its threads), counted over training steps only:
    from the end of the first step (which traces the graph, a one-off cost reported apart) and
    without the validation passes. On a shared machine wall time would charge a run for other
    processes' work; with one intra-op and one inter-op thread, CPU seconds are the seconds of
    one busy core, i.e. node-seconds of a one-core node. Wall seconds are recorded as well.
    """

    @staticmethod
    def make(seconds: float):
        import tensorflow as tf

        class _Budget(tf.keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.steps = 0
                self.seconds = 0.0  # CPU seconds of the counted steps
                self.wall_seconds = 0.0
                self.first_step_seconds = 0.0
                self._cpu = self._wall = 0.0
                self._counting = False

            def _start(self):
                self._cpu, self._wall = time.process_time(), time.perf_counter()

            def _stop(self):
                if self._counting:
                    self.seconds += time.process_time() - self._cpu
                    self.wall_seconds += time.perf_counter() - self._wall

            def on_train_begin(self, logs=None):
                self._start()

            def on_test_begin(self, logs=None):
                self._stop()

            def on_test_end(self, logs=None):
                self._start()

            def on_train_batch_end(self, batch, logs=None):
                self.steps += 1
                if self.steps == 1:
                    self.first_step_seconds = time.perf_counter() - self._wall
                    self._counting = True
                    self._start()
                    return
                self._stop()
                self._start()
                if self.seconds >= seconds:
                    self.model.stop_training = True

        return _Budget()


def run_one(variant: str, seed: int, data_cfg, width: int, seconds: float, batch_size: int,
            lr: float) -> dict[str, Any]:
    """Train one variant for ``seconds``; its losses (both definitions) and physics."""
    from mlpf_tf import distributed
    from mlpf_tf.data.pipeline import build_pipeline
    from mlpf_tf.model.evaluate import evaluate
    from mlpf_tf.model.losses import MLPFLoss, ReferenceLoss
    from mlpf_tf.train import train
    from mlpf_tf.train_config import TrainConfig
    from tuners.best_model import physics_metrics, predict_events, test_events

    model_cfg = model_config(variant, width)
    train_cfg = TrainConfig(epochs=10_000, batch_size=batch_size, lr=lr, lr_schedule="constant",
                            lr_scaling="none", seed=seed, validation_steps=1,
                            checkpoint_every_epochs=0)
    budget = TimeBudget.make(seconds)
    result = train(data_cfg, model_cfg, train_cfg, callbacks=[budget],
                   context=distributed.LOCAL)
    model = result.model
    val = build_pipeline(data_cfg, "validation", batch_size, shuffle=False)
    weights = model_cfg.loss_weights()
    losses = {}
    for name, loss in (("improved", MLPFLoss(weights, log_energy=True)),
                       ("reference", ReferenceLoss(weights))):
        metrics = evaluate(model, val, loss=loss)
        losses[name] = metrics["loss"]
    arrays = predict_events(model, test_events(data_cfg), data_cfg.max_elements, batch_size)
    return {"variant": variant, "seed": seed, "train_seconds": budget.seconds,
            "train_wall_seconds": budget.wall_seconds,
            "first_step_seconds": budget.first_step_seconds, "steps": budget.steps, "epochs": result.epochs_done,
            "params": int(sum(int(v.shape.num_elements()) for v in model.trainable_weights)),
            "val_loss_improved_def": losses["improved"],
            "val_loss_reference_def": losses["reference"],
            "physics": physics_metrics(arrays)}


def _flat(physics_block: dict) -> dict[str, float]:
    """The physics numbers of one block (model or ycand) as table columns."""
    out = {}
    for cls, name in CLASS_NAMES.items():
        for key, label in (("efficiency", "eff"), ("fake_rate", "fake")):
            if cls in physics_block.get(key, {}):
                out[f"{label} {name}"] = physics_block[key][cls]
    for key, label in (("pt_resolution", "pT res"), ("energy_resolution", "E res")):
        for cls in RESOLUTION_CLASSES:
            if cls in physics_block.get(key, {}):
                out[f"{label} std {CLASS_NAMES[cls]}"] = physics_block[key][cls]["std"]
    jets = physics_block.get("jet_response", {})
    for stat in ("median", "iqr"):
        if jets.get(stat) is not None:
            out[f"jet resp {stat}"] = jets[stat]
    return out


def table(runs: list[dict]) -> list[dict[str, Any]]:
    """Rows: one per variant (mean and std over seeds) plus the ycand baseline."""
    rows = []
    for variant in VARIANTS:
        mine = [r for r in runs if r["variant"] == variant]
        if not mine:
            continue
        cols: dict[str, list[float]] = {}
        for r in mine:
            values = {"steps": r["steps"], "train node-s (CPU)": r["train_seconds"],
                      "train wall s": r["train_wall_seconds"],
                      "first step s": r["first_step_seconds"], "params": r["params"],
                      "val loss (improved def)": r["val_loss_improved_def"],
                      "val loss (reference def)": r["val_loss_reference_def"],
                      **_flat(r["physics"]["model"])}
            for k, v in values.items():
                cols.setdefault(k, []).append(float(v))
        row: dict[str, Any] = {"reco": f"{variant} (n={len(mine)})"}
        for k, vals in cols.items():
            row[k] = (statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0)
        rows.append(row)
    if runs:
        base = _flat(runs[0]["physics"]["ycand"])
        rows.append({"reco": "ycand (rule-based PF)", **{k: (v, 0.0) for k, v in base.items()}})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Transposed text table: one line per quantity, one column per row (mean +- std)."""
    keys = []
    for row in rows:
        keys += [k for k in row if k != "reco" and k not in keys]
    head = f"{'quantity':26s}" + "".join(f"{row['reco']:>26s}" for row in rows)
    lines = [head, "-" * len(head)]
    for key in keys:
        cells = []
        for row in rows:
            if key not in row:
                cells.append(f"{'-':>26s}")
                continue
            mean, std = row[key]
            cells.append(f"{f'{mean:.4g} +- {std:.2g}':>26s}")
        lines.append(f"{key:26s}" + "".join(cells))
    return "\n".join(lines)


def write_outputs(output_dir: str, runs: list[dict], rows: list[dict], meta: dict) -> None:
    from mlpf_tf.configbase import atomic_write_text

    os.makedirs(output_dir, exist_ok=True)
    atomic_write_text(os.path.join(output_dir, "variants.json"),
                      json.dumps({**meta, "runs": runs}, indent=1, default=float) + "\n")
    keys = []
    for row in rows:
        keys += [k for k in row if k != "reco" and k not in keys]
    lines = ["reco," + ",".join(f"{k} mean,{k} std" for k in keys)]
    for row in rows:
        cells = [row["reco"]]
        for k in keys:
            cells += [f"{row[k][0]:.6g}", f"{row[k][1]:.6g}"] if k in row else ["", ""]
        lines.append(",".join(cells))
    atomic_write_text(os.path.join(output_dir, "variants.csv"), "\n".join(lines) + "\n")


def main(argv) -> None:
    del argv
    try:
        seeds = [int(s) for s in FLAGS.seeds]
    except ValueError:
        raise app.UsageError(f"--seeds={','.join(FLAGS.seeds)}: expected integers") from None
    if not seeds:
        raise app.UsageError("--seeds: give at least one seed")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from mlpf_tf.train import configure_threads

    configure_threads(FLAGS.threads, inter_op=1)
    data_cfg = data_config(FLAGS.n_train, FLAGS.n_validation, FLAGS.n_test, FLAGS.data_dir)
    data_cfg.validate()
    for variant in VARIANTS:
        model_config(variant, FLAGS.width)  # bad widths fail before any compute
    from mlpf_tf.data.pipeline import build_pipeline

    t0 = time.perf_counter()
    build_pipeline(data_cfg, "train", FLAGS.batch_size)  # generate the events once
    print(f"data ready in {time.perf_counter() - t0:.0f} s", flush=True)
    runs = []
    for seed in seeds:
        for variant in VARIANTS:
            run = run_one(variant, seed, data_cfg, FLAGS.width, FLAGS.seconds, FLAGS.batch_size,
                          FLAGS.lr)
            runs.append(run)
            print(f"{variant} seed {seed}: {run['steps']} steps in {run['train_seconds']:.1f} s, "
                  f"val loss {run['val_loss_improved_def']:.4g} (improved def) "
                  f"{run['val_loss_reference_def']:.4g} (reference def)", flush=True)
            tf.keras.backend.clear_session()
    rows = table(runs)
    meta = {"seconds": FLAGS.seconds, "seeds": seeds, "width": FLAGS.width,
            "n_train": FLAGS.n_train, "n_validation": FLAGS.n_validation,
            "n_test": FLAGS.n_test, "batch_size": FLAGS.batch_size, "lr": FLAGS.lr,
            "threads": FLAGS.threads, "data": data_cfg.to_dict()}
    write_outputs(FLAGS.output_dir, runs, rows, meta)
    print(format_table(rows))
    print(f"written: {os.path.join(FLAGS.output_dir, 'variants.csv')}")


def run() -> None:
    define_flags_once()
    app.run(main)


if __name__ == "__main__":
    run()
