"""Evaluate an MLPF model on a dataset, or saved predictions on targets, without Keras fit.

* :func:`evaluate` runs the model over (X, y, w) batches and returns the loss components
  (exact means over all events, as in training) plus the physics metrics of
  :mod:`mlpf_tf.model.metrics`.
* :func:`evaluate_arrays` computes the same from saved predictions (the model's output dict as
  numpy) and targets, so reports can work from files.
* :func:`predict_particles` turns model outputs into per-element particles
  [class, charge, pT, eta, sin phi, cos phi, E] (the target layout).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import tensorflow as tf

from mlpf_tf.data import schema
from mlpf_tf.model.losses import MLPFLoss
from mlpf_tf.model.metrics import particle_metrics

PRED_KEYS = ("cls", "charge", "pt", "eta", "sin_phi", "cos_phi", "energy")


def _loss_fn(model, loss: MLPFLoss | None) -> MLPFLoss:
    if loss is not None:
        return loss
    return getattr(model, "mlpf_loss", None) or MLPFLoss()


def evaluate(model, dataset: Iterable, loss: MLPFLoss | None = None,
             max_batches: int | None = None) -> dict[str, float]:
    """Loss components and physics metrics of ``model`` over ``dataset`` of (X, y, w) batches.

    Losses are averaged over events (batch means weighted by batch size: the exact mean of the
    per-event losses). ``loss`` defaults to the model's own MLPFLoss. Also returns
    ``num_events``.
    """
    loss = _loss_fn(model, loss)
    forward = getattr(model, "infer", None) or tf.function(
        lambda X: model(X, training=False), reduce_retracing=True)
    sums: dict[str, float] = {}
    n_events = 0
    flat_pred: dict[str, list] = {k: [] for k in PRED_KEYS}
    flat_y, flat_w = [], []
    for i, (X, y, w) in enumerate(dataset):
        if max_batches is not None and i >= max_batches:
            break
        pred = forward(X)
        b = int(X.shape[0])
        for k, v in loss(y, pred, w).items():
            sums[k] = sums.get(k, 0.0) + float(v) * b
        n_events += b
        real = np.asarray(w) > 0
        for k in PRED_KEYS:
            flat_pred[k].append(pred[k].numpy()[real])
        flat_y.append(np.asarray(y)[real])
        flat_w.append(np.ones(int(real.sum()), np.float32))
    if n_events == 0:
        raise ValueError("evaluate: the dataset yielded no (X, y, w) batches")
    out = {k: v / n_events for k, v in sums.items()}
    pred_all = {k: np.concatenate(v) for k, v in flat_pred.items()}
    out.update(particle_metrics(pred_all, np.concatenate(flat_y), np.concatenate(flat_w)))
    out["num_events"] = n_events
    return out


def evaluate_arrays(pred: dict, y: np.ndarray, w: np.ndarray,
                    loss: MLPFLoss | None = None) -> dict[str, float]:
    """Physics metrics (and, for event-shaped arrays, loss components) of saved predictions.

    ``pred``: the model's output dict as numpy ("cls" [..., 6] logits, the others [..., 1] or
    [...]); ``y`` [..., 7]; ``w`` [...]. With [events, elements] leading dimensions the loss
    components are added (``loss`` defaults to MLPFLoss() with the reference weights).
    """
    missing = [k for k in PRED_KEYS if k not in pred]
    if missing:
        raise ValueError(f"evaluate_arrays: predictions lack {missing}; expected {PRED_KEYS}")
    y = np.asarray(y, np.float32)
    w = np.asarray(w, np.float32)
    if y.shape[:-1] != w.shape or y.shape[-1] != schema.NUM_TARGETS:
        raise ValueError(f"evaluate_arrays: y has shape {y.shape} and w {w.shape}; expected "
                         f"y = w.shape + ({schema.NUM_TARGETS},)")
    pred = {k: np.asarray(pred[k], np.float32) for k in PRED_KEYS}
    pred = {k: (v if k == "cls" or v.shape != w.shape else v[..., None]) for k, v in pred.items()}
    out = particle_metrics(pred, y, w)
    if w.ndim == 2:
        loss = loss or MLPFLoss()
        out.update({k: float(v) for k, v in loss(y, pred, w).items()})
        out["num_events"] = int(w.shape[0])
    return out


def predict_particles(model, X, batch_size: int | None = None) -> np.ndarray:
    """Per-element particles [..., 7] = [class, charge, pT, eta, sin phi, cos phi, E] (numpy).

    The class is the argmax of the logits; the charge is rounded to -1, 0 or +1. Rows of
    padding elements and rows predicted as class 0 ("none") are all zero, as in the targets.
    """
    X = np.asarray(X, np.float32)
    if batch_size is None:
        pred = {k: v.numpy() for k, v in model(X, training=False).items()}
    else:
        parts = [model(X[i:i + batch_size], training=False) for i in range(0, len(X), batch_size)]
        pred = {k: np.concatenate([p[k].numpy() for p in parts]) for k in PRED_KEYS}
    return particles_from_outputs(pred, X)


def particles_from_outputs(pred: dict, X: np.ndarray) -> np.ndarray:
    """:func:`predict_particles` on an already computed output dict."""
    cls = np.argmax(pred["cls"], axis=-1).astype(np.float32)
    charge = np.clip(np.round(pred["charge"][..., 0]), -1, 1)
    cols = [cls, charge] + [np.asarray(pred[k])[..., 0] for k in PRED_KEYS[2:]]
    out = np.stack(cols, axis=-1).astype(np.float32)
    keep = (np.asarray(X)[..., schema.F_TYPE] != schema.ELEM_PAD) & (cls != schema.CLS_NONE)
    return out * keep[..., None]
