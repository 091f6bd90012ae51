"""MLPF loss: classification, charge and kinematic regression, normalised per event.

Components (each a per-element loss, see :class:`MLPFLoss`):
  cls      categorical cross-entropy of the class logits, over real elements (w > 0);
  charge   squared error of the predicted charge, over real elements;
  pt, energy   Huber (delta 1.0) over elements with a true particle (class != 0); with
           ``log_energy`` (default) on log1p(value) so that GeV and TeV particles weigh alike
           and the gradients stay O(1); the model's outputs stay in GeV;
  eta, sin_phi, cos_phi   Huber (delta 0.1) over elements with a true particle.

Normalisation: every component is first averaged over the selected elements of each event
(an event without such elements contributes 0), then averaged over the events of the batch.
The batch loss is therefore the mean of per-event losses, and averaging the gradients of
R ranks with b events each equals one rank with R * b events exactly (data-parallel training
does not change the objective). Padding (w = 0) never enters.

:class:`ReferenceLoss` is the reference study's objective (``variant=reference``): Keras losses
with per-element sample weights and the default sum-over-batch-size reduction, i.e. every
component is sum over the batch's elements of weight x loss, divided by B x N (N the padded
number of elements, padding included):
  cls      categorical cross-entropy, weight 1 on real elements;
  charge   squared error, weight 1 on elements with a true particle;
  pt, energy   Huber in GeV (delta 1.0), same elements;  eta, sin_phi, cos_phi   Huber (0.1).
(The reference config also names an ``inverse_sqrt`` class weight taken from a per-element
weight of its external dataset builder; the issue fixes the objective as unweighted.)
"""

from __future__ import annotations

import tensorflow as tf

from mlpf_tf.data import schema

#: output key -> (target column, Huber delta); cls and charge are handled separately
REGRESSION = {
    "pt": (schema.T_PT, 1.0),
    "eta": (schema.T_ETA, 0.1),
    "sin_phi": (schema.T_SIN_PHI, 0.1),
    "cos_phi": (schema.T_COS_PHI, 0.1),
    "energy": (schema.T_E, 1.0),
}
COMPONENTS = ("cls", "charge", "pt", "eta", "sin_phi", "cos_phi", "energy")
DEFAULT_WEIGHTS = {"cls": 1.0, "charge": 1.0, "pt": 100.0, "eta": 100.0, "sin_phi": 100.0,
                   "cos_phi": 100.0, "energy": 100.0}
LOG_SCALED = ("pt", "energy")


def huber(error: tf.Tensor, delta: float) -> tf.Tensor:
    """Elementwise Huber: 0.5 e^2 for |e| <= delta, delta * (|e| - 0.5 delta) beyond."""
    a = tf.abs(error)
    quad = tf.minimum(a, delta)
    return 0.5 * quad * quad + delta * (a - quad)


def log_scale(value: tf.Tensor) -> tf.Tensor:
    """log1p of a non-negative quantity (values below -0.99 are clamped to stay finite)."""
    return tf.math.log1p(tf.maximum(value, -0.99))


