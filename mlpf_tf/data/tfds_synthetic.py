"""TFDS builder ``synthetic_pf``: MLPF events generated at build time by our event generator.

Configs are ``<process>`` or ``<process>_pu<N>`` (process gun, ttbar or qcd; N the mean
pileup); the registered ones are listed in :data:`mlpf_tf.data.config.SYNTHETIC_CONFIGS`, e.g.
``tfds.load("synthetic_pf/gun", data_dir=...)``. Split sizes and the generation seed are fields
of :class:`SyntheticPfConfig`; :func:`make_config` gives a config for any sizes/seed, named so
that different choices never share a cache directory (``ttbar-n500-100-100-s7``).

Generation is deterministic: each split draws its events from ``generate_events`` with a seed
derived from (config seed, split) by :func:`split_seed`, so train, validation and test never
share events and the same config always yields the same examples. TFDS shows a progress bar
per split while generating. When the generator changes its output, bump ``VERSION``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from mlpf_tf.data import schema
from mlpf_tf.data.config import (
    DEFAULT_GENERATION_SEED,
    DETECTORS,
    SPLITS,
    SYNTHETIC_CONFIGS,
    TARGET_CONVENTIONS,
    default_split_sizes,
    parse_synthetic_config,
)
from mlpf_tf.data.delphes_reader import complete_ycand
from mlpf_tf.data.tfds_delphes import event_features

# Pythia accepts seeds up to 900 000 000.
_SEED_RANGE = 900_000_000


@dataclasses.dataclass(eq=False)
class SyntheticPfConfig(tfds.core.BuilderConfig):
    """A synthetic_pf config: process, mean pileup, events per split and generation seed."""

    process: str = "gun"
    pileup: float = 0.0
    n_train: int = 1000
    n_validation: int = 200
    n_test: int = 200
    seed: int = DEFAULT_GENERATION_SEED
    detector: str = DETECTORS[0]
    targets: str = TARGET_CONVENTIONS[0]

    def detector_config(self):
        """The DetectorConfig these events are simulated with."""
        from mlpf_tf.data.detector import PROJECT_TARGETS, detector_preset

        overrides = PROJECT_TARGETS if self.targets == "project" else {}
        if self.targets == "reference" and self.detector == "optimistic":
            overrides = {"target_convention": "reference", "target_min_e_photon": 0.0,
                         "target_min_e_neutral_hadron": 9.0}
        return detector_preset(self.detector, **overrides)

    def split_size(self, split: str) -> int:
        return {"train": self.n_train, "validation": self.n_validation,
                "test": self.n_test}[split]


def split_seed(seed: int, split: str) -> int:
    """A seed for one split, derived from the config seed; distinct per split."""
    state = np.random.SeedSequence([seed, SPLITS.index(split)]).generate_state(1)[0]
    return int(state) % _SEED_RANGE + 1


def _registered(name: str) -> SyntheticPfConfig:
    process, pileup = SYNTHETIC_CONFIGS[name]
    n_train, n_validation, n_test = default_split_sizes(name)
    return SyntheticPfConfig(
        name=name, process=process, pileup=pileup, n_train=n_train, n_validation=n_validation,
        n_test=n_test, seed=DEFAULT_GENERATION_SEED,
        description=f"{process} events, mean pileup {pileup:g}, "
                    f"{n_train}/{n_validation}/{n_test} events, seed {DEFAULT_GENERATION_SEED}")


def make_config(name: str, sizes: tuple[int, int, int] | None = None,
                seed: int | None = None, detector: str = DETECTORS[0],
                targets: str = TARGET_CONVENTIONS[0]) -> SyntheticPfConfig:
    """The config for ``name`` (e.g. ``"ttbar_pu10"``) with optional sizes and seed.

    With the defaults of a registered name this is the registered config itself (so the
    dataset is shared with ``tfds.load("synthetic_pf/<name>")``); otherwise a custom config
    whose name encodes the sizes and seed.
    """
    process, pileup = parse_synthetic_config(name)
    sizes = tuple(sizes) if sizes is not None else default_split_sizes(name)
    seed = DEFAULT_GENERATION_SEED if seed is None else int(seed)
    if any(int(n) < 1 for n in sizes):
        raise ValueError(f"synthetic_pf/{name}: split sizes must be >= 1, got {sizes}")
    if detector not in DETECTORS:
        raise ValueError(f"unknown detector {detector!r}; known: {', '.join(DETECTORS)}")
    if targets not in TARGET_CONVENTIONS:
        raise ValueError(f"unknown target conventions {targets!r}; known: "
                         f"{', '.join(TARGET_CONVENTIONS)}")
    default_choice = (detector, targets) == (DETECTORS[0], TARGET_CONVENTIONS[0])
    if name in SYNTHETIC_CONFIGS and sizes == default_split_sizes(name) and (
            seed == DEFAULT_GENERATION_SEED) and default_choice:
        return SyntheticPf.builder_configs[name]
    n_train, n_validation, n_test = (int(n) for n in sizes)
    suffix = "" if default_choice else f"-{detector}-{targets}"
    return SyntheticPfConfig(
        name=f"{name}-n{n_train}-{n_validation}-{n_test}-s{seed}{suffix}", process=process,
        pileup=pileup, n_train=n_train, n_validation=n_validation, n_test=n_test, seed=seed,
        detector=detector, targets=targets,
        description=f"{process} events, mean pileup {pileup:g}, custom sizes and seed, "
                    f"detector {detector}, {targets} targets")


class SyntheticPf(tfds.core.GeneratorBasedBuilder):
    """Synthetic MLPF events (particle gun, ttbar, QCD; optional pileup) through our detector."""

    name = "synthetic_pf"
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"1.0.0": "First release.",
                     "2.0.0": "delphes_cms detector and reference target conventions by "
                              "default (configs can choose optimistic / project); ycand "
                              "completed as in delphes_pf (pT and E of every candidate)."}
    BUILDER_CONFIGS = [_registered(name) for name in SYNTHETIC_CONFIGS]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(description=__doc__, features=event_features())

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        return {split: self._generate_examples(split) for split in SPLITS}

    def _generate_examples(self, split: str):
        from mlpf_tf.data.generate import generate_events  # imports the generator lazily

        cfg = self.builder_config
        n = cfg.split_size(split)
        count = 0
        events = generate_events(cfg.process, n, seed=split_seed(cfg.seed, split),
                                 pileup=cfg.pileup, detector=cfg.detector_config())
        for count, event in enumerate(events, start=1):
            X, ygen, ycand = (np.asarray(a, dtype=np.float32) for a in event)
            # the same ycand convention as delphes_pf: pT and E both filled (massless)
            ycand = complete_ycand(ycand)
            schema.check_event(X, ygen, ycand,
                               where=f"synthetic_pf/{cfg.name} {split} event {count - 1}")
            yield count - 1, {"X": X, "ygen": ygen, "ycand": ycand}
        if count != n:
            raise RuntimeError(f"synthetic_pf/{cfg.name}: generator gave {count} {split} events, "
                               f"expected {n}")
