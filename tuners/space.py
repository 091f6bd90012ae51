"""MLPF search spaces as ``keras_tuner.HyperParameters``: the reference space and a reduced one.

Every hyperparameter name is the name of the config field it sets (see
:mod:`tuners.hypermodel`): model fields (``bin_size``, ``distance_dim`` ...) and training fields
(``lr``, ``batch_size``, ``decay_steps``, ``decay_rate``).

* ``reference`` -- the space of the reference study as its code defines it (the Ray Tune
  space in ``mlpf/raytune/search_space.py`` of jpata/particleflow at 0ea1460): names,
  ranges and distributions in :data:`REFERENCE`. Its names differ in three places
  (:data:`REFERENCE_NAMES`: ``batch_size_physical``, ``expdecay_decay_steps``,
  ``expdecay_decay_rate``). The learning-rate schedule is not searched (the trial's
  ``--train.lr_schedule`` applies; the study used exponential decay), nor is the activation
  (elu). ``bin_size`` is {160, 320}: the Ray Tune space the study's searches ran with
  (``quniform(160, 320, 160)``), not {160, 320, 640} of the reference's older keras-tuner
  builder; both divide the 6400-element Delphes padding.
  Distribution note: Ray's ``quniform(a, b, q)`` rounds a uniform draw, so its two end values
  get half the weight of the interior ones (e.g. num_node_messages 1, 2, 3 with 1/4, 1/2,
  1/4); keras-tuner's ``Int`` with a step draws every grid value equally often. Booleans
  (``quniform(0, 1, 1)``) and bin_size are 50/50 in both.
* ``reduced`` -- the reference space adapted to this two-core machine by the rules of
  :data:`REDUCED_RULES` (applied in code by :func:`reduced_space`, so the two cannot drift).

The spaces are flat (no conditional scopes): every oracle, including the model-based ones, sees
the same fixed set of dimensions; ``decay_steps``/``decay_rate`` are unused unless the trial's
schedule is exponential.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import keras_tuner

#: LR schedules a trial may use (names of TrainConfig.lr_schedule); not searched.
LR_SCHEDULES = ("constant", "exponential", "cosine")

#: bin_size values of the reference (Ray Tune) space; both divide the 6400-element padding.
REFERENCE_BIN_SIZES = (160, 320)

#: name -> (kind, arguments) of the reference space, in declaration order; defaults are the
#: Delphes settings where they lie in the range (lr 1e-4, batch 4 for the reference's 5, ...)
REFERENCE = {
    "lr": ("Float", dict(min_value=1e-4, max_value=3e-2, sampling="log", default=1e-4)),
    "batch_size": ("Int", dict(min_value=4, max_value=32, step=4, default=4)),
    "decay_steps": ("Int", dict(min_value=10, max_value=2000, step=10, default=2000)),
    "decay_rate": ("Float", dict(min_value=0.9, max_value=1.0, default=0.99)),
    "layernorm": ("Boolean", dict(default=False)),
    "ffn_dist_hidden_dim": ("Int", dict(min_value=64, max_value=256, step=64, default=128)),
    "ffn_dist_num_layers": ("Int", dict(min_value=1, max_value=3, default=1)),
    "distance_dim": ("Int", dict(min_value=64, max_value=512, step=64, default=128)),
    "num_node_messages": ("Int", dict(min_value=1, max_value=3, default=1)),
    "num_graph_layers_common": ("Int", dict(min_value=2, max_value=4, default=3)),
    "num_graph_layers_energy": ("Int", dict(min_value=2, max_value=4, default=3)),
    "dropout": ("Float", dict(min_value=0.0, max_value=0.5, default=0.0)),
    "bin_size": ("Choice", dict(values=list(REFERENCE_BIN_SIZES), default=160)),
    "clip_value_low": ("Float", dict(min_value=0.0, max_value=0.2, default=0.0)),
    "dist_mult": ("Float", dict(min_value=0.01, max_value=0.2, default=0.1)),
    "normalize_degrees": ("Boolean", dict(default=True)),
    "output_dim": ("Int", dict(min_value=64, max_value=512, step=64, default=256)),
}

#: our name -> the reference space's name, where they differ
REFERENCE_NAMES = {"batch_size": "batch_size_physical", "decay_steps": "expdecay_decay_steps",
                   "decay_rate": "expdecay_decay_rate"}

#: hyperparameters that set the size of the network: not searched in the reduced space
NETWORK_SIZE = ("ffn_dist_hidden_dim", "ffn_dist_num_layers", "distance_dim", "output_dim",
                "num_graph_layers_common", "num_graph_layers_energy")
#: counts that multiply the cost of a step: their upper end in the reduced space
REDUCED_MAX = {"batch_size": 16, "num_node_messages": 2}
#: padded event size of the reference (Delphes) and of this machine's ttbar events
REFERENCE_PADDING, LOCAL_PADDING = 6400, 512

REDUCED_RULES = (
    "1. names, distributions and ranges are the reference's unless a rule below says otherwise "
    "(lr, decay_steps, decay_rate, layernorm, dropout, clip_value_low, dist_mult, "
    "normalize_degrees keep theirs)",
    "2. the size of the network (" + ", ".join(NETWORK_SIZE) + ") is not searched: it keeps "
    "the preset's values, so a trial costs what the preset costs on two cores",
    "3. counts that multiply the cost of a step keep their lower end and half their range: "
    + ", ".join(f"{k} up to {v}" for k, v in REDUCED_MAX.items()),
    f"4. bin_size: the reference values scaled by the ratio of padded event sizes "
    f"({LOCAL_PADDING} / {REFERENCE_PADDING}) and rounded to a power of two, so an event is cut "
    f"into about as many bins as a Delphes event: {{160, 320}} -> {{16, 32}}",
    "5. the learning-rate schedule is not searched, as in the reference",
)


def _declare(hp: keras_tuner.HyperParameters, name: str, kind: str, args: dict) -> None:
    getattr(hp, kind)(name, **args)


def reference_space(hp: keras_tuner.HyperParameters | None = None
                    ) -> keras_tuner.HyperParameters:
    """Declare the reference MLPF search space on ``hp`` (a new one if None) and return it."""
    hp = hp if hp is not None else keras_tuner.HyperParameters()
    for name, (kind, args) in REFERENCE.items():
        _declare(hp, name, kind, dict(args))
    return hp


def scaled_bin_size(reference_bin_size: int) -> int:
    """Rule 4: a reference bin size scaled to this machine's padding, as a power of two."""
    scaled = reference_bin_size * LOCAL_PADDING / REFERENCE_PADDING
    return 2 ** round(math.log2(scaled))


def reduced_space(hp: keras_tuner.HyperParameters | None = None
                  ) -> keras_tuner.HyperParameters:
    """Declare the reduced space (the reference space under REDUCED_RULES) on ``hp``."""
    hp = hp if hp is not None else keras_tuner.HyperParameters()
    for name, (kind, args) in REFERENCE.items():
        args = dict(args)
        if name in NETWORK_SIZE:
            continue  # rule 2
        if name in REDUCED_MAX:  # rule 3
            args["max_value"] = REDUCED_MAX[name]
            args["default"] = min(args["default"], REDUCED_MAX[name])
        if name == "bin_size":  # rule 4
            args["values"] = [scaled_bin_size(v) for v in args["values"]]
            args["default"] = scaled_bin_size(args["default"])
        _declare(hp, name, kind, args)
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
