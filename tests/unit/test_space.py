"""Search spaces: exact reference ranges, a narrower reduced space, and valid configs from both."""

import keras_tuner
import pytest

from mlpf_tf.model.config import ModelConfig
from mlpf_tf.train_config import LR_SCHEDULES as TRAIN_LR_SCHEDULES
from mlpf_tf.train_config import TrainConfig
from tuners import space
from tuners.hypermodel import apply_values

# name -> (kind, min, max, step, sampling) or (kind, values) or (kind,): the commented-out
# Ray Tune space of mlpf/raytune/search_space.py (jpata/particleflow 0ea1460), read by hand.
REFERENCE = {
    "lr": ("Float", 1e-4, 3e-2, None, "log"),  # loguniform(1e-4, 3e-2)
    "batch_size": ("Int", 4, 32, 4, "linear"),  # batch_size_physical: quniform(4, 32, 4)
    "decay_steps": ("Int", 10, 2000, 10, "linear"),  # expdecay_decay_steps: quniform(10, 2000, 10)
    "decay_rate": ("Float", 0.9, 1.0, None, "linear"),  # expdecay_decay_rate: uniform(0.9, 1)
    "layernorm": ("Boolean",),  # quniform(0, 1, 1)
    "ffn_dist_hidden_dim": ("Int", 64, 256, 64, "linear"),
    "ffn_dist_num_layers": ("Int", 1, 3, 1, "linear"),
    "distance_dim": ("Int", 64, 512, 64, "linear"),
    "num_node_messages": ("Int", 1, 3, 1, "linear"),
    "num_graph_layers_common": ("Int", 2, 4, 1, "linear"),
    "num_graph_layers_energy": ("Int", 2, 4, 1, "linear"),
    "dropout": ("Float", 0.0, 0.5, None, "linear"),
    "bin_size": ("Choice", [160, 320]),  # quniform(160, 320, 160)
    "clip_value_low": ("Float", 0.0, 0.2, None, "linear"),
    "dist_mult": ("Float", 0.01, 0.2, None, "linear"),
    "normalize_degrees": ("Boolean",),
    "output_dim": ("Int", 64, 512, 64, "linear"),
}


def describe(hp: keras_tuner.HyperParameters) -> dict:
    out = {}
    for p in hp.space:
        kind = type(p).__name__
        if kind == "Boolean":
            out[p.name] = (kind,)
        elif kind == "Choice":
            out[p.name] = (kind, list(p.values))
        else:
            step = p.step if kind == "Float" else (p.step or 1)
            out[p.name] = (kind, p.min_value, p.max_value, step, p.sampling)
    return out


def test_reference_space_has_exactly_the_reference_ranges():
    got = describe(space.reference_space())
    assert list(got) == list(REFERENCE)
    for name, expected in REFERENCE.items():
        assert got[name][0] == expected[0], name
        if expected[0] in ("Int", "Float"):
            assert got[name][1] == pytest.approx(expected[1]), name
            assert got[name][2] == pytest.approx(expected[2]), name
            assert got[name][3] == expected[3], name
            assert got[name][4] == expected[4], name
        else:
            assert got[name] == expected, name


def test_reference_bin_sizes_divide_the_delphes_padding():
    assert all(6400 % b == 0 for b in space.REFERENCE_BIN_SIZES)
    assert space.REFERENCE_NAMES == {"batch_size": "batch_size_physical",
                                     "decay_steps": "expdecay_decay_steps",
                                     "decay_rate": "expdecay_decay_rate"}


def test_reduced_space_follows_its_rules():
    ref = describe(space.reference_space())
    red = describe(space.reduced_space())
    # rule 2: the network size is not searched; everything else is kept, in order
    assert list(red) == [n for n in ref if n not in space.NETWORK_SIZE]
    assert set(space.NETWORK_SIZE) == {"distance_dim", "output_dim", "ffn_dist_hidden_dim",
                                       "ffn_dist_num_layers", "num_graph_layers_common",
                                       "num_graph_layers_energy"}
    # rule 3: cost-multiplying counts keep their lower end, half the range
    assert red["batch_size"] == ("Int", 4, 16, 4, "linear")
    assert red["num_node_messages"] == ("Int", 1, 2, 1, "linear")
    # rule 4: bin sizes scaled by 512 / 6400 to powers of two
    assert red["bin_size"] == ("Choice", [16, 32])
    # rule 1: the rest is the reference's exactly
    for name in ("lr", "decay_steps", "decay_rate", "layernorm", "dropout", "clip_value_low",
                 "dist_mult", "normalize_degrees"):
        assert red[name] == ref[name], name
    assert len(space.REDUCED_RULES) == 5


@pytest.mark.parametrize("name", ["reference", "reduced"])
def test_batch_size_is_searched_and_the_schedule_is_not(name):
    hp = space.build_space(name)
    assert "lr_schedule" not in space.space_names(hp)
    assert list(TRAIN_LR_SCHEDULES) == list(space.LR_SCHEDULES)
    batch = hp._hps["batch_size"][0]
    assert batch.min_value >= 4 and batch.step == 4


@pytest.mark.parametrize("name", ["reference", "reduced"])
def test_every_sampled_point_gives_valid_configs(name):
    hp = space.build_space(name)
    base_model, base_train = ModelConfig(), TrainConfig()
    for seed in range(25):
        values = {p.name: p.random_sample(seed * 31 + i) for i, p in enumerate(hp.space)}
        model, train = apply_values(values, base_model, base_train)
        for key, value in values.items():
            target = model if hasattr(model, key) and key not in TRAIN_FIELDS else train
            assert getattr(target, key) == pytest.approx(value), key
    # the defaults too
    apply_values(hp.values, base_model, base_train)


TRAIN_FIELDS = {"lr", "batch_size", "decay_steps", "decay_rate"}


def test_unknown_space_names_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown search space 'tiny'; known: reference, "
                                         r"reduced"):
        space.build_space("tiny")


def test_declaring_on_an_existing_object_adds_to_it():
    hp = keras_tuner.HyperParameters()
    hp.Fixed("extra", 1)
    out = space.reduced_space(hp)
    assert out is hp
    assert space.space_names(hp)[0] == "extra"
    assert len(space.space_names(hp)) == 1 + len(space.space_names(space.reduced_space()))
