"""Physics of a search's best model: evaluate its final checkpoint on the test split.

    python -m tuners.best_model --run_dir runs/smoke-asha-w1-s1 [--max_events N]

After a search, the best trial is the completed ``trial_end`` record of ``trials.jsonl`` with
the best final objective (the rule of ``best.json``); its last checkpoint
(``<run_dir>/trials/<id>/checkpoints``) holds the weights of exactly those metrics. This
module rebuilds that model from ``params.yaml`` and the trial's hyperparameters, runs it over
the test split in the stored order and writes, atomically, into ``<run_dir>/best/``:

* ``predictions.npz`` -- ``pred``, ``ygen``, ``ycand`` [elements, 7] and ``offsets``
  [events + 1], the layout :mod:`reports.physics` documents (padding removed; an event longer
  than ``data.max_elements`` keeps its first ``max_elements`` elements, as in training);
* ``physics.json`` -- ``{"events", "trial_id", "checkpoint", "model": METRICS,
  "ycand": METRICS}`` with the per-class efficiency and fake rate, pT and energy resolution,
  jet pT response (anti-kT R=0.4) and MET response of :mod:`reports.physics`, so the report
  and the files use one definition of every number.

Only rank 0 of a search calls this (it reads and writes files; no collectives).
"""

from __future__ import annotations

import io
import json
import math
import os
from typing import Any

import numpy as np
import yaml

from mlpf_tf.configbase import ConfigError, atomic_write_text
from tuners.records import TRIALS_FILE, read_records

BEST_DIR = "best"
PREDICTIONS_NAME = "predictions.npz"
PHYSICS_NAME = "physics.json"
PARAMS_NAME = "params.yaml"
TEST_SPLIT = "test"


class BestModelError(RuntimeError):
    """The run directory has no usable best trial or checkpoint; the message names the file."""


def best_trial(run_dir: str, objective: str = "val_loss", direction: str = "min") -> dict:
    """The completed ``trial_end`` record with the best finite final objective.

    Ties keep the earliest record. BestModelError naming ``trials.jsonl`` if none completed.
    """
    path = os.path.join(run_dir, TRIALS_FILE)
    if not os.path.isfile(path):
        raise BestModelError(f"{path}: no such file; the search recorded no trial")
    sign = 1.0 if direction == "min" else -1.0
    best, best_key = None, math.inf
    for record in read_records(path):
        if record.get("event") != "trial_end" or record.get("status") != "COMPLETED":
            continue
        value = (record.get("metrics") or {}).get(objective)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        if sign * value < best_key:
            best, best_key = record, sign * value
    if best is None:
        raise BestModelError(f"{path}: no completed trial with a finite {objective}")
    return best


def load_configs(run_dir: str):
    """(data, model, train, search) config sections from ``<run_dir>/params.yaml``."""
    from mlpf_tf.data.config import DataConfig
    from mlpf_tf.model.config import ModelConfig
    from mlpf_tf.train_config import TrainConfig
    from tuners.config import SearchConfig

    path = os.path.join(run_dir, PARAMS_NAME)
    try:
        with open(path, encoding="utf-8") as fh:
            tree = yaml.safe_load(fh)
    except FileNotFoundError:
        raise BestModelError(f"{path}: no such file") from None
    except yaml.YAMLError as exc:
        raise BestModelError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(tree, dict):
        raise BestModelError(f"{path}: expected a mapping of config sections")
    sections = []
    try:
        for cls in (DataConfig, ModelConfig, TrainConfig, SearchConfig):
            section = cls.from_dict(tree.get(cls.SECTION), path)
            section.validate()
            sections.append(section)
    except ConfigError as exc:
        raise BestModelError(str(exc)) from None
    return tuple(sections)


