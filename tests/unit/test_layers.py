"""Graph layers: shapes, binning is an exact permutation, padding never changes real elements."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mlpf_tf.configbase import ConfigError
from mlpf_tf.model import layers as L
from mlpf_tf.model.config import ModelConfig
from mlpf_tf.model.network import build_model

try:  # explicit thread pools on the shared 2-core machine (fixed once per process)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # TensorFlow already initialised by an earlier test module
    pass


def random_events(batch: int, n: int, n_real: int | None = None, seed: int = 0) -> np.ndarray:
    """[batch, n, 12] events with towers and tracks; rows >= n_real are padding."""
    rng = np.random.default_rng(seed)
    X = np.zeros((batch, n, 12), np.float32)
    X[..., 0] = rng.integers(1, 3, (batch, n))
    X[..., 1] = rng.exponential(5.0, (batch, n))
    X[..., 2] = rng.uniform(-3, 3, (batch, n))
    phi = rng.uniform(-np.pi, np.pi, (batch, n))
    X[..., 3], X[..., 4] = np.sin(phi), np.cos(phi)
    X[..., 5] = X[..., 1] * np.cosh(X[..., 2])
    X[..., 6:9] = rng.normal(size=(batch, n, 3))
    if n_real is not None:
        X[:, n_real:] = 0.0
    return X


def small_cfg(**kw) -> ModelConfig:
    base = dict(hidden_dim=16, distance_dim=8, ffn_dist_hidden_dim=16, output_dim=16,
                head_hidden_dim=16, num_graph_layers_common=1, num_graph_layers_energy=1)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("n,bin_size,batch", [(7, 16, 1), (64, 16, 3), (200, 32, 3),
                                              (200, 16, 1)])
def test_model_output_shapes(n, bin_size, batch):
    model = build_model(small_cfg(bin_size=bin_size))
    out = model(random_events(batch, n), training=False)
    expected = {"cls": 6, "charge": 1, "pt": 1, "eta": 1, "sin_phi": 1, "cos_phi": 1,
                "energy": 1}
    assert set(out) == set(expected)
    for key, width in expected.items():
        assert tuple(out[key].shape) == (batch, n, width), key
        assert out[key].dtype == tf.float32
        assert np.isfinite(out[key].numpy()).all()


@pytest.mark.parametrize("n,bin_size,batch", [(64, 16, 3), (224, 32, 2)])
def test_graph_layer_shape(n, bin_size, batch):
    cfg = small_cfg(bin_size=bin_size, output_dim=24)
    layer = L.CombinedGraphLayer(cfg, seed=3)
    x = tf.random.normal([batch, n, 10], seed=1)
    mask = tf.ones([batch, n, 1])
    assert tuple(layer(x, mask).shape) == (batch, n, 24)


@pytest.mark.parametrize("n,bin_size", [(64, 16), (256, 32), (96, 32)])
def test_binning_is_a_permutation_and_unbinning_restores_order(n, bin_size):
    cfg = small_cfg(bin_size=bin_size, max_num_bins=8)
    layer = L.CombinedGraphLayer(cfg, seed=5)
    x = tf.constant(random_events(3, n, n_real=n - 10, seed=2))
    mask = L.element_mask(x)
    layer(x, mask)  # build
    _, perm, inv = layer.binning(x, mask)
    perm, inv = perm.numpy(), inv.numpy()
    for b in range(3):
        assert np.array_equal(np.sort(perm[b]), np.arange(n))
        assert np.array_equal(perm[b][inv[b]], np.arange(n))
        # padded elements (the last 10) are sorted after every real element
        assert set(perm[b][-10:]) == set(range(n - 10, n))
    ids = tf.tile(tf.range(n, dtype=tf.float32)[None, :, None], [3, 1, 2])
    binned = L.to_bins(ids, tf.constant(perm), bin_size)
    assert tuple(binned.shape) == (3, n // bin_size, bin_size, 2)
    restored = L.from_bins(binned, tf.constant(inv)).numpy()
    assert np.array_equal(restored, ids.numpy())  # exact identity


def test_binning_uses_several_buckets_and_is_stable():
    bucket = tf.constant([[2, 0, 2, 1, 0, 5, 5, 1]])
    perm = L.bin_permutation(bucket).numpy()[0]
    assert perm.tolist() == [1, 4, 3, 7, 0, 2, 5, 6]
    coords = tf.random.normal([1, 256, 8], seed=4)
    proj = tf.random.normal([8, 4], seed=5)
    b = L.lsh_buckets(coords, proj, tf.ones([1, 256, 1]), bin_size=32).numpy()
    # 256 / 32 = 8 bins -> 4 projection columns -> 8 buckets, all used
    assert set(np.unique(b)) == set(range(8))


def test_adjacency_kernel_values_and_padding():
    coords = tf.constant([[[[0.0, 0.0], [3.0, 4.0], [0.0, 1.0]]]])  # one bin of 3
    mask = tf.constant([[[[1.0], [1.0], [0.0]]]])
    adj = L.binned_adjacency(coords, mask, dist_mult=0.1, clip_value_low=0.0).numpy()[0, 0]
    assert adj[0, 1] == pytest.approx(np.exp(-0.5), rel=1e-5)
    assert adj[0, 0] == pytest.approx(np.exp(-0.1 * 1e-3), rel=1e-5)
    assert (adj[2] == 0).all() and (adj[:, 2] == 0).all()
    adj = L.binned_adjacency(coords, mask, dist_mult=1.0, clip_value_low=0.2).numpy()[0, 0]
    assert adj[0, 1] == pytest.approx(0.2)  # exp(-5) clipped up to 0.2


@pytest.mark.parametrize("bin_size", [16, 32])
def test_padding_does_not_change_real_elements_graph_layer(bin_size):
    cfg = small_cfg(bin_size=bin_size)
    layer = L.CombinedGraphLayer(cfg, seed=1)
    x = random_events(2, 40, seed=3)
    x_pad = np.concatenate([x, np.zeros((2, 88, 12), np.float32)], axis=1)
    x_pad[:, 40:, 1:] = 7.0  # garbage features in padded rows must not matter either
    n1, n2 = 48 if bin_size == 16 else 64, 128
    a = tf.constant(np.pad(x, [[0, 0], [0, n1 - 40], [0, 0]]))
    b = tf.constant(x_pad[:, :n2])
    out_a = layer(a, L.element_mask(a)).numpy()[:, :40]
    out_b = layer(b, L.element_mask(b)).numpy()[:, :40]
    np.testing.assert_allclose(out_a, out_b, atol=1e-5)


@pytest.mark.parametrize("bin_size,n,extra", [(16, 50, 30), (32, 100, 157)])
def test_padding_does_not_change_real_elements_full_model(bin_size, n, extra):
    model = build_model(small_cfg(bin_size=bin_size, num_graph_layers_common=2,
                                  num_node_messages=2))
    x = random_events(2, n, seed=4)
    x_pad = np.concatenate([x, np.zeros((2, extra, 12), np.float32)], axis=1)
    out_a = model(x, training=False)
    out_b = model(x_pad, training=False)
    for key in out_a:
        np.testing.assert_allclose(out_a[key].numpy(), out_b[key].numpy()[:, :n], atol=1e-5,
                                   err_msg=key)


def test_input_encoding_log_transform():
    X = np.zeros((1, 2, 12), np.float32)
    X[0, 0, :8] = [1, 10.0, 0.5, 0.0, 1.0, 20.0, 5.0, 15.0]   # tower
    X[0, 1, :10] = [2, 3.0, -1.0, 1.0, 0.0, 4.0, 2.0, 0.3, 0.4, -1.0]  # track
    f = L.InputEncoding.transform_features(tf.constant(X)).numpy()[0]
    assert f.shape == (2, 14)
    np.testing.assert_allclose(f[0, :3], [0, 1, 0])
    np.testing.assert_allclose(f[0, 3:10], np.array(
        [np.log1p(10), 0.5, 0, 1, np.log1p(20), np.log1p(5), np.log1p(15)]), rtol=1e-6)
    np.testing.assert_allclose(f[1, :3], [0, 0, 1])
    # track: pT and p logged, eta_outer / sin phi_outer / charge kept
    np.testing.assert_allclose(f[1, 3:13], np.array(
        [np.log1p(3), -1, 1, 0, np.log1p(4), 2.0, 0.3, 0.4, -1.0, 0]), rtol=1e-6)


@pytest.mark.parametrize("field,value,message", [
    ("bin_size", 1, "--model.bin_size=1: must be >= 2"),
    ("dropout", 1.0, "--model.dropout=1.0: must be < 1"),
    ("clip_value_low", 1.0, "--model.clip_value_low=1.0: must be < 1"),
    ("dist_mult", 0.0, "--model.dist_mult=0.0: must be > 0"),
    ("max_num_bins", 7, "--model.max_num_bins=7: must be even"),
    ("activation", "sigmoid", "--model.activation='sigmoid': must be one of"),
    ("num_classes", 5, "--model.num_classes=5: must be one of 6"),
])
def test_config_validation_messages(field, value, message):
    with pytest.raises(ConfigError) as err:
        ModelConfig(**{field: value}).validate()
    assert str(err.value).startswith(message)
