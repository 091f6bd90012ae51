"""A short training of the small default model beats trivial baselines by clear margins."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mlpf_tf.data import schema
from mlpf_tf.data.generate import generate_events
from mlpf_tf.model.config import ModelConfig
from mlpf_tf.model.evaluate import evaluate, evaluate_arrays
from mlpf_tf.model.losses import MLPFLoss
from mlpf_tf.model.network import build_model

try:  # explicit thread pools on the shared 2-core machine (fixed once per process)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # TensorFlow already initialised by an earlier test module
    pass


def gun_events(n_events: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(X, ygen) of particle-gun events (about 90 elements each)."""
    return [(ev.X, ev.ygen) for ev in generate_events("gun", n_events, seed)]


def pad_events(events) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """List of (X, y) -> (X [E, N, 12], y [E, N, 7], w [E, N]) zero-padded to the longest."""
    n = max(len(x) for x, _ in events)
    X = np.zeros((len(events), n, schema.NUM_FEATURES), np.float32)
    Y = np.zeros((len(events), n, schema.NUM_TARGETS), np.float32)
    W = np.zeros((len(events), n), np.float32)
    for i, (x, y) in enumerate(events):
        X[i, :len(x)], Y[i, :len(y)], W[i, :len(x)] = x, y, 1.0
    return X, Y, W


def trivial_predictions(y_train, w_train, shape):
    """Element-independent predictor: class-prior logits and the mean of every target."""
    real = w_train > 0
    cls = y_train[..., 0][real].astype(int)
    prior = np.bincount(cls, minlength=6) / cls.size
    part = real & (y_train[..., 0] > 0)
    pred = {"cls": np.broadcast_to(np.log(prior + 1e-9), shape + (6,)).astype(np.float32),
            "charge": np.full(shape + (1,), y_train[..., 1][real].mean(), np.float32)}
    for key, col in (("pt", 2), ("eta", 3), ("sin_phi", 4), ("cos_phi", 5), ("energy", 6)):
        t = y_train[..., col][part]
        value = np.expm1(np.log1p(t).mean()) if key in ("pt", "energy") else t.mean()
        pred[key] = np.full(shape + (1,), value, np.float32)
    return pred, int(np.argmax(prior))


@pytest.fixture(scope="module")
def trained():
    tf.keras.utils.set_random_seed(1)
    train = pad_events(gun_events(160, seed=11))
    test = pad_events(gun_events(48, seed=12))
    model = build_model(ModelConfig())
    model.compile(optimizer=tf.keras.optimizers.Adam(3e-3))
    ds = tf.data.Dataset.from_tensor_slices(train).shuffle(160, seed=3).batch(8)
    model.fit(ds, epochs=4, verbose=0)
    metrics = evaluate(model, tf.data.Dataset.from_tensor_slices(test).batch(16))
    return model, train, test, metrics


def test_loss_beats_class_prior_mean_predictor(trained):
    model, train, test, metrics = trained
    pred, _ = trivial_predictions(train[1], train[2], test[2].shape)
    base = evaluate_arrays(pred, test[1], test[2], loss=MLPFLoss.from_config(model.cfg))
    assert metrics["loss"] < 0.5 * base["loss"], (metrics["loss"], base["loss"])
    assert metrics["cls_loss"] < 0.6 * base["cls_loss"], (metrics["cls_loss"], base["cls_loss"])


def test_accuracy_beats_majority_class(trained):
    model, train, test, metrics = trained
    _, majority = trivial_predictions(train[1], train[2], test[2].shape)
    cls = test[1][..., 0][test[2] > 0]
    majority_acc = float(np.mean(cls == majority))
    majority_particle_acc = float(np.mean(cls[cls > 0] == majority)) if majority else 0.0
    assert metrics["accuracy"] > majority_acc + 0.2, (metrics["accuracy"], majority_acc)
    assert metrics["particle_accuracy"] > majority_particle_acc + 0.2, (
        metrics["particle_accuracy"], majority_particle_acc)
    assert metrics["eff_charged_hadron"] > 0.8
