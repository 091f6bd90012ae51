"""Output heads of the MLPF network: class logits, charge and the particle kinematics.

Every head is an FFN. The regression heads see the class logits with gradients stopped (the
regression loss must not steer the classifier). Kinematics are predicted relative to the
element's own measurement, as in the reference model:
  eta, sin phi, cos phi = element value + predicted correction;
  E  = expm1(log1p(element E) + correction)   (the correction is learnt in log space);
  pT = expm1(log1p(E / cosh(eta)) + sigmoid(g) * c)   (derived from E and eta, plus a gated
       correction c with gate g).
All outputs are float32 (the last Dense of every head is float32 under mixed precision).

:class:`ReferenceHeads` are the heads of the reference Delphes model (``variant=reference``):
one LayerNorm on the classification features h; class logits from h (4 layers); charge from h
(2 layers); eta and phi from [h, logits] as the element's value + a correction (3 layers);
energy from [h, logits, regression stack, logits] directly per class in GeV, the predicted
class's value taken (3 layers); pT = stop_gradient(E / cosh eta) + sigmoid(g) * c from the same
input (3 layers). The reference's regression stack holds every graph layer's output twice; the
network passes each once and those two heads fold the kernel (:meth:`ReferenceHeads.
folded_first_layer`), which computes the same. Hidden widths halve from ``head_hidden_dim``; logits enter the regression
heads with gradients stopped.
"""

from __future__ import annotations

import tensorflow as tf

from mlpf_tf.data import schema
from mlpf_tf.model.layers import PlainCall, dense_ffn, element_mask

# Bounds of the log1p-space predictions: keeps expm1 finite (e^20 ~ 5e8 GeV) in float32.
LOG_MIN, LOG_MAX = -5.0, 20.0
OUTPUT_KEYS = ("cls", "charge", "pt", "eta", "sin_phi", "cos_phi", "energy")


class OutputHeads(PlainCall, tf.keras.layers.Layer):
    """Maps (X, classification features, regression features) to the output dict."""

    def __init__(self, cfg, **kwargs):
        super().__init__(**kwargs)

        def head(name, out_dim):
            return dense_ffn(name, cfg.head_hidden_dim, cfg.head_num_layers, out_dim,
                             cfg.activation, dropout=float(cfg.dropout),
                             layernorm=cfg.layernorm, out_dtype="float32")

        self.cls_head = head("cls_head", cfg.num_classes)
        self.charge_head = head("charge_head", 1)
        self.eta_head = head("eta_head", 1)
        self.phi_head = head("phi_head", 2)
        self.energy_head = head("energy_head", 1)
        self.pt_head = head("pt_head", 2)

    def call(self, X, cls_features, reg_features, training=None):
        X = tf.cast(X, tf.float32)
        logits = tf.cast(self.cls_head(cls_features, training=training), tf.float32)
        reg_in = tf.concat(
            [reg_features, tf.cast(tf.stop_gradient(logits), reg_features.dtype)], axis=-1)

        def run(h):
            return tf.cast(h(reg_in, training=training), tf.float32)

        charge = run(self.charge_head)
        eta = X[..., schema.F_ETA:schema.F_ETA + 1] + run(self.eta_head)
        dphi = run(self.phi_head)
        sin_phi = X[..., schema.F_SIN_PHI:schema.F_SIN_PHI + 1] + dphi[..., :1]
        cos_phi = X[..., schema.F_COS_PHI:schema.F_COS_PHI + 1] + dphi[..., 1:]
        e_elem = tf.maximum(X[..., schema.F_E:schema.F_E + 1], 0.0)
        log_e = tf.math.log1p(e_elem) + run(self.energy_head)
        energy = tf.math.expm1(tf.clip_by_value(log_e, LOG_MIN, LOG_MAX))
        pt_from_e = tf.maximum(energy, 0.0) / tf.cosh(tf.clip_by_value(eta, -10.0, 10.0))
        gate_corr = run(self.pt_head)
        log_pt = tf.math.log1p(pt_from_e) + tf.sigmoid(gate_corr[..., :1]) * gate_corr[..., 1:]
        pt = tf.math.expm1(tf.clip_by_value(log_pt, LOG_MIN, LOG_MAX))
        return {"cls": logits, "charge": charge, "pt": pt, "eta": eta, "sin_phi": sin_phi,
                "cos_phi": cos_phi, "energy": energy}


