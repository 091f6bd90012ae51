"""Building blocks of the MLPF graph network: input encoding, LSH binning, message passing.

Shapes: B events, N elements (already padded to a multiple of ``bin_size`` by the network),
F features. ``mask`` is [B, N, 1] with 1 for real elements and 0 for padding.

Graph construction follows the reference "PFNetDense": an FFN maps every element to a learned
``distance_dim`` space, a fixed random projection hashes it into buckets (bucket = argmax over
[xW, -xW]), elements are sorted by bucket and cut into equal bins of ``bin_size``, and inside a
bin every pair is connected with a Gaussian-kernel weight. Work and memory are O(N * bin_size).

Padding never influences real elements: padded elements are sorted after all real ones, their
adjacency rows and columns are zero, and the number of buckets an event uses depends only on
its count of real elements, so appending padding leaves the real elements' bins unchanged.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from mlpf_tf.data import schema

# Feature columns regressed / encoded in log1p space (energies and momenta span decades).
_LOG_COLUMNS_ALL = (schema.F_PT, schema.F_E)
_LOG_COLUMNS_TOWER = (schema.F_E_EM, schema.F_E_HAD)


class PlainCall:
    """Mixin: trace ``call`` as plain Python instead of converting it with AutoGraph.

    The model's ``call`` methods have no data-dependent Python control flow, so AutoGraph's
    source transformation only costs time: it was about a third of the first-step tracing
    time of the small model. (Keras 2 converts subclassed layers' ``call`` through the
    ``_autographed_call`` hook, which this overrides.)
    """

    def _autographed_call(self):
        return self.call


def element_mask(X: tf.Tensor) -> tf.Tensor:
    """[B, N, 1] float mask: 1 where the element type (column 0) is not padding."""
    return tf.cast(tf.not_equal(X[..., schema.F_TYPE:schema.F_TYPE + 1], 0.0), tf.float32)


def dense_ffn(name: str, hidden_dim: int, num_layers: int, out_dim: int, activation: str,
              dropout: float = 0.0, layernorm: bool = False,
              out_dtype: str | None = None, halving: bool = False) -> tf.keras.Sequential:
    """``num_layers`` x (Dense + activation [+ LayerNorm] [+ Dropout]) then a linear Dense.

    ``halving``: hidden widths hidden_dim, hidden_dim / 2, hidden_dim / 4, ... (the reference
    heads); otherwise every hidden layer is ``hidden_dim`` wide.
    """
    layers = []
    width = int(hidden_dim)
    for i in range(num_layers):
        layers.append(tf.keras.layers.Dense(width, activation=activation,
                                            name=f"{name}_dense{i}"))
        if layernorm:
            layers.append(tf.keras.layers.LayerNormalization(name=f"{name}_ln{i}"))
        if dropout > 0:
            layers.append(tf.keras.layers.Dropout(dropout, name=f"{name}_dropout{i}"))
        if halving:
            width = max(1, width // 2)
    kwargs = {"dtype": out_dtype} if out_dtype else {}
    layers.append(tf.keras.layers.Dense(out_dim, name=f"{name}_out", **kwargs))
    return tf.keras.Sequential(layers, name=name)


class InputEncoding(PlainCall, tf.keras.layers.Layer):
    """One-hot element type + (transformed) features [+ a learned projection to ``hidden_dim``].

    With ``log_inputs``: pT and E (all types) and E_em / E_had (towers) become
    sign * log1p(|x|), so that values spanning several decades enter the network at O(1); the
    other features (eta, sin/cos phi, charge, flags) are already O(1). With ``learned``, a Dense
    layer with the activation then learns the encoding (the improved variant); without, the 14
    columns go to the graph layers as they are (the reference). Padded elements encode to a
    constant vector and are masked downstream.
    """

    def __init__(self, hidden_dim: int, activation: str, log_inputs: bool = True,
                 learned: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.log_inputs = bool(log_inputs)
        self.proj = (tf.keras.layers.Dense(hidden_dim, activation=activation, name="proj")
                     if learned else None)

    @staticmethod
    def transform_features(X: tf.Tensor, log_inputs: bool = True) -> tf.Tensor:
        """[B, N, 12] -> [B, N, 3 + 11]: one-hot(type) and the (transformed) other features."""
        X = tf.cast(X, tf.float32)
        etype = tf.cast(tf.round(X[..., schema.F_TYPE]), tf.int32)
        onehot = tf.one_hot(etype, schema.NUM_ELEMENT_TYPES, dtype=tf.float32)
        if not log_inputs:
            return tf.concat([onehot, X[..., 1:]], axis=-1)
        is_tower = tf.cast(tf.equal(etype, schema.ELEM_TOWER), tf.float32)[..., None]
        logged = tf.sign(X) * tf.math.log1p(tf.abs(X))
        cols = np.zeros(schema.NUM_FEATURES, dtype=np.float32)
        cols[list(_LOG_COLUMNS_ALL)] = 1.0
        tower_cols = np.zeros(schema.NUM_FEATURES, dtype=np.float32)
        tower_cols[list(_LOG_COLUMNS_TOWER)] = 1.0
        use_log = tf.clip_by_value(cols + is_tower * tower_cols, 0.0, 1.0)
        feats = use_log * logged + (1.0 - use_log) * X
        return tf.concat([onehot, feats[..., 1:]], axis=-1)

    def call(self, X):
        feats = self.transform_features(X, self.log_inputs)
        return feats if self.proj is None else self.proj(feats)


def lsh_buckets(coords: tf.Tensor, projection: tf.Tensor, mask: tf.Tensor,
                bin_size: int, bins_from_real: bool = True) -> tf.Tensor:
    """LSH bucket of every element, [B, N] int32; padding gets bucket ``num_buckets``.

    ``projection`` is [distance_dim, max_num_bins // 2]. An event with n real elements uses
    nb = clip(ceil(n / bin_size), 1, max_num_bins) buckets: the first max(1, nb // 2) projection
    columns and their negatives; bucket = argmax over [xW, -xW] restricted to those columns.
    Without ``bins_from_real`` n is the padded size N (the reference: N / bin_size buckets).
    """
    half_max = projection.shape[-1]
    proj = tf.matmul(coords, tf.cast(projection, coords.dtype))  # [B, N, half_max]
    proj = tf.cast(proj, tf.float32)
    scores = tf.concat([proj, -proj], axis=-1)  # [B, N, 2 * half_max]
    if bins_from_real:
        n_real = tf.reduce_sum(mask[..., 0], axis=-1)  # [B]
    else:
        n_real = tf.cast(tf.shape(mask)[1], tf.float32) * tf.ones_like(mask[:, 0, 0])
    n_bins = tf.clip_by_value(tf.math.ceil(n_real / bin_size), 1.0, float(2 * half_max))
    half = tf.maximum(tf.math.floordiv(n_bins, 2.0), 1.0)  # [B]
    col = tf.cast(tf.range(half_max), tf.float32)
    col_ok = tf.cast(col[None, :] < half[:, None], tf.float32)  # [B, half_max]
    col_ok = tf.concat([col_ok, col_ok], axis=-1)[:, None, :]  # [B, 1, 2 * half_max]
    scores = scores * col_ok + (col_ok - 1.0) * 1e9
    bucket = tf.argmax(scores, axis=-1, output_type=tf.int32)
    is_real = tf.cast(mask[..., 0], tf.int32)
    return bucket * is_real + (1 - is_real) * (2 * half_max)


def bin_permutation(bucket: tf.Tensor) -> tf.Tensor:
    """Stable sort of elements by bucket, [B, N] int32 permutation (position-tiebroken keys)."""
    n = tf.shape(bucket)[-1]
    key = bucket * n + tf.range(n, dtype=tf.int32)[None, :]
    return tf.argsort(key, axis=-1, stable=True)


def inverse_permutation(perm: tf.Tensor) -> tf.Tensor:
    """Inverse of a batch of permutations [B, N]: ``gather(gather(x, perm), inv) == x``."""
    return tf.argsort(perm, axis=-1, stable=True)


def permute(x: tf.Tensor, perm: tf.Tensor, inv_perm: tf.Tensor) -> tf.Tensor:
    """``tf.gather(x, perm, batch_dims=1)`` for a batch of permutations, [B, N, F].

    Its gradient is the gather of the upstream gradient by the inverse permutation
    ``inv_perm``: every element receives exactly one value, so no IndexedSlices and no
    UnsortedSegmentSum (the generic gather gradient) are built. The values are identical.
    """

    @tf.custom_gradient
    def gather(values):
        def grad(upstream):
            return tf.gather(upstream, inv_perm, batch_dims=1)

        return tf.gather(values, perm, batch_dims=1), grad

    return gather(x)


def to_bins(x: tf.Tensor, perm: tf.Tensor, bin_size: int,
            inv_perm: tf.Tensor | None = None) -> tf.Tensor:
    """Gather [B, N, F] in ``perm`` order and split into bins: [B, N // bin_size, bin_size, F].

    With ``inv_perm`` (the inverse of ``perm``) the gradient is a permutation gather
    (:func:`permute`) instead of the generic gather gradient.
    """
    xs = (tf.gather(x, perm, batch_dims=1) if inv_perm is None
          else permute(x, perm, inv_perm))
    shape = tf.shape(x)
    return tf.reshape(xs, tf.stack([shape[0], -1, bin_size, shape[-1]]))


def from_bins(xb: tf.Tensor, inv_perm: tf.Tensor, perm: tf.Tensor | None = None) -> tf.Tensor:
    """Undo :func:`to_bins`: [B, nb, bin_size, F] -> [B, N, F] in the original element order.

    With ``perm`` the gradient is the gather by ``perm`` (:func:`permute`)."""
    shape = tf.shape(xb)
    flat = tf.reshape(xb, tf.stack([shape[0], -1, shape[-1]]))
    if perm is None:
        return tf.gather(flat, inv_perm, batch_dims=1)
    return permute(flat, inv_perm, perm)


def binned_adjacency(coords_b: tf.Tensor, mask_b: tf.Tensor, dist_mult: float,
                     clip_value_low: float) -> tf.Tensor:
    """Gaussian-kernel adjacency inside every bin, [B, nb, bs, bs], zero rows/cols for padding.

    a_ij = clip(exp(-dist_mult * |x_i - x_j|), clip_value_low, 1) * m_i * m_j, computed in
    float32 (coordinates may be large under float16).
    """
    c = tf.cast(coords_b, tf.float32)
    sq = tf.reduce_sum(c * c, axis=-1)  # [B, nb, bs]
    d2 = sq[..., :, None] + sq[..., None, :] - 2.0 * tf.matmul(c, c, transpose_b=True)
    dist = tf.sqrt(tf.maximum(d2, 1e-6))
    adj = tf.clip_by_value(tf.exp(-dist_mult * dist), clip_value_low, 1.0)
    m = mask_b[..., 0]
    return adj * m[..., :, None] * m[..., None, :]


def binned_adjacency_fused(coords_b: tf.Tensor, mask_b: tf.Tensor, dist_mult: float,
                           clip_value_low: float) -> tf.Tensor:
    """:func:`binned_adjacency` with a hand-written gradient (same values, same gradient up to
    float rounding) that keeps one [B, nb, bs, bs] tensor for the backward pass instead of the
    six or so that automatic differentiation of the kernel keeps.

    With H = dL/d(d2) = dL/da * da/d(d2), the local derivative stored in the forward pass,
    da_ij/d(d2_ij) = m_i m_j [clip_low <= e_ij <= 1] [d2_ij >= 1e-6] * (-dist_mult e_ij) /
    (2 dist_ij) with e = exp(-dist_mult * dist), and S = H + H^T:
    dL/dc_i = 2 (sum_j S_ij) c_i - 2 (S c)_i  (from d2_ij = |c_i|^2 + |c_j|^2 - 2 c_i.c_j).
    The mask gets no gradient.
    """
    m = tf.cast(mask_b[..., 0], tf.float32)
    pair = m[..., :, None] * m[..., None, :]

    @tf.custom_gradient
    def kernel(c):
        sq = tf.reduce_sum(c * c, axis=-1)
        d2 = sq[..., :, None] + sq[..., None, :] - 2.0 * tf.matmul(c, c, transpose_b=True)
        dist = tf.sqrt(tf.maximum(d2, 1e-6))
        e = tf.exp(-dist_mult * dist)
        adj = tf.clip_by_value(e, clip_value_low, 1.0) * pair
        passes = (d2 >= 1e-6) & (e >= clip_value_low) & (e <= 1.0)
        local = tf.where(passes, (-0.5 * dist_mult) * e / dist, 0.0) * pair

        def grad(upstream):
            h = upstream * local
            s = h + tf.linalg.matrix_transpose(h)
            return 2.0 * (tf.reduce_sum(s, axis=-1, keepdims=True) * c - tf.matmul(s, c))

        return adj, grad

    return kernel(tf.cast(coords_b, tf.float32))


class GatedMessagePassing(PlainCall, tf.keras.layers.Layer):
    """One round of gated message passing inside bins (heterogeneous graph convolution).

    out = act(g * A_norm (x W_msg) + (1 - g) * (x W_self [+ b_self])) * mask,
    g = sigmoid(x W_gate + b), with A_norm = D^-1/2 A D^-1/2 (D = degree_offset + degree) when
    ``normalize_degrees`` else A. The reference (GHConvDense) has no self bias, offset 1e-6 and
    N(0, 0.05) initial weights; the improved variant a self bias, offset 1 and Glorot.
    """

    def __init__(self, out_dim: int, activation: str, normalize_degrees: bool,
                 self_bias: bool = True, degree_offset: float = 1.0,
                 initializer: str = "glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.normalize_degrees = normalize_degrees
        self.degree_offset = float(degree_offset)

        def init():
            return tf.keras.initializers.get(initializer)

        self.w_msg = tf.keras.layers.Dense(out_dim, use_bias=False, name="msg",
                                           kernel_initializer=init())
        self.w_self = tf.keras.layers.Dense(out_dim, use_bias=self_bias, name="self",
                                            kernel_initializer=init())
        bias_init = "random_normal" if initializer == "random_normal" else "zeros"
        self.w_gate = tf.keras.layers.Dense(out_dim, name="gate", kernel_initializer=init(),
                                            bias_initializer=bias_init)
        self.act = tf.keras.activations.get(activation)

    def call(self, x_b, adj, mask_b):
        adj = tf.cast(adj, x_b.dtype)
        mask_b = tf.cast(mask_b, x_b.dtype)
        msg = self.w_msg(x_b) * mask_b
        if self.normalize_degrees:
            degree = tf.reduce_sum(adj, axis=-1, keepdims=True)  # [B, nb, bs, 1]
            norm = tf.math.rsqrt(degree + self.degree_offset) * mask_b
            agg = tf.matmul(adj, msg * norm) * norm
        else:
            agg = tf.matmul(adj, msg)
        gate = tf.sigmoid(self.w_gate(x_b))
        out = gate * agg + (1.0 - gate) * self.w_self(x_b)
        return self.act(out) * mask_b


class CombinedGraphLayer(PlainCall, tf.keras.layers.Layer):
    """Learned-distance FFN + LSH binning + message passing + unbinning (one graph layer).

    Input [B, N, F] (N a multiple of ``bin_size``) and mask [B, N, 1]; output [B, N, output_dim]
    in the input's element order. The LSH projection is a fixed, seeded, non-trainable weight.
    With ``cfg.layernorm`` the variant decides where the LayerNorm sits (output: improved;
    input: reference).
    """

    def __init__(self, cfg, seed: int, **kwargs):
        super().__init__(**kwargs)
        opts = cfg.options()
        self.norm_input = opts.graph_norm == "input"
        self.bins_from_real = opts.bins_from_real
        self.bin_size = int(cfg.bin_size)
        self.dist_mult = float(cfg.dist_mult)
        self.clip_value_low = float(cfg.clip_value_low)
        self.distance_dim = int(cfg.distance_dim)
        self.half_buckets = int(cfg.max_num_bins) // 2
        self.seed = int(seed)
        self.recompute = bool(cfg.recompute)
        rate = float(cfg.dropout) / 2.0
        self.ffn_dist = dense_ffn("ffn_dist", cfg.ffn_dist_hidden_dim, cfg.ffn_dist_num_layers,
                                  cfg.distance_dim, cfg.activation,
                                  dropout=rate if opts.dist_dropout else 0.0)
        self.messages = [
            GatedMessagePassing(cfg.output_dim, cfg.activation, cfg.normalize_degrees,
                                self_bias=opts.message_self_bias,
                                degree_offset=opts.degree_offset,
                                initializer=opts.message_initializer, name=f"message{i}")
            for i in range(cfg.num_node_messages)
        ]
        self.norm = (tf.keras.layers.LayerNormalization(name="layernorm")
                     if cfg.layernorm else None)
        self.dropout = tf.keras.layers.Dropout(rate, name="dropout") if rate > 0 else None

    def build(self, input_shape):
        rng = np.random.default_rng(self.seed)
        values = rng.standard_normal((self.distance_dim, self.half_buckets)).astype(np.float32)
        self.projection = self.add_weight(
            name="lsh_projection", shape=values.shape, dtype=tf.float32, trainable=False,
            initializer=tf.keras.initializers.Constant(values))
        super().build(input_shape)

    def adjacency(self, coords_b, mask_b, training=None):
        """:func:`binned_adjacency` of the binned coordinates, [B, nb, bs, bs]; in training
        with its hand-written gradient (:func:`binned_adjacency_fused`)."""
        kernel = binned_adjacency_fused if training else binned_adjacency
        with tf.name_scope("adjacency"):
            return kernel(coords_b, mask_b, self.dist_mult, self.clip_value_low)

    def binning(self, x, mask, training=None):
        """(coords [B,N,distance_dim], perm [B,N], inverse perm [B,N]) for input ``x``."""
        coords = self.ffn_dist(x, training=training)
        with tf.name_scope("lsh_sort"):
            bucket = lsh_buckets(coords, self.projection, mask, self.bin_size,
                                 self.bins_from_real)
            perm = bin_permutation(bucket)
            return coords, perm, inverse_permutation(perm)

    def call(self, x, mask, training=None):
        if self.norm is not None and self.norm_input:
            x = self.norm(x) * tf.cast(mask, x.dtype)
        coords, perm, inv = self.binning(x, mask, training)
        with tf.name_scope("to_bins"):
            mask_b = to_bins(mask, perm, self.bin_size)
            coords_b = to_bins(coords, perm, self.bin_size, inv)
            h = to_bins(x, perm, self.bin_size, inv)
        recompute = self.recompute and training
        if not recompute:
            adj = self.adjacency(coords_b, mask_b, training)
        for layer in self.messages:
            if recompute:
                # Only h, the coordinates and the mask are kept for the backward pass; the
                # N x bin_size adjacency and the messages are computed again there.
                h = tf.recompute_grad(
                    lambda h, c, m, layer=layer: layer(h, self.adjacency(c, m, True), m))(
                        h, coords_b, mask_b)
            else:
                h = layer(h, adj, mask_b)
            if self.dropout is not None:
                h = self.dropout(h, training=training)
        with tf.name_scope("from_bins"):
            out = from_bins(h, inv, perm)
        if self.norm is not None and not self.norm_input:
            out = self.norm(out)
        return out * tf.cast(mask, out.dtype)
