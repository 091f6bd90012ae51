"""The MLPF graph network (reference "PFNetDense") as a Keras 2 model with its own train step.

Forward pass for X [B, N, 12]:
  1. pad N internally to a multiple of ``bin_size`` (padding rows are element type 0);
  2. encode every element (:class:`~mlpf_tf.model.layers.InputEncoding`);
  3. common stack: ``num_graph_layers_common`` CombinedGraphLayers; the classification head sees
     the encoding concatenated with every layer's output (skip connections);
  4. energy stack: ``num_graph_layers_energy`` CombinedGraphLayers on the encoding, same skips;
     the regression heads see it plus the class logits with gradients stopped;
  5. strip the internal padding: every output is [B, N, .] float32.

With ``variant=reference`` (see :mod:`mlpf_tf.model.variants`) step 2 is the one-hot type and
the raw features (14 columns, no learned layer), the energy stack's features are its layers'
outputs, which the reference takes twice (its concatenation; no input skip: the heads fold
the duplicate), and the heads are
:class:`~mlpf_tf.model.heads.ReferenceHeads`.

``train_step`` computes the loss with a plain GradientTape and hands the gradients to
``self.optimizer.apply_gradients``: a Horovod DistributedOptimizer plugged in by compile()
averages them there. With a LossScaleOptimizer (mixed precision) the loss is scaled and the
gradients unscaled around it. Logs are epoch means kept by Mean trackers (weighted by events
for the losses and by elements for the accuracies, so they are exact over uneven batches).
"""

from __future__ import annotations

import tensorflow as tf

from mlpf_tf.model.config import ModelConfig
from mlpf_tf.model.heads import OutputHeads, ReferenceHeads
from mlpf_tf.model.layers import CombinedGraphLayer, InputEncoding, PlainCall, element_mask
from mlpf_tf.model.losses import COMPONENTS, MLPFLoss
from mlpf_tf.model.metrics import batch_class_counts

LOSS_LOGS = ("loss",) + tuple(f"{k}_loss" for k in COMPONENTS)
METRIC_LOGS = ("accuracy", "particle_accuracy")


