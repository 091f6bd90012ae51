"""MLPFModel: train/test steps, gradient normalisation, mixed precision, config round trip."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mlpf_tf.model import MLPFLoss, ModelConfig, build_model
from mlpf_tf.model.evaluate import evaluate
from mlpf_tf.model.network import LOSS_LOGS, METRIC_LOGS, MLPFModel

try:  # explicit thread pools on the shared 2-core machine (fixed once per process)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # TensorFlow already initialised by an earlier test module
    pass


def tiny_cfg(**kw) -> ModelConfig:
    base = dict(hidden_dim=16, distance_dim=8, ffn_dist_hidden_dim=16, output_dim=16,
                head_hidden_dim=16, bin_size=16, num_graph_layers_common=1,
                num_graph_layers_energy=1)
    base.update(kw)
    return ModelConfig(**base)


def batch(n_events: int, n: int, seed: int = 0):
    """Random (X, y, w) with a varying number of real elements per event."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n_events, n, 12), np.float32)
    y = np.zeros((n_events, n, 7), np.float32)
    w = np.zeros((n_events, n), np.float32)
    for i in range(n_events):
        k = int(rng.integers(n // 2, n + 1))
        X[i, :k, 0] = rng.integers(1, 3, k)
        X[i, :k, 1] = rng.exponential(4, k)
        X[i, :k, 2] = rng.uniform(-2, 2, k)
        phi = rng.uniform(-3, 3, k)
        X[i, :k, 3], X[i, :k, 4] = np.sin(phi), np.cos(phi)
        X[i, :k, 5] = X[i, :k, 1] * np.cosh(X[i, :k, 2])
        y[i, :k, 0] = rng.integers(0, 6, k)
        y[i, :k, 1] = rng.integers(-1, 2, k)
        y[i, :k, 2:7] = X[i, :k, [1, 2, 3, 4, 5]].T * rng.uniform(0.8, 1.2, (k, 5))
        y[i, y[i, :, 0] == 0] = 0
        w[i, :k] = 1
    return X, y, w


def test_logs_are_loss_components_and_metrics():
    model = build_model(tiny_cfg())
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
    X, y, w = batch(3, 40)
    logs = model.test_step((tf.constant(X), tf.constant(y), tf.constant(w)))
    assert set(logs) == set(LOSS_LOGS) | set(METRIC_LOGS)
    direct = model.mlpf_loss(y, model(X), w)
    for k in LOSS_LOGS:
        assert float(logs[k]) == pytest.approx(float(direct[k]), rel=1e-5), k
    cls_pred = np.argmax(model(X)["cls"].numpy(), -1)
    real = w > 0
    acc = np.mean(cls_pred[real] == y[..., 0][real])
    assert float(logs["accuracy"]) == pytest.approx(acc, rel=1e-6)
    part = real & (y[..., 0] > 0)
    assert float(logs["particle_accuracy"]) == pytest.approx(
        np.mean(cls_pred[part] == y[..., 0][part]), rel=1e-6)


def test_keras_evaluate_epoch_mean_is_exact_over_uneven_batches():
    model = build_model(tiny_cfg())
    model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
    X, y, w = batch(5, 32, seed=1)
    ds = tf.data.Dataset.from_tensor_slices((X, y, w)).batch(2)  # batches of 2, 2, 1
    keras_logs = model.evaluate(ds, verbose=0, return_dict=True)
    per_event = MLPFLoss.from_config(model.cfg).per_event(y, model(X), w)
    ours = evaluate(model, ds)
    for k in ("cls", "pt", "energy"):
        assert keras_logs[f"{k}_loss"] == pytest.approx(float(np.mean(per_event[k])), rel=1e-5)
        assert ours[f"{k}_loss"] == pytest.approx(float(np.mean(per_event[k])), rel=1e-5)
    assert keras_logs["loss"] == pytest.approx(ours["loss"], rel=1e-5)
    assert keras_logs["accuracy"] == pytest.approx(ours["accuracy"], rel=1e-5)


def loss_gradients(model, X, y, w):
    with tf.GradientTape() as tape:
        loss = model.mlpf_loss(y, model(X, training=True), w)["loss"]
    return tape.gradient(loss, model.trainable_variables)


def test_two_ranks_of_b_events_equal_one_rank_of_2b():
    model = build_model(tiny_cfg(num_node_messages=2))
    X, y, w = batch(4, 48, seed=2)
    full = loss_gradients(model, X, y, w)
    halves = [loss_gradients(model, X[s], y[s], w[s]) for s in (slice(0, 2), slice(2, 4))]
    for g, a, b in zip(full, *halves):
        np.testing.assert_allclose(g.numpy(), (a.numpy() + b.numpy()) / 2, rtol=1e-4,
                                   atol=1e-6)


class RecordingSGD(tf.keras.optimizers.SGD):
    """SGD that records the gradients handed to apply_gradients (as Horovod's wrapper sees)."""

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        grads_and_vars = list(grads_and_vars)
        self.seen = [tf.identity(g) for g, _ in grads_and_vars]
        return super().apply_gradients(grads_and_vars, *args, **kwargs)


def test_train_step_applies_tape_gradients_through_apply_gradients():
    model = build_model(tiny_cfg())
    X, y, w = batch(2, 40, seed=3)
    expected = loss_gradients(model, X, y, w)
    before = [v.numpy().copy() for v in model.trainable_variables]
    opt = RecordingSGD(learning_rate=0.1)
    model.compile(optimizer=opt)
    model.train_step((tf.constant(X), tf.constant(y), tf.constant(w)))
    assert len(opt.seen) == len(model.trainable_variables)
    for g_seen, g_exp, v, v0 in zip(opt.seen, expected, model.trainable_variables, before):
        np.testing.assert_allclose(g_seen.numpy(), g_exp.numpy(), rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(v.numpy(), v0 - 0.1 * g_exp.numpy(), rtol=1e-4, atol=1e-6)
    # the LSH projections are fixed
    lsh = [v for v in model.non_trainable_variables if "lsh_projection" in v.name]
    assert len(lsh) == 2


def test_mixed_precision_outputs_float32():
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(tiny_cfg())
        X, _, _ = batch(2, 40, seed=5)
        out = model(X)
        assert all(v.dtype == tf.float32 for v in out.values())
        assert all(np.isfinite(v.numpy()).all() for v in out.values())
        assert model.heads.cls_head.layers[0].compute_dtype == "float16"
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
def test_mixed_precision_trains_with_loss_scale_optimizer():
    tf.keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(tiny_cfg())
        X, y, w = batch(2, 40, seed=5)
        model.compile(optimizer=tf.keras.optimizers.Adam(1e-3))
        assert isinstance(model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
        before = [v.numpy().copy() for v in model.trainable_variables]
        ds = tf.data.Dataset.from_tensor_slices((X, y, w)).batch(1).repeat(12)
        hist = model.fit(ds, epochs=1, verbose=0).history
        assert set(hist) == set(LOSS_LOGS) | set(METRIC_LOGS)
        assert np.isfinite(hist["loss"][0])
        changed = [not np.array_equal(a, v.numpy())
                   for a, v in zip(before, model.trainable_variables)]
        assert all(changed)  # the loss scale fell until steps were applied
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


def test_config_round_trip_and_weights():
    model = build_model(tiny_cfg(dropout=0.2, layernorm=False))
    clone = MLPFModel.from_config(model.get_config())
    assert clone.cfg == model.cfg
    X, _, _ = batch(2, 20, seed=6)
    clone(X)
    clone.set_weights(model.get_weights())
    for k, v in model(X).items():
        np.testing.assert_array_equal(v.numpy(), clone(X)[k].numpy())


def test_no_tensor_grows_as_n_squared():
    n, bin_size = 1024, 16
    model = build_model(tiny_cfg(bin_size=bin_size, num_node_messages=2, max_num_bins=32))
    fn = tf.function(lambda X: model(X, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec([2, n, 12], tf.float32)).graph
    largest = 0
    for op in graph.get_operations():
        for t in op.outputs:
            if t.shape.rank is None:
                continue
            dims = [d if d is not None else n for d in t.shape.as_list()]
            largest = max(largest, int(np.prod(dims)) if dims else 1)
    # the biggest tensors are [B, N, width] or [B, N/bs, bs, bs]: O(N), never O(N^2)
    assert largest <= 2 * n * 64
    assert largest < 2 * n * n // 16
