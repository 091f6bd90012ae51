"""Load one split of the dataset a :class:`DataConfig` names, building it first if needed.

Dispatches to the TFDS builders (``synthetic_pf``, ``delphes_pf``) through ``tfds.load`` with
the configured ``data_dir`` (and ``manual_dir`` for Delphes). Building writes files, so in a
multi-rank job call :func:`prepare_dataset` on rank 0, wait at a barrier, and load with
``prepare=False`` on the other ranks.
"""

from __future__ import annotations

import fcntl
import os

import tensorflow as tf
import tensorflow_datasets as tfds

from mlpf_tf.configbase import ConfigError
from mlpf_tf.data import tfds_delphes, tfds_synthetic
from mlpf_tf.data.config import DATASETS, SPLITS, DataConfig


def builder_config(cfg: DataConfig) -> tfds.core.BuilderConfig:
    """The TFDS BuilderConfig a data config selects (validates ``cfg`` first)."""
    cfg.validate()
    if cfg.dataset == "synthetic_pf":
        return tfds_synthetic.make_config(cfg.config, cfg.split_sizes(), cfg.generation_seed,
                                          detector=cfg.detector, targets=cfg.targets)
    if cfg.dataset == "delphes_pf":
        return tfds_delphes.DelphesPf.builder_configs[cfg.config]
    raise ConfigError(f"--data.dataset={cfg.dataset!r}: unknown dataset; known: "
                      f"{', '.join(DATASETS)}")


def _load_kwargs(cfg: DataConfig) -> dict:
    config = builder_config(cfg)
    kwargs: dict = {"data_dir": cfg.resolved_data_dir()}
    registered = _builder_class(cfg).builder_configs.get(config.name) is config
    if registered:
        kwargs["name"] = f"{cfg.dataset}/{config.name}"
    else:
        kwargs["name"] = cfg.dataset
        kwargs["builder_kwargs"] = {"config": config}
    return kwargs


def _builder_class(cfg: DataConfig):
    return tfds_synthetic.SyntheticPf if cfg.dataset == "synthetic_pf" else tfds_delphes.DelphesPf


def get_builder(cfg: DataConfig) -> tfds.core.DatasetBuilder:
    """The (possibly not yet prepared) TFDS builder of ``cfg``."""
    kwargs = _load_kwargs(cfg)
    return tfds.builder(kwargs["name"], data_dir=kwargs["data_dir"],
                        **kwargs.get("builder_kwargs", {}))


def prepare_dataset(cfg: DataConfig) -> tfds.core.DatasetBuilder:
    """Build the dataset into ``data_dir`` unless it is there already; returns the builder.

    Concurrent callers on one machine (several workers sharing ``data_dir``) are serialised by
    a lock file, so the dataset is built once and the others reuse it.
    """
    builder = get_builder(cfg)
    if builder.is_prepared():
        return builder
    download_config = None
    if cfg.dataset == "delphes_pf":
        manual_dir = cfg.resolved_manual_dir()
        tfds_delphes.split_files(manual_dir)  # clear error for a missing/empty directory
        download_config = tfds.download.DownloadConfig(manual_dir=manual_dir)
    data_dir = cfg.resolved_data_dir()
    os.makedirs(data_dir, exist_ok=True)
    lock_path = os.path.join(data_dir, f".{cfg.dataset}-{builder.builder_config.name}.lock")
    with open(lock_path, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:  # file systems without flock: build unserialised
            pass
        builder = get_builder(cfg)  # another process may have built it while we waited
        if not builder.is_prepared():
            builder.download_and_prepare(download_config=download_config)
    return builder


def _check_split_name(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")


def _check_split(cfg: DataConfig, builder: tfds.core.DatasetBuilder, split: str) -> None:
    _check_split_name(split)
    available = list(builder.info.splits.keys())
    if split not in available:
        raise ValueError(f"{cfg.dataset}/{cfg.config} in {cfg.resolved_data_dir()} has no split "
                         f"{split!r} (available: {', '.join(available)})")


def num_examples(cfg: DataConfig, split: str) -> int:
    """Events in one split of the prepared dataset."""
    builder = get_builder(cfg)
    _require_prepared(cfg, builder)
    _check_split(cfg, builder, split)
    return builder.info.splits[split].num_examples


def _require_prepared(cfg: DataConfig, builder: tfds.core.DatasetBuilder) -> None:
    if not builder.is_prepared():
        raise FileNotFoundError(
            f"{cfg.dataset}/{builder.builder_config.name} is not prepared in "
            f"{cfg.resolved_data_dir()} (--data.data_dir); build it first with "
            "prepare_dataset (on rank 0)")


def load_split(cfg: DataConfig, split: str, *, prepare: bool = True,
               ranges: list[tuple[int, int]] | None = None) -> tf.data.Dataset:
    """One split as a dataset of dicts {"X", "ygen", "ycand"} in the stored, fixed order.

    ``ranges`` selects the examples [start, stop) of each range, in that order, by TFDS split
    slicing, so only the records holding them are read (one Horovod rank's shard).
    """
    kwargs = _load_kwargs(cfg)
    _check_split_name(split)
    builder = prepare_dataset(cfg) if prepare else get_builder(cfg)
    _require_prepared(cfg, builder)
    _check_split(cfg, builder, split)
    spec, read_config = split, tfds.ReadConfig(shuffle_seed=0)
    if ranges is not None:
        total = builder.info.splits[split].num_examples
        bad = [(a, b) for a, b in ranges if not 0 <= a < b <= total]
        if bad or not ranges:
            raise ValueError(f"example ranges {bad or ranges} are not inside the {split} split "
                             f"of {total} examples")
        spec = "+".join(f"{split}[{a}:{b}]" for a, b in ranges)
        # one slice after the other, in the given order
        read_config = tfds.ReadConfig(shuffle_seed=0, interleave_cycle_length=1)
    return tfds.load(split=spec, download=False, shuffle_files=False,
                     read_config=read_config, **kwargs)
