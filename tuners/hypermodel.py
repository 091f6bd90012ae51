"""Map a trial's hyperparameter values onto the model and training configs.

A search-space name is the name of the config field it sets: names of ``ModelConfig`` fields
go to the model config, names of ``TrainConfig`` fields to the training config (no field name
is shared by the two sections). keras-tuner's reserved values (``tuner/epochs``,
``tuner/initial_epoch``, ``tuner/trial_id``, ``tuner/bracket`` ...) describe the trial's budget,
not the model, and are skipped here; :class:`tuners.trial_runner.TrialRunner` reads them.
Any other name is an error naming it, so a typo in a space never goes silently unsearched.

:class:`MLPFHyperModel` packs the base configs and the space into a ``keras_tuner.HyperModel``:
``declare_hyperparameters`` fills the space, ``configs(hp)`` gives the trial's configs and
``build(hp)`` the (uncompiled) Keras model, as keras-tuner users expect from ``tuner.hypermodel``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import keras_tuner

from mlpf_tf.model.config import ModelConfig
from mlpf_tf.train_config import TrainConfig
from tuners import space as space_module

RESERVED_PREFIX = "tuner/"

MODEL_FIELDS = frozenset(f.name for f in dataclasses.fields(ModelConfig))
TRAIN_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainConfig))


def is_reserved(name: str) -> bool:
    """True for keras-tuner's budget bookkeeping values (``tuner/...``)."""
    return name.startswith(RESERVED_PREFIX)


def searched_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """The values that set config fields (reserved ``tuner/...`` entries removed)."""
    return {k: v for k, v in values.items() if not is_reserved(k)}


def split_values(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(model field values, training field values) of a trial; unknown names raise ValueError."""
    model, train, unknown = {}, {}, []
    for name, value in searched_values(values).items():
        if name in MODEL_FIELDS:
            model[name] = value
        elif name in TRAIN_FIELDS:
            train[name] = value
        else:
            unknown.append(name)
    if unknown:
        raise ValueError(
            f"hyperparameter(s) {', '.join(sorted(unknown))} match no field of the model or "
            "training config")
    return model, train


def apply_values(values: Mapping[str, Any], model_cfg: ModelConfig, train_cfg: TrainConfig,
                 validate: bool = True) -> tuple[ModelConfig, TrainConfig]:
    """Copies of the base configs with the trial's values set (validated unless asked not to).

    Raises ``ConfigError`` when a value is outside a field's bounds, naming the field.
    """
    model_values, train_values = split_values(values)
    model = dataclasses.replace(model_cfg, **_coerced(ModelConfig, model_values))
    train = dataclasses.replace(train_cfg, **_coerced(TrainConfig, train_values))
    if validate:
        model.validate()
        train.validate()
    return model, train


def _coerced(cls, values: dict[str, Any]) -> dict[str, Any]:
    # keras-tuner may hand numpy scalars or ints for float fields (e.g. a Choice of ints);
    # convert to the field's declared Python type so configs and records stay plain.
    import typing

    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in values.items():
        kind = hints.get(name)
        if hasattr(value, "item"):
            value = value.item()
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif kind is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        elif kind is bool and isinstance(value, int):
            value = bool(value)
        out[name] = value
    return out


class MLPFHyperModel(keras_tuner.HyperModel):
    """The MLPF network as a keras-tuner hypermodel over the base ``model``/``train`` configs."""

    def __init__(self, model_cfg: ModelConfig, train_cfg: TrainConfig,
                 space: str = "reference", name: str = "mlpf"):
        super().__init__(name=name, tunable=True)
        self.model_cfg = model_cfg
        self.train_cfg = train_cfg
        self.space = space
        space_module.build_space(space)  # fail early on an unknown space name

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        space_module.build_space(self.space, hp)

    def configs(self, hp: keras_tuner.HyperParameters | Mapping[str, Any]
                ) -> tuple[ModelConfig, TrainConfig]:
        values = hp.values if isinstance(hp, keras_tuner.HyperParameters) else hp
        return apply_values(values, self.model_cfg, self.train_cfg)

    def build(self, hp: keras_tuner.HyperParameters):
        from mlpf_tf.model.network import build_model

        model_cfg, _ = self.configs(hp)
        return build_model(model_cfg)
