"""MLPF loss: hand-computed values, padding invariance, per-event normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mlpf_tf.model.losses import MLPFLoss, huber

try:  # explicit thread pools on the shared 2-core machine (fixed once per process)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # TensorFlow already initialised by an earlier test module
    pass

KEYS = ("cls", "charge", "pt", "eta", "sin_phi", "cos_phi", "energy")


def make_pred(logits, charge, pt, eta, sin_phi, cos_phi, energy):
    pred = {"cls": np.asarray(logits, np.float32)}
    for k, v in zip(KEYS[1:], (charge, pt, eta, sin_phi, cos_phi, energy)):
        pred[k] = np.asarray(v, np.float32)[..., None]
    return {k: tf.constant(v) for k, v in pred.items()}


def tiny_event():
    """One event, 3 elements: a true charged hadron, a true 'none', a padding row."""
    y = np.array([[[1, 1, 2.0, 0.5, 0.0, 1.0, 3.0],
                   [0, 0, 0.0, 0.0, 0.0, 0.0, 0.0],
                   [0, 0, 0.0, 0.0, 0.0, 0.0, 0.0]]], np.float32)
    w = np.array([[1.0, 1.0, 0.0]], np.float32)
    logits = np.zeros((1, 3, 6), np.float32)
    logits[0, 0, 1] = np.log(5.0)  # p(class 1) = 5 / 10
    logits[0, 1, 0] = np.log(3.0)  # p(class 0) = 3 / 8
    logits[0, 2] = [9, -9, 4, 0, 0, 2]  # padding: anything
    pred = make_pred(logits, charge=[[0.5, 0.2, 9.0]], pt=[[3.0, 5.0, 9.0]],
                     eta=[[0.55, 7.0, 9.0]], sin_phi=[[0.3, 1.0, 9.0]],
                     cos_phi=[[0.98, 2.0, 9.0]], energy=[[3.0, 1.0, 9.0]])
    return y, pred, w


def test_huber_values():
    e = tf.constant([0.05, -0.3, 2.0])
    np.testing.assert_allclose(huber(e, 0.1).numpy(), [0.00125, 0.1 * (0.3 - 0.05),
                                                       0.1 * (2.0 - 0.05)], rtol=1e-6)
    np.testing.assert_allclose(huber(e, 1.0).numpy(), [0.00125, 0.045, 1.5], rtol=1e-6)


def test_hand_computed_components_linear():
    y, pred, w = tiny_event()
    logs = MLPFLoss(log_energy=False)(y, pred, w)
    ce = (-np.log(5 / 10) - np.log(3 / 8)) / 2
    assert logs["cls_loss"].numpy() == pytest.approx(ce, rel=1e-5)
    assert logs["charge_loss"].numpy() == pytest.approx((0.25 + 0.04) / 2, rel=1e-5)
    # regression: only element 0 (true particle) counts
    assert logs["pt_loss"].numpy() == pytest.approx(0.5, rel=1e-5)           # |1| -> 0.5
    assert logs["eta_loss"].numpy() == pytest.approx(0.5 * 0.05 ** 2, rel=1e-4)
    assert logs["sin_phi_loss"].numpy() == pytest.approx(0.1 * (0.3 - 0.05), rel=1e-5)
    assert logs["cos_phi_loss"].numpy() == pytest.approx(0.5 * 0.02 ** 2, rel=1e-3)
    assert logs["energy_loss"].numpy() == pytest.approx(0.0, abs=1e-7)
    total = ce + (0.29 / 2) + 100 * (0.5 + 0.00125 + 0.025 + 0.0002)
    assert logs["loss"].numpy() == pytest.approx(total, rel=1e-4)


def test_hand_computed_log_energy_and_weights():
    y, pred, w = tiny_event()
    weights = {"cls": 2.0, "charge": 0.0, "pt": 1.0, "eta": 0.0, "sin_phi": 0.0,
               "cos_phi": 0.0, "energy": 0.0}
    logs = MLPFLoss(weights, log_energy=True)(y, pred, w)
    d = np.log1p(3.0) - np.log1p(2.0)
    assert logs["pt_loss"].numpy() == pytest.approx(0.5 * d * d, rel=1e-5)
    ce = (-np.log(5 / 10) - np.log(3 / 8)) / 2
    assert logs["loss"].numpy() == pytest.approx(2 * ce + 0.5 * d * d, rel=1e-5)


def test_unknown_weight_is_an_error():
    with pytest.raises(ValueError, match="unknown loss component"):
        MLPFLoss({"momentum": 1.0})


def random_batch(batch, n, seed):
    rng = np.random.default_rng(seed)
    y = np.zeros((batch, n, 7), np.float32)
    y[..., 0] = rng.integers(0, 6, (batch, n))
    y[..., 1] = rng.integers(-1, 2, (batch, n))
    y[..., 2] = rng.exponential(3, (batch, n))
    y[..., 3] = rng.normal(size=(batch, n))
    y[..., 4:6] = rng.normal(size=(batch, n, 2))
    y[..., 6] = rng.exponential(5, (batch, n))
    w = np.ones((batch, n), np.float32)
    n_real = rng.integers(3, n, batch)
    for b in range(batch):
        w[b, n_real[b]:] = 0
        y[b, n_real[b]:] = 0
    pred = make_pred(rng.normal(size=(batch, n, 6)), *(rng.normal(size=(6, batch, n))))
    pred["pt"] = tf.abs(pred["pt"])
    pred["energy"] = tf.abs(pred["energy"])
    return y, pred, w


@pytest.mark.parametrize("log_energy", [True, False])
def test_padding_does_not_change_loss(log_energy):
    y, pred, w = random_batch(3, 20, seed=1)
    loss = MLPFLoss(log_energy=log_energy)
    base = {k: v.numpy() for k, v in loss(y, pred, w).items()}
    extra = 13
    y2 = np.concatenate([y, np.zeros((3, extra, 7), np.float32)], axis=1)
    w2 = np.concatenate([w, np.zeros((3, extra), np.float32)], axis=1)
    rng = np.random.default_rng(2)
    pred2 = {k: tf.concat([v, tf.constant(rng.normal(size=(3, extra, v.shape[-1])) * 50,
                                          tf.float32)], axis=1) for k, v in pred.items()}
    padded = loss(y2, pred2, w2)
    for k, v in base.items():
        assert padded[k].numpy() == pytest.approx(v, rel=1e-6), k


def test_batch_loss_is_mean_of_per_event_losses():
    y, pred, w = random_batch(4, 16, seed=3)
    loss = MLPFLoss()
    batch = loss(y, pred, w)
    singles = [loss(y[i:i + 1], {k: v[i:i + 1] for k, v in pred.items()}, w[i:i + 1])
               for i in range(4)]
    for k in batch:
        mean = np.mean([s[k].numpy() for s in singles])
        assert batch[k].numpy() == pytest.approx(mean, rel=1e-5), k
    # two "ranks" of 2 events each average to the 4-event batch exactly (up to float error)
    halves = [loss(y[i:i + 2], {k: v[i:i + 2] for k, v in pred.items()}, w[i:i + 2])
              for i in (0, 2)]
    assert batch["loss"].numpy() == pytest.approx(
        (halves[0]["loss"].numpy() + halves[1]["loss"].numpy()) / 2, rel=1e-6)


def test_event_without_particles_contributes_zero_regression():
    y = np.zeros((1, 4, 7), np.float32)
    w = np.array([[1, 1, 0, 0]], np.float32)
    pred = make_pred(np.zeros((1, 4, 6)), *(np.ones((6, 1, 4))))
    logs = MLPFLoss()(y, pred, w)
    for k in ("pt", "eta", "sin_phi", "cos_phi", "energy"):
        assert logs[f"{k}_loss"].numpy() == 0.0
    assert logs["cls_loss"].numpy() == pytest.approx(np.log(6.0), rel=1e-6)
    assert logs["charge_loss"].numpy() == pytest.approx(1.0)