def load_trial_model(run_dir: str, record: dict, model_cfg, train_cfg):
    """(model, checkpoint path, epochs it holds) of trial ``record``'s last checkpoint.

    A trial stopped early between checkpoints holds fewer epochs than it trained; the caller
    records the number so the physics is attributed to the right weights.
    """
    import tensorflow as tf

    from mlpf_tf import checkpoint
    from mlpf_tf.model.network import build_model
    from tuners import hypermodel

    directory = os.path.join(run_dir, "trials", str(record["trial_id"]), "checkpoints")
    try:
        path = checkpoint.resolve(directory)
        epoch = checkpoint.read_metadata(path)["epoch"]
    except checkpoint.CheckpointError as exc:
        raise BestModelError(f"best trial {record['trial_id']}: {exc}") from None
    cfg, _ = hypermodel.apply_values(record.get("hyperparameters") or {}, model_cfg, train_cfg)
    model = build_model(cfg)
    model(tf.zeros((1, cfg.bin_size, 12)))
    status = tf.train.Checkpoint(model=model).read(os.path.join(path, checkpoint.PREFIX))
    status.expect_partial().assert_existing_objects_matched()
    return model, path, int(epoch)


def test_events(data_cfg, max_events: int | None = None):
    """Yield (X, ygen, ycand) numpy arrays per test event, truncated to ``max_elements``."""
    from mlpf_tf.data import datasets

    for k, example in enumerate(datasets.load_split(data_cfg, TEST_SPLIT).as_numpy_iterator()):
        if max_events is not None and k >= max_events:
            return
        n = len(example["X"])
        if n > data_cfg.max_elements and not data_cfg.truncate:
            raise BestModelError(f"test event {k} has {n} elements > --data.max_elements="
                                 f"{data_cfg.max_elements} (and --data.truncate is off)")
        keep = min(n, data_cfg.max_elements)
        yield (example["X"][:keep].astype(np.float32), example["ygen"][:keep].astype(np.float32),
               example["ycand"][:keep].astype(np.float32))


def predict_events(model, events, pad_to: int, batch_size: int = 8) -> dict[str, np.ndarray]:
    """Arrays of predictions.npz for ``events`` of (X, ygen, ycand): pred/ygen/ycand/offsets.

    Events are padded with zero rows (element type 0 = padding) to ``pad_to`` elements, run in
    batches, and the padding rows dropped again.
    """
    from mlpf_tf.data import schema
    from mlpf_tf.model.evaluate import predict_particles

    events = list(events)
    if not events:
        raise BestModelError("the test split yielded no events")
    lengths = np.array([len(x) for x, _, _ in events], dtype=np.int64)
    X = np.zeros((len(events), pad_to, schema.NUM_FEATURES), np.float32)
    for k, (x, _, _) in enumerate(events):
        X[k, :len(x)] = x
    pred = predict_particles(model, X, batch_size=batch_size)
    return {
        "pred": np.concatenate([pred[k, :n] for k, n in enumerate(lengths)]),
        "ygen": np.concatenate([e[1] for e in events]),
        "ycand": np.concatenate([e[2] for e in events]),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
    }


def physics_metrics(arrays: dict[str, np.ndarray], jet_ptmin: float | None = None) -> dict:
    """physics.json's ``model`` and ``ycand`` blocks (definitions of :mod:`reports.physics`)."""
    from reports import physics

    ptmin = physics.DEFAULT_JET_PTMIN if jet_ptmin is None else jet_ptmin
    preds = physics.Predictions(*(physics.fill_kinematics(arrays[k].astype(np.float64))
                                  for k in ("pred", "ygen", "ycand")),
                                offsets=np.asarray(arrays["offsets"], np.int64))
    truth = [preds.event("ygen", k) for k in range(preds.events)]
    out: dict[str, Any] = {}
    for label, which in (("model", "pred"), ("ycand", "ycand")):
        reco = getattr(preds, which)
        classes = physics.efficiency_fake_rate(preds.ygen, reco)
        block: dict[str, Any] = {
            "efficiency": _finite_column(classes, "efficiency"),
            "fake_rate": _finite_column(classes, "fake_rate"),
        }
        for name, column in (("pt_resolution", physics.T_PT), ("energy_resolution",
                                                                  physics.T_E)):
            res = physics.resolution(preds.ygen, reco, column)
            block[name] = {cls: {"mean": float(row["mean"]), "std": float(row["std"]),
                                 "n": int(row["n"])}
                           for cls, row in res.iterrows() if row["n"] > 0}
        events = [preds.event(which, k) for k in range(preds.events)]
        block["jet_response"] = _plain_response(physics.jet_response(truth, events, ptmin))
        block["met_response"] = _plain_response(physics.met_response(truth, events))
        out[label] = block
    out["events"] = preds.events
    out["jet_ptmin"] = ptmin
    return out


