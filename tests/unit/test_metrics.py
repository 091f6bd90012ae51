"""Physics metrics and evaluate helpers on hand-made arrays with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from mlpf_tf.model.evaluate import (
    evaluate,
    evaluate_arrays,
    particles_from_outputs,
    predict_particles,
)
from mlpf_tf.model.metrics import (
    batch_class_counts,
    classification_metrics,
    confusion_matrix,
    particle_metrics,
    resolution,
)

try:  # explicit thread pools on the shared 2-core machine (fixed once per process)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # TensorFlow already initialised by an earlier test module
    pass

# 8 real elements + 2 padding rows. true / predicted classes:
TRUE = np.array([0, 0, 0, 1, 1, 1, 2, 3, 0, 4])
PRED = np.array([0, 1, 0, 1, 1, 2, 2, 0, 5, 4])
W = np.array([1, 1, 1, 1, 1, 1, 1, 1, 0, 0], np.float32)  # last two: padding


def logits_for(classes):
    logits = np.full(classes.shape + (6,), -3.0, np.float32)
    np.put_along_axis(logits, classes[..., None], 2.0, axis=-1)
    return logits


def test_confusion_and_classification_metrics():
    cm = confusion_matrix(TRUE, PRED, W)
    assert cm.sum() == 8 and cm[1, 1] == 2 and cm[1, 2] == 1 and cm[0, 1] == 1
    m = classification_metrics(cm)
    assert m["accuracy"] == pytest.approx(5 / 8)          # 0,2,3,4,6 correct
    assert m["particle_accuracy"] == pytest.approx(3 / 5)  # true particles: 3,4,5,6,7
    # recalls: none 2/3, ch.had 2/3, n.had 1/1, photon 0/1
    assert m["accuracy_weighted"] == pytest.approx((2 / 3 + 2 / 3 + 1 + 0) / 4)
    assert m["eff_charged_hadron"] == pytest.approx(2 / 3)
    assert m["fake_charged_hadron"] == pytest.approx(1 / 3)  # predicted 1: elems 1,3,4
    assert m["eff_neutral_hadron"] == pytest.approx(1.0)
    assert m["fake_neutral_hadron"] == pytest.approx(1 / 2)  # predicted 2: elems 5,6
    assert m["eff_photon"] == 0.0
    assert math.isnan(m["fake_photon"])   # never predicted
    assert math.isnan(m["eff_electron"])  # only in padding
    assert math.isnan(m["eff_muon"])


def test_resolution_values():
    mean, std = resolution(np.array([11.0, 9.0, 6.0]), np.array([10.0, 10.0, 4.0]))
    r = np.array([0.1, -0.1, 0.5])
    assert mean == pytest.approx(r.mean()) and std == pytest.approx(r.std())
    mean, std = resolution(np.array([0.5, 1.0]), np.array([0.0, 2.0]), relative=False)
    assert (mean, std) == (pytest.approx(-0.25), pytest.approx(0.75))
    assert all(math.isnan(v) for v in resolution(np.array([]), np.array([])))


def hand_event():
    y = np.zeros((10, 7), np.float32)
    y[:, 0] = TRUE
    y[:, 2] = [0, 0, 0, 10, 20, 5, 4, 8, 0, 3]       # pT
    y[:, 3] = [0, 0, 0, 0.1, -0.2, 0, 1.0, 0, 0, 0]  # eta
    y[:, 6] = [0, 0, 0, 10, 30, 6, 8, 8, 0, 3]       # E
    y[TRUE == 0] = 0
    pred = {"cls": logits_for(PRED), "charge": np.zeros((10, 1)),
            "pt": np.array([0, 0, 0, 11, 18, 9, 5, 1, 0, 3], np.float32)[:, None],
            "eta": np.array([0, 0, 0, 0.2, -0.2, 0, 0.7, 0, 0, 0], np.float32)[:, None],
            "sin_phi": np.zeros((10, 1)), "cos_phi": np.ones((10, 1)),
            "energy": np.array([0, 0, 0, 12, 33, 6, 6, 1, 0, 3], np.float32)[:, None]}
    return pred, y


def test_particle_metrics_resolution_on_matched():
    pred, y = hand_event()
    m = particle_metrics(pred, y, W)
    # matched: true != 0, pred != 0, real -> elements 3, 4, 5, 6 (7 is predicted none)
    r_pt = np.array([0.1, -0.1, 0.8, 0.25])
    assert m["pt_resolution_mean"] == pytest.approx(r_pt.mean())
    assert m["pt_resolution_std"] == pytest.approx(r_pt.std())
    r_e = np.array([0.2, 0.1, 0.0, -0.25])
    assert m["energy_resolution_mean"] == pytest.approx(r_e.mean())
    assert m["energy_resolution_std"] == pytest.approx(r_e.std())
    d_eta = np.array([0.1, 0.0, 0.0, -0.3])
    assert m["eta_resolution_mean"] == pytest.approx(d_eta.mean(), abs=1e-7)
    assert m["eta_resolution_std"] == pytest.approx(d_eta.std(), rel=1e-6)
    assert (m["num_real_elements"], m["num_true_particles"], m["num_pred_particles"],
            m["num_matched_particles"]) == (8, 5, 5, 4)


def test_evaluate_arrays_event_shaped_adds_losses():
    pred, y = hand_event()
    pred2 = {k: np.stack([v, v]) for k, v in pred.items()}
    m = evaluate_arrays(pred2, np.stack([y, y]), np.stack([W, W]))
    assert m["accuracy"] == pytest.approx(5 / 8)
    assert m["num_events"] == 2
    assert m["cls_loss"] > 0 and m["loss"] > m["cls_loss"]
    with pytest.raises(ValueError, match="predictions lack"):
        evaluate_arrays({"cls": pred["cls"]}, y, W)


def test_batch_class_counts():
    counts = batch_class_counts(tf.constant(hand_event()[1][None]),
                                tf.constant(logits_for(PRED)[None]), tf.constant(W[None]))
    assert [float(c) for c in counts] == [5.0, 8.0, 3.0, 5.0]


def test_particles_from_outputs_zeroes_none_and_padding():
    pred, _ = hand_event()
    X = np.zeros((10, 12), np.float32)
    X[:8, 0] = 1
    pred["charge"] = np.array([0.4, 0.7, -2, 0.6, -0.6, 3, 0, 0, 0, 1])[:, None]
    p = particles_from_outputs(pred, X)
    assert p.shape == (10, 7)
    np.testing.assert_array_equal(p[:, 0], [0, 1, 0, 1, 1, 2, 2, 0, 0, 0])
    np.testing.assert_array_equal(p[:, 1], [0, 1, 0, 1, -1, 1, 0, 0, 0, 0])
    np.testing.assert_array_equal(p[[0, 2, 7, 8, 9]], 0)
    np.testing.assert_allclose(p[3, 2:], [11, 0.2, 0, 1, 12], rtol=1e-6)


class FixedModel:
    """A stand-in 'model' returning preset outputs, to test evaluate's bookkeeping."""

    def __init__(self, pred):
        self.pred = pred

    def __call__(self, X, training=False):
        b = tf.shape(X)[0]
        return {k: tf.repeat(tf.constant(np.asarray(v, np.float32))[None], b, axis=0)
                for k, v in self.pred.items()}


def test_evaluate_over_batches_matches_arrays():
    pred, y = hand_event()
    X = np.zeros((3, 10, 12), np.float32)
    X[:, :8, 0] = 1
    ys, ws = np.stack([y] * 3), np.stack([W] * 3)
    ds = tf.data.Dataset.from_tensor_slices((X, ys, ws)).batch(2)
    m = evaluate(FixedModel(pred), ds)
    ref = evaluate_arrays({k: np.stack([v] * 3) for k, v in pred.items()}, ys, ws)
    assert m["num_events"] == 3 and m["num_real_elements"] == 24
    for k in ("loss", "cls_loss", "pt_loss", "accuracy", "eff_charged_hadron",
              "pt_resolution_mean", "energy_resolution_std"):
        assert m[k] == pytest.approx(ref[k], rel=1e-5), k
    parts = predict_particles(FixedModel(pred), X, batch_size=2)
    assert parts.shape == (3, 10, 7)
    np.testing.assert_array_equal(parts[2, :, 0], [0, 1, 0, 1, 1, 2, 2, 0, 0, 0])
