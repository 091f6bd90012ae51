"""The two designs of the MLPF network: ``reference`` (the study's model) and ``improved``.

``--model.variant=reference`` builds the Delphes "PFNetDense" of the reference code
(jpata/particleflow at commit 0ea146025d35, ``parameters/delphes.yaml``) from this project's
layers: 3,285,841 trainable parameters plus 38,400 fixed LSH projection weights at the Delphes
settings (``DELPHES_REFERENCE``). ``--model.variant=improved`` is this project's own design.

Every way in which ``improved`` departs from the reference is one named option of
:class:`VariantOptions`; :data:`REASONS` gives the one-line reason for each. Neither the
options nor this module import TensorFlow (the tuners read them).
"""

from __future__ import annotations

import dataclasses

VARIANTS = ("improved", "reference")


@dataclasses.dataclass(frozen=True)
class VariantOptions:
    """How a variant builds the network and its objective (see REASONS for ``improved``)."""

    log_inputs: bool  # pT, E (and E_em/E_had of towers) enter as sign * log1p(|x|)
    input_encoding: bool  # a learned Dense(hidden_dim) encodes the 14 input columns
    graph_norm: str  # "output": LayerNorm on every graph layer's output; "input": on its input
    head_norm: str  # "per_layer": LayerNorm in every head layer; "input": one on the cls stack
    head_layout: str  # "shared": equal heads on (regression stack, logits); "reference"
    energy_output: str  # "log_correction" of the element energy, or "per_class_gev"
    pt_base_stop_gradient: bool  # pT = stop_gradient(E / cosh eta) + gated correction
    message_self_bias: bool  # the self term of the gated message passing has a bias
    degree_offset: float  # degree normalisation (deg + offset)^-1/2
    message_initializer: str  # initialiser of the message-passing weights
    bins_from_real: bool  # number of LSH bins from the real elements (else the padded size)
    dist_dropout: bool  # dropout (rate dropout / 2) inside the distance FFN of graph layers
    loss: str  # "per_event" (log1p pT/E, per-event means) or "reference" (GeV, B x N)


OPTIONS = {
    "reference": VariantOptions(
        log_inputs=False, input_encoding=False, graph_norm="input", head_norm="input",
        head_layout="reference", energy_output="per_class_gev", pt_base_stop_gradient=True,
        message_self_bias=False, degree_offset=1e-6, message_initializer="random_normal",
        bins_from_real=False, dist_dropout=True, loss="reference"),
    "improved": VariantOptions(
        log_inputs=True, input_encoding=True, graph_norm="output", head_norm="per_layer",
        head_layout="shared", energy_output="log_correction", pt_base_stop_gradient=False,
        message_self_bias=True, degree_offset=1.0, message_initializer="glorot_uniform",
        bins_from_real=True, dist_dropout=False, loss="per_event"),
}

#: option -> why ``improved`` departs from the reference there (one line each)
REASONS = {
    "log_inputs": "energies and momenta span four decades; log1p brings them to O(1) inputs",
    "input_encoding": "a learned hidden_dim-wide encoding instead of 14 raw columns feeds "
                      "the first graph layer features of the width it expects",
    "graph_norm": "normalising each graph layer's output keeps the concatenated skip features "
                  "on one scale (the reference's flag normalises inputs and is off for Delphes)",
    "head_norm": "one layernorm flag that normalises the whole network, searched as one choice",
    "head_layout": "every kinematic head reads the regression stack: one set of equal, "
                   "searchable heads instead of six hand-sized ones",
    "energy_output": "a log-space correction to the element energy is O(1) for MeV and TeV "
                     "particles alike; per-class GeV outputs must learn the scale",
    "pt_base_stop_gradient": "pT also trains E and eta through E / cosh(eta)",
    "message_self_bias": "a bias on the self term costs output_dim parameters and lets a node "
                         "shift its own features",
    "degree_offset": "(deg + 1)^-1/2 treats an element as its own neighbour and stays bounded "
                     "for isolated elements, where (deg + 1e-6)^-1/2 reaches 1000",
    "message_initializer": "Glorot keeps activations O(1) for any width; N(0, 0.05) shrinks "
                           "them for narrow layers",
    "bins_from_real": "counting bins from the real elements makes the output independent of "
                      "how far an event is padded",
    "dist_dropout": "dropout noise on the learned coordinates reshuffles the LSH bins at "
                    "every step; dropout in the message passing regularises enough",
    "loss": "log1p pT/E weighs GeV and TeV particles alike and per-event means make "
            "data-parallel training exactly equivalent to one large batch",
}


def options(variant: str) -> VariantOptions:
    """The options of ``variant``; ValueError naming the known variants otherwise."""
    try:
        return OPTIONS[variant]
    except KeyError:
        raise ValueError(f"unknown model variant {variant!r}; known: "
                         f"{', '.join(VARIANTS)}") from None