class MLPFModel(PlainCall, tf.keras.Model):
    """MLPF graph network; ``model(X)`` returns the dict of outputs documented in heads.py."""

    def __init__(self, cfg: ModelConfig, **kwargs):
        kwargs.setdefault("name", "mlpf")
        super().__init__(**kwargs)
        cfg.validate()
        self.cfg = cfg
        self.bin_size = int(cfg.bin_size)
        opts = cfg.options()
        self.reference_layout = opts.head_layout == "reference"
        self.encoding = InputEncoding(cfg.hidden_dim, cfg.activation,
                                      log_inputs=opts.log_inputs, learned=opts.input_encoding,
                                      name="encoding")
        self.common_layers = [CombinedGraphLayer(cfg, seed=cfg.lsh_seed + i, name=f"cg_common{i}")
                              for i in range(cfg.num_graph_layers_common)]
        self.energy_layers = [
            CombinedGraphLayer(cfg, seed=cfg.lsh_seed + 1000 + i, name=f"cg_energy{i}")
            for i in range(cfg.num_graph_layers_energy)]
        self.heads = (ReferenceHeads(cfg, name="heads") if self.reference_layout
                      else OutputHeads(cfg, name="heads"))
        self.mlpf_loss = MLPFLoss.from_config(cfg)
        self._trackers = {name: tf.keras.metrics.Mean(name=name)
                          for name in LOSS_LOGS + METRIC_LOGS}
        self._infer_fn = None

    # --- forward ---------------------------------------------------------------------------------

    def _stack(self, layers, enc, mask, training, skip=True):
        """[enc (if skip), out_1, ..., out_L] of the graph layers."""
        h, feats = enc, [enc] if skip else []
        for layer in layers:
            h = layer(h, mask, training=training)
            feats.append(h)
        return tf.concat(feats, axis=-1)

    def call(self, X, training=False):
        X = tf.cast(X, tf.float32)
        n = tf.shape(X)[1]
        pad = tf.math.floormod(-n, self.bin_size)
        Xp = tf.pad(X, [[0, 0], [0, pad], [0, 0]])
        mask = element_mask(Xp)
        enc = self.encoding(Xp)
        enc = enc * tf.cast(mask, enc.dtype)
        cls_features = self._stack(self.common_layers, enc, mask, training)
        if self.reference_layout:  # no skip; the heads count each output twice (REG_REPEAT)
            reg_features = self._stack(self.energy_layers, enc, mask, training, skip=False)
        else:
            reg_features = self._stack(self.energy_layers, enc, mask, training)
        out = self.heads(Xp, cls_features, reg_features, training=training)
        return {k: v[:, :n] for k, v in out.items()}

    def infer(self, X):
        """``self(X, training=False)`` through one reusable tf.function (shape-relaxed)."""
        if self._infer_fn is None:
            self._infer_fn = tf.function(lambda x: self(x, training=False),
                                         reduce_retracing=True)
        return self._infer_fn(X)

    # --- training --------------------------------------------------------------------------------

    @property
    def metrics(self):
        return list(self._trackers.values())

    def _update_logs(self, X, y, w, pred, losses):
        n_events = tf.cast(tf.shape(X)[0], tf.float32)
        for name in LOSS_LOGS:
            self._trackers[name].update_state(losses[name], sample_weight=n_events)
        correct, real, correct_particles, particles = batch_class_counts(y, pred["cls"], w)
        self._trackers["accuracy"].update_state(
            tf.math.divide_no_nan(correct, real), sample_weight=real)
        self._trackers["particle_accuracy"].update_state(
            tf.math.divide_no_nan(correct_particles, particles), sample_weight=particles)
        return {name: t.result() for name, t in self._trackers.items()}

    @tf.autograph.experimental.do_not_convert
    def train_step(self, data):
        X, y, w = data
        optimizer = self.optimizer
        scaled = isinstance(optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
        with tf.GradientTape() as tape:
            pred = self(X, training=True)
            losses = self.mlpf_loss(y, pred, w)
            loss = losses["loss"]
            if self.losses:  # regularisation terms added by layers, if any
                loss = loss + tf.add_n(self.losses)
            loss_for_grad = optimizer.get_scaled_loss(loss) if scaled else loss
        variables = self.trainable_variables
        grads = tape.gradient(loss_for_grad, variables)
        if scaled:
            grads = optimizer.get_unscaled_gradients(grads)
        optimizer.apply_gradients(
            [(g, v) for g, v in zip(grads, variables) if g is not None])
        return self._update_logs(X, y, w, pred, losses)

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data):
        X, y, w = data
        pred = self(X, training=False)
        losses = self.mlpf_loss(y, pred, w)
        return self._update_logs(X, y, w, pred, losses)

    @tf.autograph.experimental.do_not_convert
    def predict_step(self, data):
        X = data[0] if isinstance(data, (tuple, list)) else data
        return self(X, training=False)

    def get_config(self):
        return {"cfg": self.cfg.to_dict(), "name": self.name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        return cls(ModelConfig.from_dict(config.pop("cfg")), **config)


def build_model(cfg: ModelConfig | None = None) -> MLPFModel:
    """Validated config -> built MLPFModel (weights created by one call on a dummy event, so
    Horovod can broadcast them and checkpoints can be loaded before training)."""
    cfg = cfg if cfg is not None else ModelConfig()
    cfg.validate()
    model = MLPFModel(cfg)
    dummy = tf.zeros([1, cfg.bin_size, 12], tf.float32)
    dummy = tf.tensor_scatter_nd_update(dummy, [[0, 0, 0]], [1.0])  # one tower element
    model(dummy, training=False)
    return model
