"""variant=reference: the Delphes PFNetDense of jpata/particleflow 0ea1460, weight by weight.

The shape table below was derived by reading the reference (``mlpf/tfmodel/model.py`` and
``parameters/delphes.yaml`` at commit 0ea146025d35), not by printing this project's model:
  * input: one-hot type (3) + 11 raw features = 14 columns, no encoding layer;
  * CombinedGraphLayer: ffn_dist = Dense(128, elu) + Dense(128) (ffn_dist_num_layers 1,
    hidden 128, distance_dim 128); GHConvDense(output_dim 256): theta, W_h (no bias), W_t + b_t;
    no layer norm; LSH codebook 128 x 50 (max_num_bins 100), not trainable;
  * classification features [input, c1, c2, c3] = 14 + 3 x 256 = 782, one LayerNorm;
  * regression features: each energy-stack output twice = 6 x 256 = 1536;
  * heads, widths halving from 256: cls 4 layers -> 6; charge 2 -> 1 (from 782);
    eta 3 -> 2, phi 3 -> 4 (from 782 + 6 logits); energy 3 -> 6, pT 3 -> 2
    (from 788 + 1536 + 6 logits = 2330).
Parameter counts do not depend on the padded event size: the model is built at 32 elements.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mlpf_tf.model import ModelConfig
from mlpf_tf.model.config import DELPHES_REFERENCE
from mlpf_tf.model.network import MLPFModel


def _ffn(name, n_in, widths, n_out):
    rows, prev = [], n_in
    for i, w in enumerate(widths):
        rows += [(f"{name}_dense{i}/kernel", (prev, w)), (f"{name}_dense{i}/bias", (w,))]
        prev = w
    return rows + [(f"{name}_out/kernel", (prev, n_out)), (f"{name}_out/bias", (n_out,))]


def _graph_layer(stack, i, n_in):
    msg = f"mlpf/cg_{stack}{i}/message0"
    return _ffn("ffn_dist", n_in, [128], 128) + [
        (f"{msg}/msg/kernel", (n_in, 256)), (f"{msg}/self/kernel", (n_in, 256)),
        (f"{msg}/gate/kernel", (n_in, 256)), (f"{msg}/gate/bias", (256,))]


#: (variable name, shape) of every trainable weight, in creation order
REFERENCE_TABLE = (
    [row for stack in ("common", "energy")
     for i, n_in in enumerate((14, 256, 256)) for row in _graph_layer(stack, i, n_in)]
    + [("mlpf/heads/cls_features_norm/gamma", (782,)),
       ("mlpf/heads/cls_features_norm/beta", (782,))]
    + _ffn("cls_head", 782, [256, 128, 64, 32], 6)
    + _ffn("charge_head", 782, [256, 128], 1)
    + _ffn("eta_head", 788, [256, 128, 64], 2)
    + _ffn("phi_head", 788, [256, 128, 64], 4)
    + _ffn("energy_head", 2330, [256, 128, 64], 6)
    + _ffn("pt_head", 2330, [256, 128, 64], 2)
)


@pytest.fixture(scope="module")
def reference_model():
    cfg = ModelConfig(**{**DELPHES_REFERENCE, "bin_size": 16})  # 640 -> 16: same weights
    model = MLPFModel(cfg)
    X = np.zeros((1, 32, 12), np.float32)
    X[0, :20, 0] = 1
    X[0, 20:28, 0] = 2
    model(X)
    return model


def _layer_weights(model, trainable):
    tracker_ids = {id(v) for m in model.metrics for v in m.variables}
    weights = model.trainable_weights if trainable else model.non_trainable_weights
    return [v for v in weights if id(v) not in tracker_ids]


def test_reference_parameter_counts(reference_model):
    trainable = sum(int(np.prod(v.shape)) for v in _layer_weights(reference_model, True))
    fixed = _layer_weights(reference_model, False)
    assert trainable == 3_285_841
    assert sum(int(np.prod(v.shape)) for v in fixed) == 38_400
    assert [tuple(v.shape) for v in fixed] == [(128, 50)] * 6
    assert all("lsh_projection" in v.name for v in fixed)


def test_reference_weights_match_the_table_layer_by_layer(reference_model):
    got = [(v.name.split(":")[0], tuple(v.shape))
           for v in _layer_weights(reference_model, True)]
    assert len(got) == len(REFERENCE_TABLE)
    for (name, shape), (want_name, want_shape) in zip(got, REFERENCE_TABLE):
        assert (name, shape) == (want_name, want_shape)
    assert sum(int(np.prod(s)) for _, s in REFERENCE_TABLE) == 3_285_841


def test_reference_inputs_are_raw_and_outputs_zero_on_padding(reference_model):
    X = np.zeros((1, 32, 12), np.float32)
    X[0, :3, 0] = [1, 2, 2]
    X[0, :3, 1] = [50.0, 3.0, 1000.0]
    enc = reference_model.encoding(tf.constant(X)).numpy()
    assert enc.shape == (1, 32, 14)
    np.testing.assert_allclose(enc[0, :3, :3], [[0, 1, 0], [0, 0, 1], [0, 0, 1]])
    np.testing.assert_allclose(enc[0, :3, 3], [50.0, 3.0, 1000.0])  # no log1p
    out = reference_model(X)
    for key, value in out.items():
        assert np.all(value.numpy()[0, 3:] == 0.0), key


def test_pt_base_carries_no_gradient(reference_model):
    """d pT / d(energy head) comes only through the gated correction: stopping the pT head's
    own gradient path leaves the energy head with no gradient from the pT output."""
    X = np.zeros((2, 32, 12), np.float32)
    rng = np.random.default_rng(1)
    X[:, :10, 0] = rng.integers(1, 3, (2, 10))
    X[:, :10, 1] = rng.exponential(5, (2, 10))
    X[:, :10, 2] = rng.uniform(-2, 2, (2, 10))
    X[:, :10, 5] = X[:, :10, 1] * np.cosh(X[:, :10, 2])
    heads = reference_model.heads
    with tf.GradientTape(persistent=True) as tape:
        out = reference_model(X, training=False)
        pt_sum = tf.reduce_sum(out["pt"])
        e_sum = tf.reduce_sum(out["energy"])
    g_pt = tape.gradient(pt_sum, heads.energy_head.trainable_variables)
    g_e = tape.gradient(e_sum, heads.energy_head.trainable_variables)
    g_eta = tape.gradient(pt_sum, heads.eta_head.trainable_variables)
    assert all(g is None or float(tf.reduce_max(tf.abs(g))) == 0.0 for g in g_pt)
    assert all(g is None or float(tf.reduce_max(tf.abs(g))) == 0.0 for g in g_eta)
    assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0.0 for g in g_e)
    g_gate = tape.gradient(pt_sum, heads.pt_head.trainable_variables)
    assert any(g is not None and float(tf.reduce_max(tf.abs(g))) > 0.0 for g in g_gate)


def test_improved_variant_is_the_default_and_unchanged():
    cfg = ModelConfig()
    assert cfg.variant == "improved"
    opts = cfg.options()
    assert opts.log_inputs and opts.input_encoding and opts.loss == "per_event"
    with pytest.raises(ValueError, match="variant"):
        ModelConfig(variant="paper").validate()