class ReferenceHeads(PlainCall, tf.keras.layers.Layer):
    """The reference model's output heads (see the module docstring); same outputs as
    :class:`OutputHeads`, every output zero on padded elements."""

    #: head -> (hidden layers, outputs); widths halve from head_hidden_dim
    LAYOUT = {"cls_head": (4, None), "charge_head": (2, 1), "eta_head": (3, 2),
              "phi_head": (3, 4), "energy_head": (3, None), "pt_head": (3, 2)}

    def __init__(self, cfg, **kwargs):
        super().__init__(**kwargs)
        self.norm = tf.keras.layers.LayerNormalization(name="cls_features_norm")
        self.reg_width = int(cfg.output_dim)
        for name, (depth, out) in self.LAYOUT.items():
            setattr(self, name, dense_ffn(name, cfg.head_hidden_dim, depth,
                                          out or cfg.num_classes, cfg.activation,
                                          dropout=float(cfg.dropout), out_dtype="float32",
                                          halving=True))

    #: the reference concatenates every regression-stack output twice into the input of the
    #: energy and pT heads; ``reg_features`` holds each once and their first layer adds the
    #: two kernel blocks instead (the same function with 1/3 fewer multiply-adds there)
    REG_REPEAT = 2

    def folded_first_layer(self, head, h_cls, reg_features, logits):
        """First layer of ``head`` on the reference's input [h_cls, reg_features with every
        regression output repeated REG_REPEAT times, logits], computed as
        ``concat([h_cls, reg_features, logits]) @ folded kernel``: the kernel rows of the
        repeated copies of each regression output are summed."""
        n_cls, n_reg = h_cls.shape[-1], reg_features.shape[-1]
        end = n_cls + self.REG_REPEAT * n_reg
        if not head.built:  # create the weights for the reference's (repeated) input width
            head(tf.zeros([1, end + logits.shape[-1]], h_cls.dtype))
        dense = head.layers[0]
        kernel = tf.cast(dense.kernel, h_cls.dtype)
        blocks = tf.reshape(kernel[n_cls:end], [n_reg // self.reg_width, self.REG_REPEAT,
                                                self.reg_width, -1])
        folded = tf.concat([kernel[:n_cls], tf.reshape(tf.reduce_sum(blocks, axis=1),
                                                       [n_reg, -1]), kernel[end:]], axis=0)
        x = tf.concat([h_cls, reg_features, logits], axis=-1)
        y = tf.tensordot(x, folded, axes=[[x.shape.rank - 1], [0]])
        return dense.activation(y + tf.cast(dense.bias, y.dtype))

    def call(self, X, cls_features, reg_features, training=None):
        X = tf.cast(X, tf.float32)
        mask = element_mask(X)

        def run(head, h):
            return tf.cast(head(h, training=training), tf.float32) * mask

        def run_folded(head):
            y = self.folded_first_layer(head, h_cls, reg, logits_in)
            for layer in head.layers[1:]:
                y = layer(y, training=training)
            return tf.cast(y, tf.float32) * mask

        h = self.norm(cls_features)
        logits = run(self.cls_head, h)
        hard_class = tf.stop_gradient(tf.nn.softmax(100.0 * logits, axis=-1))
        charge = run(self.charge_head, h)
        h_cls = tf.concat([h, tf.cast(tf.stop_gradient(logits), h.dtype)], axis=-1)
        eta = X[..., schema.F_ETA:schema.F_ETA + 1] + run(self.eta_head, h_cls)[..., 1:2]
        dphi = run(self.phi_head, h_cls)
        sin_phi = X[..., schema.F_SIN_PHI:schema.F_SIN_PHI + 1] * mask + dphi[..., 1:2]
        cos_phi = X[..., schema.F_COS_PHI:schema.F_COS_PHI + 1] * mask + dphi[..., 3:4]
        reg = tf.cast(reg_features, h.dtype)
        logits_in = tf.cast(tf.stop_gradient(logits), h.dtype)
        energy = tf.reduce_sum(hard_class * run_folded(self.energy_head), axis=-1,
                               keepdims=True)
        pt_base = tf.stop_gradient(energy / tf.cosh(tf.clip_by_value(eta, -8.0, 8.0)))
        gate_corr = run_folded(self.pt_head)
        pt = pt_base + tf.sigmoid(gate_corr[..., :1]) * gate_corr[..., 1:]
        out = {"cls": logits, "charge": charge, "pt": pt, "eta": eta, "sin_phi": sin_phi,
               "cos_phi": cos_phi, "energy": energy}
        return {k: v * mask for k, v in out.items()}
