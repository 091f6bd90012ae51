"""A tiny stand-in for the MLPF model and random (X, y, w) arrays, shared by the training tests.

``TinyModel`` follows the MLPF ``train_step`` contract (per-event mean loss, then the mean over
events; gradients applied through ``optimizer.apply_gradients``), so the training loop, resume
and Horovod averaging can be tested in seconds without the full graph network.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

N_EL = 5


class TinyModel(tf.keras.Model):
    """Stand-in with the MLPF train_step contract; loss = mean over events of per-event means."""

    def __init__(self, hidden: int = 8):
        super().__init__()
        self.d1 = tf.keras.layers.Dense(hidden, activation="tanh")
        self.cls = tf.keras.layers.Dense(6)
        self.reg = tf.keras.layers.Dense(1)
        self.loss_tracker = tf.keras.metrics.Mean("loss")

    def call(self, X, training=False):
        h = self.d1(X)
        return {"cls": self.cls(h), "pt": self.reg(h)}

    def event_loss(self, X, y, w):
        out = self(X, training=True)
        ce = tf.keras.losses.sparse_categorical_crossentropy(
            tf.cast(y[..., 0], tf.int32), tf.cast(out["cls"], tf.float32), from_logits=True)
        reg = tf.square(tf.cast(out["pt"][..., 0], tf.float32) - y[..., 2])
        per_event = tf.reduce_sum((ce + reg) * w, -1) / tf.maximum(tf.reduce_sum(w, -1), 1.0)
        return tf.reduce_mean(per_event)

    def train_step(self, data):
        X, y, w = data
        with tf.GradientTape() as tape:
            loss = self.event_loss(X, y, w)
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}

    def test_step(self, data):
        self.loss_tracker.update_state(self.event_loss(*data))
        return {"loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.loss_tracker]


def tiny_builder(_model_cfg):
    return TinyModel()


def arrays(n: int, seed: int = 0, nan_events: tuple[int, ...] = ()):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_EL, 12)).astype(np.float32)
    y = np.zeros((n, N_EL, 7), np.float32)
    y[..., 0] = rng.integers(0, 6, size=(n, N_EL))
    y[..., 2] = 0.5 * X[..., 1]
    for i in nan_events:
        X[i] = np.nan
    return X, y, np.ones((n, N_EL), np.float32)
