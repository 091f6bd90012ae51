"""ModelConfig: every hyperparameter of the MLPF graph network, validated.

The fields cover the reference MLPF search space (layernorm, ffn_dist_hidden_dim,
ffn_dist_num_layers, distance_dim, num_node_messages, num_graph_layers_common/_energy, dropout,
bin_size, clip_value_low, dist_mult, normalize_degrees, output_dim) plus the widths, activation,
heads and loss weights. Defaults describe a SMALL model that trains an epoch of 1000 synthetic
events of a few hundred elements in well under a minute on two CPU cores; the reference Delphes
values are given in each help text.

Training-loop settings (learning rate, batch size, decay, mixed precision) live in the training
configuration, not here.

Two designs (``variant``, see :mod:`mlpf_tf.model.variants`): ``improved`` (default, this
project's network) and ``reference`` (the Delphes "PFNetDense" the study tuned, with its
objective). Some fields mean slightly different things in the two: ``layernorm`` normalises
every graph layer output and head layer (improved) or every graph layer's input (reference,
which always normalises the classification features once before the heads); the head sizes
``head_hidden_dim`` / ``head_num_layers`` apply to all heads (improved), while the reference
heads are 4 (class), 2 (charge) and 3 (others) layers of widths halving from
``head_hidden_dim``; ``hidden_dim`` and ``log_energy_loss`` apply to ``improved`` only.

Loss weights: the defaults are the reference Delphes weights (cls 1, charge 1, kinematics 100).
pT and E are regressed in log1p space (``log_energy_loss``). Measured here (gun events, 400
train / 100 test, 5 epochs, two seeds): kinematic weights of 10 and of 100 give the same
accuracy (0.90) and regression losses to within 1 %: the classification and regression stacks
share only the input encoding and Adam is insensitive to a common scale, so the reference
values are kept.
"""

from __future__ import annotations

import dataclasses

from mlpf_tf.configbase import Section, param
from mlpf_tf.data.schema import NUM_CLASSES
from mlpf_tf.model.variants import VARIANTS

ACTIVATIONS = ("elu", "relu", "gelu", "selu", "tanh", "swish")