def _finite_column(df, column: str) -> dict[str, float]:
    return {str(cls): float(v) for cls, v in df[column].items() if math.isfinite(v)}


def _plain_response(response) -> dict:
    """A response as JSON (NaN, from no entries, becomes null)."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in response.as_dict().items()}


def write_best_physics(run_dir: str, *, max_events: int | None = None,
                       jet_ptmin: float | None = None, batch_size: int = 8) -> dict:
    """Evaluate the best trial of ``run_dir`` on the test split; write best/*; return the JSON.

    BestModelError (naming the file) when params, records or checkpoint are unusable.
    """
    run_dir = os.path.abspath(run_dir)
    data_cfg, model_cfg, train_cfg, search_cfg = load_configs(run_dir)
    record = best_trial(run_dir, search_cfg.objective, search_cfg.direction)
    model, ckpt_path, ckpt_epochs = load_trial_model(run_dir, record, model_cfg, train_cfg)
    arrays = predict_events(model, test_events(data_cfg, max_events), data_cfg.max_elements,
                            batch_size)
    result = {"trial_id": str(record["trial_id"]), "checkpoint": ckpt_path,
              "objective": search_cfg.objective,
              "objective_value": float(record["metrics"][search_cfg.objective]),
              "epochs": record.get("epochs"), "checkpoint_epochs": ckpt_epochs,
              "split": TEST_SPLIT,
              **physics_metrics(arrays, jet_ptmin)}
    out_dir = os.path.join(run_dir, BEST_DIR)
    os.makedirs(out_dir, exist_ok=True)
    _atomic_write_npz(os.path.join(out_dir, PREDICTIONS_NAME), arrays)
    atomic_write_text(os.path.join(out_dir, PHYSICS_NAME),
                      json.dumps(result, indent=1, allow_nan=False) + "\n")
    return result


def _atomic_write_npz(path: str, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as fh:
        fh.write(buffer.getvalue())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def has_best_physics(run_dir: str) -> bool:
    """Both best/ files exist (written last-to-first, so physics.json means complete)."""
    best = os.path.join(run_dir, BEST_DIR)
    return all(os.path.isfile(os.path.join(best, n)) for n in (PREDICTIONS_NAME, PHYSICS_NAME))


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tuners.best_model",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", required=True, help="run directory of a finished search")
    parser.add_argument("--max_events", type=int, default=None,
                        help="test events at most (default: the whole split)")
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow intra-op threads")
    args = parser.parse_args(argv)
    if args.max_events is not None and args.max_events < 1:
        parser.error(f"--max_events={args.max_events}: must be >= 1")
    from mlpf_tf.train import configure_threads

    configure_threads(args.threads, 1)
    try:
        result = write_best_physics(args.run_dir, max_events=args.max_events)
    except BestModelError as exc:
        print(f"tuners.best_model: error: {exc}", flush=True)
        return 1
    print(f"best trial {result['trial_id']}: {result['events']} test events -> "
          f"{os.path.join(os.path.abspath(args.run_dir), BEST_DIR)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
