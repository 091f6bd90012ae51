"""Training-speed options give the plain float32 step's numbers: permutation gradients of the
binning gathers, the adjacency kernel's hand-written gradient and recomputed graph layers
(--model.recompute)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from mlpf_tf.model import ModelConfig, build_model
from mlpf_tf.model.layers import (
    binned_adjacency,
    binned_adjacency_fused,
    from_bins,
    inverse_permutation,
    permute,
    to_bins,
)
from tests.unit.test_network import batch  # also fixes the thread pools

#: relative tolerance of losses and gradients between float32 variants of one step
#: (recomputation reorders nothing, so differences are float32 rounding at most)
GRAD_RTOL = 1e-5


def small_cfg(**kw) -> ModelConfig:
    base = dict(hidden_dim=16, distance_dim=8, ffn_dist_hidden_dim=16, output_dim=16,
                head_hidden_dim=16, bin_size=8, num_graph_layers_common=2,
                num_graph_layers_energy=1, num_node_messages=2)
    base.update(kw)
    return ModelConfig(**base)


def random_perm(b: int, n: int, seed: int) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    return tf.constant(np.stack([rng.permutation(n) for _ in range(b)]).astype(np.int32))


def test_permute_values_and_gradient_equal_the_generic_gather():
    x = tf.random.stateless_normal([3, 24, 5], seed=[1, 2])
    perm = random_perm(3, 24, 0)
    inv = inverse_permutation(perm)
    upstream = tf.random.stateless_normal([3, 24, 5], seed=[3, 4])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        plain = tf.gather(x, perm, batch_dims=1)
        fast = permute(x, perm, inv)
        loss_plain = tf.reduce_sum(plain * upstream)
        loss_fast = tf.reduce_sum(fast * upstream)
    np.testing.assert_array_equal(fast.numpy(), plain.numpy())
    g_plain = tf.convert_to_tensor(tape.gradient(loss_plain, x))
    g_fast = tape.gradient(loss_fast, x)
    np.testing.assert_array_equal(g_fast.numpy(), g_plain.numpy())
    # the gradient of a permutation is the inverse permutation of the upstream gradient
    np.testing.assert_array_equal(g_fast.numpy()[0, perm[0].numpy()], upstream.numpy()[0])


def test_bins_round_trip_with_permutation_gradients():
    x = tf.random.stateless_normal([2, 16, 3], seed=[5, 6])
    perm = random_perm(2, 16, 1)
    inv = inverse_permutation(perm)
    with tf.GradientTape() as tape:
        tape.watch(x)
        xb = to_bins(x, perm, 4, inv)
        back = from_bins(xb * 2.0, inv, perm)
    assert xb.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(back.numpy(), 2.0 * x.numpy())
    np.testing.assert_array_equal(tape.gradient(back, x).numpy(), np.full((2, 16, 3), 2.0))


@pytest.mark.parametrize("clip_value_low", [0.0, 0.3])
def test_fused_adjacency_values_and_gradient_equal_autodiff(clip_value_low):
    rng = np.random.default_rng(7)
    c = rng.normal(size=(2, 3, 8, 4)).astype(np.float32) * 3.0
    c[0, 0, 1] = c[0, 0, 0]  # coincident points: d2 below 1e-6, no gradient through it
    m = np.ones((2, 3, 8, 1), np.float32)
    m[1, 2, 5:] = 0.0  # padding
    c, m = tf.constant(c), tf.constant(m)
    upstream = tf.constant(rng.normal(size=(2, 3, 8, 8)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(c)
        plain = binned_adjacency(c, m, 0.2, clip_value_low)
        fused = binned_adjacency_fused(c, m, 0.2, clip_value_low)
        loss_plain = tf.reduce_sum(plain * upstream)
        loss_fused = tf.reduce_sum(fused * upstream)
    np.testing.assert_array_equal(fused.numpy(), plain.numpy())
    if clip_value_low:
        assert np.any(plain.numpy() == np.float32(clip_value_low))  # clipping is exercised
    g_plain = tape.gradient(loss_plain, c).numpy()
    g_fused = tape.gradient(loss_fused, c).numpy()
    assert np.max(np.abs(g_plain)) > 0.1
    # Both gradients suffer float32 cancellation in |c_i|^2 + |c_j|^2 - 2 c_i.c_j: against a
    # float64 computation both were ~1e-4 off at |c| ~ 5 (plain 1.4e-4, fused 1.1e-4 of a
    # largest entry 0.42), so they agree to 1e-3 of the largest entry, not to GRAD_RTOL.
    np.testing.assert_allclose(g_fused, g_plain, rtol=0,
                               atol=1e-3 * np.max(np.abs(g_plain)))


def step_loss_and_grads(model, X, y, w):
    """The plain training step's loss and gradients (as numpy), in one tf.function."""

    @tf.function
    def step(X, y, w):
        with tf.GradientTape() as tape:
            loss = model.mlpf_loss(y, model(X, training=True), w)["loss"]
        return loss, tape.gradient(loss, model.trainable_variables)

    loss, grads = step(tf.constant(X), tf.constant(y), tf.constant(w))
    return float(loss), [g.numpy() for g in grads]