def per_event_mean(values: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """[B, N] values and weights -> [B]: weighted mean per event, 0 if all weights are 0."""
    return tf.math.divide_no_nan(tf.reduce_sum(values * weights, axis=-1),
                                 tf.reduce_sum(weights, axis=-1))


class MLPFLoss:
    """Weighted sum of the MLPF loss components.

    ``__call__(y, pred, w)`` with y [B, N, 7], pred the model's output dict and w [B, N] returns
    {"loss": weighted total, "cls_loss": ..., ..., "energy_loss": ...} (components unweighted,
    scalars, float32). ``per_event(y, pred, w)`` returns the same components as [B] tensors.
    """

    def __init__(self, weights: dict[str, float] | None = None, log_energy: bool = True):
        merged = dict(DEFAULT_WEIGHTS)
        if weights:
            unknown = sorted(set(weights) - set(COMPONENTS))
            if unknown:
                raise ValueError(f"unknown loss component(s) {unknown}; known: {COMPONENTS}")
            merged.update(weights)
        self.weights = {k: float(v) for k, v in merged.items()}
        self.log_energy = bool(log_energy)

    @classmethod
    def from_config(cls, cfg) -> MLPFLoss:
        """The loss a :class:`~mlpf_tf.model.config.ModelConfig` asks for (its variant's)."""
        if cfg.options().loss == "reference":
            return ReferenceLoss(cfg.loss_weights())
        return cls(cfg.loss_weights(), log_energy=cfg.log_energy_loss)

    def per_event(self, y, pred, w) -> dict[str, tf.Tensor]:
        """Unweighted components, each [B]: mean over the event's selected elements."""
        y = tf.cast(y, tf.float32)
        w = tf.cast(w, tf.float32)
        cls_true = tf.cast(tf.round(y[..., schema.T_CLS]), tf.int32)
        logits = tf.cast(pred["cls"], tf.float32)
        onehot = tf.one_hot(cls_true, tf.shape(logits)[-1], dtype=tf.float32)
        ce = tf.nn.softmax_cross_entropy_with_logits(labels=onehot, logits=logits)
        out = {"cls": per_event_mean(ce, w)}
        charge_err = tf.cast(pred["charge"][..., 0], tf.float32) - y[..., schema.T_CHARGE]
        out["charge"] = per_event_mean(tf.square(charge_err), w)
        particle = w * tf.cast(tf.not_equal(cls_true, schema.CLS_NONE), tf.float32)
        for key, (col, delta) in REGRESSION.items():
            p = tf.cast(pred[key][..., 0], tf.float32)
            t = y[..., col]
            if self.log_energy and key in LOG_SCALED:
                p, t = log_scale(p), log_scale(t)
            # Padded / class-0 rows may hold anything: zero their error before Huber.
            err = tf.where(particle > 0, p - t, tf.zeros_like(p))
            out[key] = per_event_mean(huber(err, delta), particle)
        return out

    def __call__(self, y, pred, w) -> dict[str, tf.Tensor]:
        per_event = self.per_event(y, pred, w)
        logs = {f"{k}_loss": tf.reduce_mean(v) for k, v in per_event.items()}
        logs["loss"] = tf.add_n([self.weights[k] * logs[f"{k}_loss"] for k in COMPONENTS])
        return {"loss": logs.pop("loss"), **logs}


class ReferenceLoss(MLPFLoss):
    """The reference objective (see the module docstring), same interface as MLPFLoss.

    ``per_event`` gives each event's sum of weighted element losses divided by the padded
    element count N, so the batch mean over events is the reference's sum / (B x N).
    """

    def __init__(self, weights: dict[str, float] | None = None):
        super().__init__(weights, log_energy=False)

    def per_event(self, y, pred, w) -> dict[str, tf.Tensor]:
        y = tf.cast(y, tf.float32)
        real = tf.cast(tf.cast(w, tf.float32) > 0, tf.float32)
        n_padded = tf.cast(tf.shape(real)[-1], tf.float32)

        def norm_sum(values, weights):
            return tf.reduce_sum(values * weights, axis=-1) / n_padded

        cls_true = tf.cast(tf.round(y[..., schema.T_CLS]), tf.int32)
        logits = tf.cast(pred["cls"], tf.float32)
        onehot = tf.one_hot(cls_true, tf.shape(logits)[-1], dtype=tf.float32)
        ce = tf.nn.softmax_cross_entropy_with_logits(labels=onehot, logits=logits)
        out = {"cls": norm_sum(ce, real)}
        particle = real * tf.cast(tf.not_equal(cls_true, schema.CLS_NONE), tf.float32)

        def error(key, col):
            err = tf.cast(pred[key][..., 0], tf.float32) - y[..., col]
            return tf.where(particle > 0, err, tf.zeros_like(err))

        out["charge"] = norm_sum(tf.square(error("charge", schema.T_CHARGE)), particle)
        for key, (col, delta) in REGRESSION.items():
            out[key] = norm_sum(huber(error(key, col), delta), particle)
        return out
