"""The synthetic_pf builder: deterministic builds, distinct split seeds, config naming."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from mlpf_tf.data import datasets, schema
from mlpf_tf.data.config import DEFAULT_GENERATION_SEED, DataConfig
from mlpf_tf.data.generate import generate_events
from mlpf_tf.data.tfds_synthetic import SyntheticPf, SyntheticPfConfig, make_config, split_seed

try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # already initialised by another test module
    pass


def _short_generate_events(process, n_events, seed, pileup=0.0, detector=None):
    """A faulty generator that yields one event too few (real events otherwise)."""
    return generate_events(process, n_events - 1, seed, pileup, detector)


def _examples(cfg, split):
    return list(datasets.load_split(cfg, split).as_numpy_iterator())


def _key(example):
    return example["X"].tobytes()


SIZES = (6, 3, 3)


def test_two_builds_give_equal_examples(tmp_path):
    cfgs = [DataConfig(config="gun", data_dir=str(tmp_path / d), n_train=SIZES[0],
                       n_validation=SIZES[1], n_test=SIZES[2], generation_seed=5)
            for d in ("a", "b")]
    for split, n in zip(("train", "validation", "test"), SIZES):
        a, b = (_examples(cfg, split) for cfg in cfgs)
        assert len(a) == len(b) == n == datasets.num_examples(cfgs[1], split)
        for ea, eb in zip(a, b):
            for key in ("X", "ygen", "ycand"):
                np.testing.assert_array_equal(ea[key], eb[key])
                assert ea[key].dtype == np.float32
            assert ea["X"].shape[1] == schema.NUM_FEATURES
            assert ea["ygen"].shape == ea["ycand"].shape == (ea["X"].shape[0], 7)
    builder = datasets.get_builder(cfgs[0])
    assert builder.builder_config.name == "gun-n6-3-3-s5"
    assert str(tmp_path / "a") in str(builder.data_dir)


def test_splits_and_seeds_give_different_events(tmp_path):
    cfg = DataConfig(config="gun", data_dir=str(tmp_path), n_train=SIZES[0],
                     n_validation=SIZES[1], n_test=SIZES[2], generation_seed=5)
    train = {_key(e) for e in _examples(cfg, "train")}
    test = {_key(e) for e in _examples(cfg, "test")}
    assert len(train) == SIZES[0] and not train & test
    other = {_key(e) for e in _examples(cfg.replace(generation_seed=6), "train")}
    assert not train & other


def test_registered_gun_config_builds_with_tfds_load(tmp_path):
    """tfds.load("synthetic_pf/gun") builds the registered config: 1000/200/200 events."""
    ds, info = tfds.load("synthetic_pf/gun", split="validation", data_dir=str(tmp_path),
                         with_info=True)
    assert {s: info.splits[s].num_examples for s in ("train", "validation", "test")} == {
        "train": 1000, "validation": 200, "test": 200}
    first = next(iter(ds.as_numpy_iterator()))
    assert first["X"].shape[1] == 12 and first["ygen"].shape == (first["X"].shape[0], 7)
    builder = tfds.builder("synthetic_pf/gun", data_dir=str(tmp_path))
    cfg = builder.builder_config
    assert isinstance(cfg, SyntheticPfConfig)
    assert (cfg.process, cfg.pileup, cfg.n_train, cfg.n_validation, cfg.n_test, cfg.seed) == (
        "gun", 0.0, 1000, 200, 200, DEFAULT_GENERATION_SEED)
    assert make_config("gun") is cfg
    assert datasets.get_builder(DataConfig(config="gun", data_dir=str(tmp_path))
                                ).builder_config is cfg
    with pytest.raises(ValueError, match=r"BuilderConfig nope not found"):
        tfds.builder("synthetic_pf/nope", data_dir=str(tmp_path))


def test_make_config_names_custom_sizes_and_seed():
    assert make_config("ttbar_pu10").name == "ttbar_pu10"
    assert make_config("ttbar_pu10", (500, 100, 100), DEFAULT_GENERATION_SEED).name == (
        "ttbar_pu10")
    custom = make_config("ttbar_pu10", (50, 10, 10), 3)
    assert (custom.name, custom.process, custom.pileup) == ("ttbar_pu10-n50-10-10-s3",
                                                            "ttbar", 10.0)
    assert make_config("qcd_pu37").name == "qcd_pu37-n100-20-20-s1234"
    with pytest.raises(ValueError, match=r"synthetic_pf/gun: split sizes must be >= 1, got "
                                         r"\(0, 1, 1\)"):
        make_config("gun", (0, 1, 1))
    with pytest.raises(ValueError, match=r"unknown synthetic_pf config 'tt'"):
        make_config("tt")
    assert set(SyntheticPf.builder_configs) >= {"gun", "ttbar", "qcd", "ttbar_pu10",
                                                "qcd_pu10", "ttbar_pu200"}


def test_split_seeds_are_distinct_and_stable():
    seeds = [split_seed(DEFAULT_GENERATION_SEED, s) for s in ("train", "validation", "test")]
    assert len(set(seeds)) == 3 and all(1 <= s <= 900_000_000 for s in seeds)
    assert seeds == [split_seed(DEFAULT_GENERATION_SEED, s)
                     for s in ("train", "validation", "test")]
    assert split_seed(1, "train") != split_seed(2, "train")


def test_short_generator_is_an_error(tmp_path, monkeypatch):
    module = types.ModuleType("mlpf_tf.data.generate")
    module.generate_events = _short_generate_events
    monkeypatch.setitem(sys.modules, "mlpf_tf.data.generate", module)
    cfg = DataConfig(config="gun", data_dir=str(tmp_path), n_train=3, n_validation=1, n_test=1)
    with pytest.raises(RuntimeError, match=r"synthetic_pf/gun-n3-1-1-s1234: generator gave 2 "
                                           r"train events, expected 3"):
        datasets.prepare_dataset(cfg)


def test_data_stats_collect_summarises_every_split(tmp_path):
    import yaml

    from benchmark.data_stats import collect
    from mlpf_tf.configbase import dump_yaml

    cfg = DataConfig(config="gun", data_dir=str(tmp_path), n_train=SIZES[0],
                     n_validation=SIZES[1], n_test=SIZES[2], generation_seed=5)
    summary = collect(cfg)
    assert summary["dataset"] == "synthetic_pf/gun-n6-3-3-s5"
    assert {s: e["events"] for s, e in summary["splits"].items()} == {
        "train": 6, "validation": 3, "test": 3}
    train = summary["splits"]["train"]["stats"]
    elements = [ex["X"].shape[0] for ex in _examples(cfg, "train")]
    assert train["n_events"] == 6
    assert train["elements_per_event"]["max"] == max(elements)
    assert abs(sum(train["ygen_class_fractions"].values()) - 1) < 1e-9
    assert yaml.safe_load(dump_yaml(summary))["splits"]["test"]["events"] == 3
    assert collect(cfg, max_events=2)["splits"]["train"]["stats"]["n_events"] == 2


def test_concurrent_prepare_waits_for_the_lock_and_reuses_the_build(tmp_path):
    import fcntl
    import threading

    cfg = DataConfig(config="gun", data_dir=str(tmp_path), n_train=4, n_validation=2,
                     n_test=2)
    lock_path = tmp_path / ".synthetic_pf-gun-n4-2-2-s1234.lock"
    results = []
    with open(lock_path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another process building the same dataset
        worker = threading.Thread(target=lambda: results.append(datasets.prepare_dataset(cfg)))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and not results  # waits instead of building alongside
        fcntl.flock(held, fcntl.LOCK_UN)
    worker.join(60)
    assert not worker.is_alive() and results[0].is_prepared()
    assert datasets.num_examples(cfg, "train") == 4


def test_detector_and_target_choices_build_the_matching_events(tmp_path):
    from mlpf_tf.configbase import ConfigError
    from mlpf_tf.data.delphes_reader import complete_ycand
    from mlpf_tf.data.detector import PROJECT_TARGETS, detector_preset

    kw = dict(config="gun", data_dir=str(tmp_path), n_train=2, n_validation=1, n_test=1,
              generation_seed=5)
    default = DataConfig(**kw)
    optimistic = DataConfig(**kw, detector="optimistic", targets="project")
    names = {datasets.get_builder(c).builder_config.name for c in (default, optimistic)}
    assert names == {"gun-n2-1-1-s5", "gun-n2-1-1-s5-optimistic-project"}
    got = _examples(optimistic, "train")
    expected = list(generate_events("gun", 2, split_seed(5, "train"),
                                    detector=detector_preset("optimistic", **PROJECT_TARGETS)))
    assert sorted(_key(g) for g in got) == sorted(e.X.tobytes() for e in expected)
    got_default = _examples(default, "train")
    expected = list(generate_events("gun", 2, split_seed(5, "train")))
    assert sorted(_key(g) for g in got_default) == sorted(e.X.tobytes() for e in expected)
    # ycand as delphes_pf gives it: every candidate with both pT and E
    by_key = {e.X.tobytes(): e for e in expected}
    for g in got_default:
        ycand = g["ycand"]
        np.testing.assert_array_equal(ycand, complete_ycand(by_key[_key(g)].ycand))
        real = ycand[:, schema.T_CLS] > 0
        assert real.any() and (ycand[real, schema.T_PT] > 0).all()
        assert (ycand[real, schema.T_E] > 0).all()
    with pytest.raises(ConfigError, match=r"^--data\.detector='cms': must be one of "):
        DataConfig(**kw, detector="cms").validate()
    with pytest.raises(ConfigError, match=r"^--data\.detector='optimistic': applies to "
                                          r"synthetic_pf only"):
        DataConfig(dataset="delphes_pf", config="default", detector="optimistic").validate()
