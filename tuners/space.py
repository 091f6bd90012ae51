"""MLPF search spaces as ``keras_tuner.HyperParameters``: the reference space and a reduced one.

Every hyperparameter name is the name of the config field it sets (see
:mod:`tuners.hypermodel`): model fields (``bin_size``, ``distance_dim`` ...) and training fields
(``lr``, ``batch_size``, ``lr_schedule``, ``decay_steps``, ``decay_rate``).

* ``reference`` -- the ranges searched for MLPF in the reference HPO study (learning rate
  log-uniform 1e-4..3e-2, batch 4..32 events step 4, decay 10..2000 steps / rate 0.9..1.0,
  every graph-network width and depth). ``lr_schedule`` chooses constant, exponential or cosine
  decay (cosine won in the reference study). ``bin_size`` takes the divisors of the 6400-element
  Delphes padding between 16 and 640, so every value bins a padded event exactly.
* ``reduced`` -- the hyperparameters the reference study found most important, in narrower
  ranges around its tuned result; widths and depths (``distance_dim``, ``output_dim``,
  ``ffn_dist_*``, ``num_graph_layers_*``) are not searched and keep the values of the model
  config, so a small preset stays small. Meant for smoke tests and scaling studies.

The spaces are flat (no conditional scopes): every oracle, including the model-based ones, sees
the same fixed set of dimensions; ``decay_steps``/``decay_rate`` are simply unused by the
constant schedule.
"""

from __future__ import annotations

from collections.abc import Callable

import keras_tuner

#: LR schedules a trial may use (names of TrainConfig.lr_schedule).
LR_SCHEDULES = ("constant", "exponential", "cosine")

#: bin_size values of the reference space: divisors of 6400 in 16..640.
REFERENCE_BIN_SIZES = (16, 32, 64, 128, 160, 256, 320, 640)


def reference_space(hp: keras_tuner.HyperParameters | None = None
                    ) -> keras_tuner.HyperParameters:
    """Declare the reference MLPF search space on ``hp`` (a new one if None) and return it."""
    hp = hp if hp is not None else keras_tuner.HyperParameters()
    # Training.
    hp.Float("lr", 1e-4, 3e-2, sampling="log", default=1e-3)
    hp.Int("batch_size", 4, 32, step=4, default=8)
    hp.Choice("lr_schedule", list(LR_SCHEDULES), default="cosine")
    hp.Int("decay_steps", 10, 2000, default=1000)
    hp.Float("decay_rate", 0.9, 1.0, default=0.99)
    # Graph building.
    hp.Boolean("layernorm", default=True)
    hp.Int("ffn_dist_hidden_dim", 64, 256, step=64, default=128)
    hp.Int("ffn_dist_num_layers", 1, 3, default=1)
    hp.Int("distance_dim", 64, 512, step=64, default=128)
    hp.Choice("bin_size", list(REFERENCE_BIN_SIZES), default=64)
    hp.Float("clip_value_low", 0.0, 0.2, default=0.0)
    hp.Float("dist_mult", 0.01, 0.2, default=0.1)
    # Message passing and depth.
    hp.Int("num_node_messages", 1, 3, default=1)
    hp.Boolean("normalize_degrees", default=True)
    hp.Int("num_graph_layers_common", 2, 4, default=3)
    hp.Int("num_graph_layers_energy", 2, 4, default=3)
    hp.Int("output_dim", 64, 512, step=64, default=256)
    hp.Float("dropout", 0.0, 0.5, default=0.0)
    return hp


def reduced_space(hp: keras_tuner.HyperParameters | None = None
                  ) -> keras_tuner.HyperParameters:
    """Declare the reduced space (fewer dimensions, narrower ranges) on ``hp`` and return it."""
    hp = hp if hp is not None else keras_tuner.HyperParameters()
    hp.Float("lr", 3e-4, 1e-2, sampling="log", default=1e-3)
    hp.Int("batch_size", 4, 16, step=4, default=8)
    hp.Choice("lr_schedule", list(LR_SCHEDULES), default="cosine")
    hp.Int("decay_steps", 10, 1000, default=500)
    hp.Float("decay_rate", 0.95, 1.0, default=0.99)
    hp.Boolean("layernorm", default=True)
    hp.Choice("bin_size", [16, 32, 64], default=32)
    hp.Float("dist_mult", 0.05, 0.2, default=0.1)
    hp.Int("num_node_messages", 1, 2, default=1)
    hp.Boolean("normalize_degrees", default=True)
    hp.Float("dropout", 0.0, 0.2, default=0.0)
    return hp


SPACES: dict[str, Callable[..., keras_tuner.HyperParameters]] = {
    "reference": reference_space,
    "reduced": reduced_space,
}


def build_space(name: str, hp: keras_tuner.HyperParameters | None = None
                ) -> keras_tuner.HyperParameters:
    """The search space called ``name`` (``reference`` | ``reduced``)."""
    try:
        builder = SPACES[name]
    except KeyError:
        raise ValueError(f"unknown search space {name!r}; known: {', '.join(SPACES)}") from None
    return builder(hp)


def space_names(hp: keras_tuner.HyperParameters) -> list[str]:
    """Names of the hyperparameters declared in ``hp``, in declaration order."""
    return [p.name for p in hp.space]
