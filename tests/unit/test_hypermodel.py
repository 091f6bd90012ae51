"""Trial values -> ModelConfig / TrainConfig fields, and the reserved budget values of a trial."""

import dataclasses

import keras_tuner
import pytest

from mlpf_tf.configbase import ConfigError
from mlpf_tf.model.config import ModelConfig
from mlpf_tf.train_config import TrainConfig
from tuners import hypermodel
from tuners.trial_runner import TrialSpec


def test_values_land_on_the_right_fields():
    base_model, base_train = ModelConfig(), TrainConfig(epochs=7)
    values = {"lr": 2e-3, "batch_size": 12, "lr_schedule": "exponential", "decay_steps": 50,
              "decay_rate": 0.95, "bin_size": 64, "distance_dim": 128, "layernorm": False,
              "num_node_messages": 3, "dropout": 0.25, "dist_mult": 0.05,
              "normalize_degrees": False, "output_dim": 64, "num_graph_layers_common": 4,
              "num_graph_layers_energy": 2, "ffn_dist_hidden_dim": 192,
              "ffn_dist_num_layers": 3, "clip_value_low": 0.1,
              "tuner/epochs": 9, "tuner/initial_epoch": 3, "tuner/trial_id": "0007",
              "tuner/rung": 1, "tuner/bracket": 0}
    model, train = hypermodel.apply_values(values, base_model, base_train)
    assert (train.lr, train.batch_size, train.lr_schedule, train.decay_steps,
            train.decay_rate) == (2e-3, 12, "exponential", 50, 0.95)
    assert train.epochs == 7  # the epoch budget comes from tuner/epochs, not the config
    assert (model.bin_size, model.distance_dim, model.layernorm, model.num_node_messages,
            model.dropout, model.dist_mult, model.normalize_degrees, model.output_dim,
            model.num_graph_layers_common, model.num_graph_layers_energy,
            model.ffn_dist_hidden_dim, model.ffn_dist_num_layers, model.clip_value_low) == (
        64, 128, False, 3, 0.25, 0.05, False, 64, 4, 2, 192, 3, 0.1)
    # every field not searched keeps the base value
    for f in dataclasses.fields(ModelConfig):
        if f.name not in values:
            assert getattr(model, f.name) == getattr(base_model, f.name), f.name
    # the bases are untouched
    assert base_model == ModelConfig() and base_train == TrainConfig(epochs=7)


def test_no_field_name_is_shared_by_model_and_train():
    assert not hypermodel.MODEL_FIELDS & hypermodel.TRAIN_FIELDS


def test_unknown_names_are_an_error_naming_them():
    with pytest.raises(ValueError) as err:
        hypermodel.apply_values({"lr": 1e-3, "bin_sise": 8, "zeta": 1}, ModelConfig(),
                                TrainConfig())
    assert str(err.value) == ("hyperparameter(s) bin_sise, zeta match no field of the model or "
                              "training config")


def test_out_of_bounds_value_names_the_flag():
    with pytest.raises(ConfigError, match=r"^--model.dropout=1.5: must be < 1$"):
        hypermodel.apply_values({"dropout": 1.5}, ModelConfig(), TrainConfig())


def test_python_types_follow_the_fields():
    model, train = hypermodel.apply_values(
        {"clip_value_low": 0, "dist_mult": 1, "decay_steps": 20.0, "layernorm": 1,
         "lr": 1}, ModelConfig(), TrainConfig())
    assert type(model.clip_value_low) is float and type(model.dist_mult) is float
    assert type(train.decay_steps) is int and train.decay_steps == 20
    assert model.layernorm is True and type(train.lr) is float


def test_hypermodel_declares_the_space_and_maps_values():
    hm = hypermodel.MLPFHyperModel(ModelConfig(), TrainConfig(), space="reduced")
    hp = keras_tuner.HyperParameters()
    hm.declare_hyperparameters(hp)
    assert "batch_size" in hp and "decay_rate" in hp and "distance_dim" not in hp
    hp.values["batch_size"] = 16
    model, train = hm.configs(hp)
    assert train.batch_size == 16 and model == hypermodel.apply_values(hp.values, ModelConfig(),
                                                                        TrainConfig())[0]
    with pytest.raises(ValueError, match="unknown search space 'big'"):
        hypermodel.MLPFHyperModel(ModelConfig(), TrainConfig(), space="big")


def test_trial_spec_reads_the_reserved_values():
    asha = TrialSpec.from_values("12", {"lr": 1e-3, "tuner/epochs": 9, "tuner/initial_epoch": 3,
                                        "tuner/trial_id": "4", "tuner/rung": 2,
                                        "tuner/bracket": 1}, default_epochs=100)
    assert (asha.parent_id, asha.initial_epoch, asha.target_epochs, asha.rung,
            asha.bracket) == ("4", 3, 9, 2, 1)
    assert asha.continues and asha.hyperparameters == {"lr": 1e-3}
    band = TrialSpec.from_values("3", {"lr": 1e-3, "tuner/epochs": 2, "tuner/initial_epoch": 0,
                                       "tuner/bracket": 1, "tuner/round": 0},
                                 default_epochs=100)
    assert (band.parent_id, band.rung, band.target_epochs, band.continues) == (None, 0, 2, False)
    plain = TrialSpec.from_values("0", {"lr": 1e-3}, default_epochs=5)
    assert (plain.initial_epoch, plain.target_epochs, plain.rung) == (0, 5, None)
