"""DataConfig: defaults, config-name parsing, bounds and cross-field rules, flags."""

from __future__ import annotations

import os

import pytest
from absl import flags

from mlpf_tf.configbase import ConfigError, define_flags, section_from_flags
from mlpf_tf.data.config import (
    SYNTHETIC_CONFIGS,
    SYNTHETIC_DEFAULT_SIZES,
    DataConfig,
    default_split_sizes,
    parse_synthetic_config,
)


def test_defaults_validate_and_resolve():
    cfg = DataConfig()
    cfg.validate()
    assert (cfg.dataset, cfg.config, cfg.target, cfg.padding) == (
        "synthetic_pf", "ttbar_pu20", "ygen", "bucket")
    assert (cfg.detector, cfg.targets) == ("delphes_cms", "reference")
    assert cfg.split_sizes() == (300, 60, 60)
    assert cfg.resolved_data_dir() == os.path.abspath(".data/tfds")
    assert cfg.resolved_manual_dir() == os.path.join(os.path.abspath(".data/tfds"),
                                                     "downloads", "manual")
    assert DataConfig(manual_dir="~/m").resolved_manual_dir() == os.path.expanduser("~/m")


def test_split_sizes_override_only_given_values():
    cfg = DataConfig(config="ttbar_pu200", n_validation=7)
    assert cfg.split_sizes() == (100, 7, 20)
    assert set(SYNTHETIC_DEFAULT_SIZES) == set(SYNTHETIC_CONFIGS)


@pytest.mark.parametrize("name, expected", [
    ("gun", ("gun", 0.0)), ("ttbar_pu10", ("ttbar", 10.0)), ("qcd_pu37", ("qcd", 37.0)),
    ("ttbar_pu200", ("ttbar", 200.0)),
])
def test_parse_synthetic_config(name, expected):
    assert parse_synthetic_config(name) == expected
    DataConfig(config=name).validate()


def test_unregistered_pileup_gets_scaled_defaults():
    assert default_split_sizes("qcd_pu37") == (100, 20, 20)
    assert default_split_sizes("gun_pu5") == (300, 60, 60)


@pytest.mark.parametrize("changes, message", [
    ({"dataset": "cms"}, "--data.dataset='cms': must be one of synthetic_pf, delphes_pf"),
    ({"config": "tt"}, "--data.config='tt': unknown synthetic_pf config 'tt': expected "
                       "<process> or <process>_pu<N> with process one of gun, ttbar, qcd"),
    ({"config": "ttbar_pu5000"}, "--data.config='ttbar_pu5000': synthetic_pf config "
                                 "'ttbar_pu5000': pileup 5000 exceeds 1000"),
    ({"dataset": "delphes_pf"}, "--data.config='ttbar_pu20': unknown delphes_pf config; known: "
                                "default"),
    ({"dataset": "delphes_pf", "config": "default", "n_train": 5},
     "--data.n_train=5: split sizes apply to synthetic_pf only"),
    ({"n_train": -1}, "--data.n_train=-1: must be >= 0"),
    ({"n_test": 10_000_001}, "--data.n_test=10000001: must be <= 10000000"),
    ({"max_elements": 0}, "--data.max_elements=0: must be >= 1"),
    ({"max_elements": 200_000}, "--data.max_elements=200000: must be <= 100000"),
    ({"pad_multiple": 512, "max_elements": 256},
     "--data.pad_multiple=512: exceeds --data.max_elements=256"),
    ({"padding": "none"}, "--data.padding='none': must be one of fixed, bucket"),
    ({"target": "ytrue"}, "--data.target='ytrue': must be one of ygen, ycand"),
    ({"shuffle_buffer": -3}, "--data.shuffle_buffer=-3: must be >= 0"),
    ({"generation_seed": 2**31}, "--data.generation_seed=2147483648: must be <= 2147483647"),
    ({"data_dir": " "}, "--data.data_dir=' ': must not be empty"),
    ({"n_train": 2.5}, "--data.n_train=2.5: expected an integer"),
])
def test_invalid_values_name_flag_and_value(changes, message):
    with pytest.raises(ConfigError) as info:
        DataConfig(**changes).validate()
    assert str(info.value).startswith(message)


def test_fixed_padding_ignores_pad_multiple():
    DataConfig(padding="fixed", max_elements=100, pad_multiple=256).validate()


def test_flags_overlay_and_unknown_field():
    fv = flags.FlagValues()
    define_flags(DataConfig, fv)
    fv(["prog", "--data.config=gun", "--data.n_train=50", "--data.padding=fixed",
        "--data.truncate"])
    cfg = section_from_flags(DataConfig, flag_values=fv)
    cfg.validate()
    assert (cfg.config, cfg.n_train, cfg.padding, cfg.truncate) == ("gun", 50, "fixed", True)
    assert cfg.split_sizes() == (50, 200, 200)
    with pytest.raises(ConfigError, match="unknown data field"):
        DataConfig.from_dict({"max_element": 3})