@dataclasses.dataclass
class ModelConfig(Section):
    """Hyperparameters of the MLPF graph network (reference "PFNetDense")."""

    SECTION = "model"

    variant: str = param("improved", "network design: improved = this project's MLPF "
                         "(log1p inputs, learned encoding, equal heads, per-event loss); "
                         "reference = the study's Delphes PFNetDense with its objective "
                         "(jpata/particleflow 0ea1460); differences: mlpf_tf/model/variants.py",
                         choices=VARIANTS)
    # Widths and activation.
    hidden_dim: int = param(32, "improved only: width of the learned input encoding", low=1)
    activation: str = param("elu", "activation of all hidden layers", choices=ACTIVATIONS)
    num_classes: int = param(NUM_CLASSES, "number of particle classes incl. 'none' (fixed by "
                             "the schema)", choices=(NUM_CLASSES,))
    layernorm: bool = param(True, "improved: layer norm after every graph layer and in every "
                            "head layer; reference: layer norm at every graph layer's input "
                            "(reference Delphes: off)")
    # Graph building (LSH binning in a learned space).
    ffn_dist_hidden_dim: int = param(32, "hidden width of the FFN mapping elements to the "
                                     "distance space (search 64..256)", low=1)
    ffn_dist_num_layers: int = param(1, "hidden layers of that FFN (search 1..3)", low=0)
    distance_dim: int = param(16, "dimension of the learned distance space (search 64..512, "
                              "reference 128)", low=1)
    bin_size: int = param(32, "elements per LSH bin; cost grows as N * bin_size (search "
                          "16..640, reference 640, tuned 64)", low=2)
    max_num_bins: int = param(200, "number of LSH buckets an event may use at most; an event "
                              "with n real elements uses min(ceil(n / bin_size), max_num_bins) "
                              "(reference 100)", low=2)
    dist_mult: float = param(0.1, "Gaussian kernel scale: adjacency exp(-dist_mult * |xi-xj|) "
                             "(search 0.01..0.2)", low=0.0)
    clip_value_low: float = param(0.0, "lower clip of the adjacency values (search 0..0.2)",
                                  low=0.0)
    lsh_seed: int = param(0, "seed of the fixed random LSH projections", low=0)
    # Message passing.
    num_node_messages: int = param(1, "rounds of gated message passing per graph layer "
                                   "(search 1..3)", low=1)
    normalize_degrees: bool = param(True, "symmetric degree normalisation of the messages")
    output_dim: int = param(32, "width of every graph layer's output (search 64..512, "
                            "reference 256, tuned 64)", low=1)
    num_graph_layers_common: int = param(2, "graph layers of the classification stack "
                                         "(search 2..4, reference 3)", low=1)
    num_graph_layers_energy: int = param(2, "graph layers of the regression stack "
                                         "(search 2..4, reference 3)", low=1)
    dropout: float = param(0.0, "dropout of the head FFNs; graph layers get half "
                           "(search 0..0.5)", low=0.0)
    recompute: bool = param(False, "training: recompute every graph layer's N x bin_size "
                            "adjacency and message passing in the backward pass instead of "
                            "storing them (tf.recompute_grad): same numbers, less memory")
    # Heads.
    head_hidden_dim: int = param(32, "hidden width of the output heads (reference: width of "
                                 "the first head layer, halving per layer; Delphes 256)", low=1)
    head_num_layers: int = param(2, "improved only: hidden layers of every output head "
                                 "(reference: 4 class, 2 charge, 3 others)", low=1)
    # Losses.
    log_energy_loss: bool = param(True, "improved only: regress pT and E as log1p (outputs "
                                  "stay in GeV); the reference loss is Huber in GeV")
    cls_loss_weight: float = param(1.0, "weight of the classification loss (reference 1)",
                                   low=0.0)
    charge_loss_weight: float = param(1.0, "weight of the charge loss (reference 1)", low=0.0)
    pt_loss_weight: float = param(100.0, "weight of the pT loss (reference 100)", low=0.0)
    eta_loss_weight: float = param(100.0, "weight of the eta loss (reference 100)", low=0.0)
    sin_phi_loss_weight: float = param(100.0, "weight of the sin phi loss (reference 100)",
                                       low=0.0)
    cos_phi_loss_weight: float = param(100.0, "weight of the cos phi loss (reference 100)",
                                       low=0.0)
    energy_loss_weight: float = param(100.0, "weight of the energy loss (reference 100)",
                                      low=0.0)

    def check(self) -> None:
        if not self.dropout < 1.0:
            self.fail("dropout", "must be < 1")
        if not self.clip_value_low < 1.0:
            self.fail("clip_value_low", "must be < 1 (the adjacency is clipped to "
                                        "[clip_value_low, 1])")
        if self.dist_mult <= 0.0:
            self.fail("dist_mult", "must be > 0")
        if self.max_num_bins % 2:
            self.fail("max_num_bins", "must be even (buckets come in +/- projection pairs)")
        weights = [getattr(self, name) for name in LOSS_WEIGHT_FIELDS.values()]
        if sum(weights) <= 0.0:
            self.fail("cls_loss_weight", "all loss weights are 0")

    def options(self):
        """The :class:`~mlpf_tf.model.variants.VariantOptions` of this config's variant."""
        from mlpf_tf.model.variants import options

        return options(self.variant)

    def loss_weights(self) -> dict[str, float]:
        """Loss component name -> weight, e.g. {"cls": 1.0, "pt": 100.0, ...}."""
        return {key: float(getattr(self, name)) for key, name in LOSS_WEIGHT_FIELDS.items()}


#: loss component -> ModelConfig field holding its weight
LOSS_WEIGHT_FIELDS = {
    "cls": "cls_loss_weight",
    "charge": "charge_loss_weight",
    "pt": "pt_loss_weight",
    "eta": "eta_loss_weight",
    "sin_phi": "sin_phi_loss_weight",
    "cos_phi": "cos_phi_loss_weight",
    "energy": "energy_loss_weight",
}

#: the reference Delphes model (``parameters/delphes.yaml`` of the reference code): 3,285,841
#: trainable parameters and 38,400 fixed LSH projection weights
DELPHES_REFERENCE = dict(
    variant="reference", distance_dim=128, bin_size=640, max_num_bins=100, dist_mult=0.1,
    clip_value_low=0.0, num_node_messages=1, normalize_degrees=True, dropout=0.0,
    num_graph_layers_common=3, num_graph_layers_energy=3, output_dim=256, head_hidden_dim=256,
    ffn_dist_hidden_dim=128, ffn_dist_num_layers=1, layernorm=False, activation="elu",
    cls_loss_weight=1.0, charge_loss_weight=1.0,
    pt_loss_weight=100.0, eta_loss_weight=100.0, sin_phi_loss_weight=100.0,
    cos_phi_loss_weight=100.0, energy_loss_weight=100.0,
)
