"""Search spaces: exact reference ranges, a narrower reduced space, and valid configs from both."""

import keras_tuner
import pytest

from mlpf_tf.model.config import ModelConfig
from mlpf_tf.train_config import LR_SCHEDULES as TRAIN_LR_SCHEDULES
from mlpf_tf.train_config import TrainConfig
from tuners import space
from tuners.hypermodel import apply_values

# name -> (kind, min, max, step, sampling) or (kind, values) or (kind,)
REFERENCE = {
    "lr": ("Float", 1e-4, 3e-2, None, "log"),
    "batch_size": ("Int", 4, 32, 4, "linear"),
    "lr_schedule": ("Choice", ["constant", "exponential", "cosine"]),
    "decay_steps": ("Int", 10, 2000, 1, "linear"),
    "decay_rate": ("Float", 0.9, 1.0, None, "linear"),
    "layernorm": ("Boolean",),
    "ffn_dist_hidden_dim": ("Int", 64, 256, 64, "linear"),
    "ffn_dist_num_layers": ("Int", 1, 3, 1, "linear"),
    "distance_dim": ("Int", 64, 512, 64, "linear"),
    "bin_size": ("Choice", [16, 32, 64, 128, 160, 256, 320, 640]),
    "clip_value_low": ("Float", 0.0, 0.2, None, "linear"),
    "dist_mult": ("Float", 0.01, 0.2, None, "linear"),
    "num_node_messages": ("Int", 1, 3, 1, "linear"),
    "normalize_degrees": ("Boolean",),
    "num_graph_layers_common": ("Int", 2, 4, 1, "linear"),
    "num_graph_layers_energy": ("Int", 2, 4, 1, "linear"),
    "output_dim": ("Int", 64, 512, 64, "linear"),
    "dropout": ("Float", 0.0, 0.5, None, "linear"),
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
    assert min(space.REFERENCE_BIN_SIZES) == 16 and max(space.REFERENCE_BIN_SIZES) == 640


def test_reduced_space_is_a_narrower_subset():
    ref = describe(space.reference_space())
    red = describe(space.reduced_space())
    assert set(red) < set(ref)
    assert {"batch_size", "lr_schedule", "lr"} <= set(red)
    # widths and depths are not searched: a small preset stays small
    assert not {"distance_dim", "output_dim", "ffn_dist_hidden_dim", "ffn_dist_num_layers",
                "num_graph_layers_common", "num_graph_layers_energy"} & set(red)
    narrower = 0
    for name, r in red.items():
        f = ref[name]
        assert r[0] == f[0], name
        if r[0] in ("Int", "Float"):
            assert f[1] <= r[1] <= r[2] <= f[2], name
            narrower += (r[1], r[2]) != (f[1], f[2])
        elif r[0] == "Choice":
            assert set(r[1]) <= set(f[1]), name
            narrower += set(r[1]) != set(f[1])
    assert narrower >= 6


@pytest.mark.parametrize("name", ["reference", "reduced"])
def test_batch_size_and_lr_schedule_are_searched(name):
    hp = space.build_space(name)
    schedule = hp._hps["lr_schedule"][0]
    assert list(schedule.values) == list(TRAIN_LR_SCHEDULES) == list(space.LR_SCHEDULES)
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


TRAIN_FIELDS = {"lr", "batch_size", "lr_schedule", "decay_steps", "decay_rate"}


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