@pytest.mark.parametrize("variant", ["improved", "reference"])
def test_recompute_gives_the_same_loss_and_gradients(variant):
    X, y, w = batch(3, 40, seed=2)
    plain = build_model(small_cfg(variant=variant))
    fast = build_model(small_cfg(variant=variant, recompute=True))
    fast.set_weights(plain.get_weights())
    loss_a, grads_a = step_loss_and_grads(plain, X, y, w)
    loss_b, grads_b = step_loss_and_grads(fast, X, y, w)
    assert loss_b == pytest.approx(loss_a, rel=GRAD_RTOL)
    assert len(grads_a) == len(grads_b) == len(plain.trainable_variables)
    scale = max(float(np.max(np.abs(g))) for g in grads_a)
    for v, ga, gb in zip(plain.trainable_variables, grads_a, grads_b):
        np.testing.assert_allclose(gb, ga, rtol=GRAD_RTOL, atol=GRAD_RTOL * scale,
                                   err_msg=v.name)


def test_recompute_changes_nothing_at_inference():
    X, _, _ = batch(2, 30, seed=3)
    plain = build_model(small_cfg())
    fast = build_model(small_cfg(recompute=True))
    fast.set_weights(plain.get_weights())
    a, b = plain(X, training=False), fast(X, training=False)
    for k in a:
        np.testing.assert_array_equal(b[k].numpy(), a[k].numpy(), err_msg=k)



def test_reference_heads_fold_the_repeated_regression_features():
    """The energy/pT heads' first layer on [h, reg once, logits] with the folded kernel equals
    the Dense layer on the reference's [h, reg with every output twice, logits]."""
    model = build_model(small_cfg(variant="reference", num_graph_layers_energy=3))
    heads = model.heads
    dense = heads.energy_head.layers[0]
    rng = np.random.default_rng(9)
    h_cls = tf.constant(rng.normal(size=(2, 5, dense.kernel.shape[0] - 6 * 16 - 6)),
                        tf.float32)
    outs = [tf.constant(rng.normal(size=(2, 5, 16)), tf.float32) for _ in range(3)]
    logits = tf.constant(rng.normal(size=(2, 5, 6)), tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(outs)
        repeated = dense(tf.concat([h_cls] + [o for o in outs for _ in (0, 1)] + [logits], -1))
        folded = heads.folded_first_layer(heads.energy_head, h_cls, tf.concat(outs, -1), logits)
        loss_r, loss_f = tf.reduce_sum(repeated ** 2), tf.reduce_sum(folded ** 2)
    np.testing.assert_allclose(folded.numpy(), repeated.numpy(), rtol=GRAD_RTOL, atol=1e-5)
    for a, b in zip(tape.gradient(loss_f, [dense.kernel] + outs),
                    tape.gradient(loss_r, [dense.kernel] + outs)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4,
                                   atol=1e-4 * float(np.max(np.abs(b.numpy()))))
