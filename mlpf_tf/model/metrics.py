"""Physics metrics of MLPF predictions (numpy) and cheap per-batch metrics (TensorFlow).

Definitions (element-based matching: element i's prediction is compared with element i's
target; only real elements, w > 0, count):
  accuracy            fraction of real elements whose predicted class (argmax) is the true one;
  accuracy_weighted   class-balanced accuracy: each true class present gets equal weight
                      (inverse-frequency weighting), i.e. the mean of the per-class recalls;
  particle_accuracy   accuracy over elements that carry a true particle (class != 0): the
                      number a classifier that always answers "none" cannot fake;
  eff_<class>         efficiency: of the true particles of that class, the fraction predicted
                      with that class;
  fake_<class>        fake rate: of the predicted particles of that class, the fraction whose
                      element's true class is different (no true particle of that class);
  <q>_resolution_mean / _std   for q in pt, energy: mean and standard deviation of
                      (pred - true) / true over matched particles (true class != 0 and
                      predicted class != 0, true value > 0); for eta the absolute difference
                      pred - true (eta crosses 0, a ratio would blow up).
Empty denominators give NaN.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mlpf_tf.data import schema

# --- TensorFlow, per batch (used in train_step / test_step) -------------------------------------

def batch_class_counts(y, logits, w):
    """(correct real, real, correct particles, particles) element counts of a batch, float32."""
    w = tf.cast(w, tf.float32)
    cls_true = tf.cast(tf.round(tf.cast(y, tf.float32)[..., schema.T_CLS]), tf.int32)
    cls_pred = tf.argmax(logits, axis=-1, output_type=tf.int32)
    correct = tf.cast(tf.equal(cls_true, cls_pred), tf.float32) * w
    particle = tf.cast(tf.not_equal(cls_true, schema.CLS_NONE), tf.float32) * w
    return (tf.reduce_sum(correct), tf.reduce_sum(w), tf.reduce_sum(correct * particle),
            tf.reduce_sum(particle))


# --- numpy, on whole predictions ----------------------------------------------------------------

def _flat(a: np.ndarray, width: int | None = None) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape(-1, width) if width else a.reshape(-1)


def confusion_matrix(cls_true: np.ndarray, cls_pred: np.ndarray, w: np.ndarray | None = None,
                     num_classes: int = schema.NUM_CLASSES) -> np.ndarray:
    """[true, pred] counts (weights w, usually 0/1) over all elements; int64 when unweighted."""
    t = _flat(cls_true).astype(np.int64)
    p = _flat(cls_pred).astype(np.int64)
    if w is None:
        weights = np.ones(t.shape, dtype=np.int64)
    else:
        weights = (_flat(w) > 0).astype(np.int64)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (t, p), weights)
    return cm


def _div(a: float, b: float) -> float:
    return float(a) / float(b) if b else float("nan")


def classification_metrics(cm: np.ndarray) -> dict[str, float]:
    """accuracy, accuracy_weighted, particle_accuracy, eff_<class>, fake_<class> from a
    confusion matrix ``cm[true, pred]``."""
    diag = np.diag(cm)
    out = {
        "accuracy": _div(diag.sum(), cm.sum()),
        "particle_accuracy": _div(diag[1:].sum(), cm[1:].sum()),
    }
    present = cm.sum(axis=1) > 0
    recalls = diag[present] / cm.sum(axis=1)[present]
    out["accuracy_weighted"] = float(recalls.mean()) if recalls.size else float("nan")
    for c, name in enumerate(schema.CLASS_NAMES):
        if c == schema.CLS_NONE:
            continue
        out[f"eff_{name}"] = _div(cm[c, c], cm[c].sum())
        out[f"fake_{name}"] = _div(cm[:, c].sum() - cm[c, c], cm[:, c].sum())
    return out


def resolution(pred: np.ndarray, true: np.ndarray, relative: bool = True) -> tuple[float, float]:
    """(mean, std) of (pred - true) / true (or pred - true); NaN for no entries."""
    pred = np.asarray(pred, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    if pred.size == 0:
        return float("nan"), float("nan")
    r = (pred - true) / true if relative else pred - true
    return float(r.mean()), float(r.std())


def particle_metrics(pred: dict, y: np.ndarray, w: np.ndarray) -> dict[str, float]:
    """All physics metrics of predictions ``pred`` (numpy dict as the model outputs) against
    targets y [..., 7] and weights w [...] (any matching leading shape)."""
    y = _flat(y, schema.NUM_TARGETS)
    w = _flat(w)
    logits = _flat(pred["cls"], np.asarray(pred["cls"]).shape[-1])
    cls_true = np.round(y[:, schema.T_CLS]).astype(np.int64)
    cls_pred = np.argmax(logits, axis=-1)
    real = w > 0
    cm = confusion_matrix(cls_true[real], cls_pred[real], num_classes=logits.shape[-1])
    out = classification_metrics(cm)
    matched = real & (cls_true != schema.CLS_NONE) & (cls_pred != schema.CLS_NONE)
    for key, col, relative in (("pt", schema.T_PT, True), ("energy", schema.T_E, True),
                               ("eta", schema.T_ETA, False)):
        p = _flat(pred[key])
        sel = matched & (y[:, col] > 0) if relative else matched
        out[f"{key}_resolution_mean"], out[f"{key}_resolution_std"] = resolution(
            p[sel], y[sel, col], relative=relative)
    out["num_real_elements"] = int(real.sum())
    out["num_true_particles"] = int((real & (cls_true != schema.CLS_NONE)).sum())
    out["num_pred_particles"] = int((real & (cls_pred != schema.CLS_NONE)).sum())
    out["num_matched_particles"] = int(matched.sum())
    return out
