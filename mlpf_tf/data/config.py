"""The ``data`` configuration section: which dataset, where it lives, and how it is batched.

Two datasets are known, both TFDS builders with the same features (X, ygen, ycand):

* ``synthetic_pf`` -- events generated at build time. Its config name is
  ``<process>`` or ``<process>_pu<N>`` with process one of gun, ttbar, qcd and N the mean
  number of pileup interactions (e.g. ``gun``, ``ttbar``, ``ttbar_pu10``, ``qcd_pu200``).
  Split sizes ``n_train/n_validation/n_test`` (0 = the config's default, see
  :data:`SYNTHETIC_DEFAULT_SIZES`) and ``generation_seed`` choose the events.
  ``detector`` picks the detector preset (default ``delphes_cms``) and ``targets`` the ygen
  conventions (default ``reference``).
* ``delphes_pf`` -- the reference Delphes files (``*.pkl.bz2``), read from ``manual_dir``;
  its only config is ``default``.

``data_dir`` defaults to the project-local ``.data/tfds`` (relative to the working
directory, ignored by git) so a checkout is self-contained; point it at a shared file system
on clusters. ``manual_dir`` defaults to ``<data_dir>/downloads/manual`` (the TFDS convention).

Padding: ``fixed`` pads every event to ``max_elements``; ``bucket`` pads each batch to the
next multiple of ``pad_multiple`` above its longest event (never beyond ``max_elements``).
Events longer than ``max_elements`` are an error unless ``truncate`` is set, which keeps
the first ``max_elements`` elements.

This module imports neither TensorFlow nor TFDS, so configs validate before compute starts.
"""

from __future__ import annotations

import dataclasses
import os
import re

from mlpf_tf.configbase import Section, param

DATASETS = ("synthetic_pf", "delphes_pf")
SPLITS = ("train", "validation", "test")
PROCESSES = ("gun", "ttbar", "qcd")
DELPHES_CONFIGS = ("default",)
#: Detector presets of the synthetic events (mlpf_tf.data.detector.DETECTOR_PRESETS) and
#: their ygen conventions; the first of each is the default.
DETECTORS = ("delphes_cms", "optimistic")
TARGET_CONVENTIONS = ("reference", "project")

#: Registered synthetic_pf configs: name -> (process, mean pileup).
SYNTHETIC_CONFIGS: dict[str, tuple[str, float]] = {
    "gun": ("gun", 0.0),
    "ttbar": ("ttbar", 0.0),
    "qcd": ("qcd", 0.0),
    "ttbar_pu10": ("ttbar", 10.0),
    "qcd_pu10": ("qcd", 10.0),
    "ttbar_pu20": ("ttbar", 20.0),
    "ttbar_pu200": ("ttbar", 200.0),
    "qcd_pu200": ("qcd", 200.0),
}

#: Default (train, validation, test) events per synthetic config, sized to build in about
#: a minute on two cores; pileup events cost more, so their defaults are smaller.
SYNTHETIC_DEFAULT_SIZES: dict[str, tuple[int, int, int]] = {
    "gun": (1000, 200, 200),
    "ttbar": (1000, 200, 200),
    "qcd": (1000, 200, 200),
    "ttbar_pu10": (500, 100, 100),
    "qcd_pu10": (500, 100, 100),
    "ttbar_pu20": (300, 60, 60),
    "ttbar_pu200": (100, 20, 20),
    "qcd_pu200": (100, 20, 20),
}

DEFAULT_GENERATION_SEED = 1234
#: The default synthetic dataset: ttbar with a mean of 20 Pythia minimum-bias pileup
#: interactions, the most pileup whose default split sizes (300/60/60) generate in about two
#: minutes on one core of the project's machine (about 4.4 events/s with the delphes_cms
#: detector; PU50 runs at about 2 events/s).
DEFAULT_SYNTHETIC_CONFIG = "ttbar_pu20"
MAX_SPLIT_EVENTS = 10_000_000
MAX_PILEUP = 1000
MAX_ELEMENTS_LIMIT = 100_000

_CONFIG_RE = re.compile(r"^(?P<process>[a-z]+)(?:_pu(?P<pileup>\d+))?$")


def parse_synthetic_config(name: str) -> tuple[str, float]:
    """``"ttbar_pu10"`` -> ``("ttbar", 10.0)``; ValueError naming the value otherwise."""
    if name in SYNTHETIC_CONFIGS:
        return SYNTHETIC_CONFIGS[name]
    match = _CONFIG_RE.match(name)
    if not match or match["process"] not in PROCESSES:
        raise ValueError(
            f"unknown synthetic_pf config {name!r}: expected <process> or <process>_pu<N> with "
            f"process one of {', '.join(PROCESSES)}; registered: {', '.join(SYNTHETIC_CONFIGS)}")
    pileup = float(match["pileup"] or 0)
    if pileup > MAX_PILEUP:
        raise ValueError(f"synthetic_pf config {name!r}: pileup {pileup:g} exceeds {MAX_PILEUP}")
    return match["process"], pileup


def default_split_sizes(name: str) -> tuple[int, int, int]:
    """Default (train, validation, test) sizes of a synthetic config name."""
    if name in SYNTHETIC_DEFAULT_SIZES:
        return SYNTHETIC_DEFAULT_SIZES[name]
    _, pileup = parse_synthetic_config(name)
    if pileup <= 0:
        return (1000, 200, 200)
    if pileup <= 20:
        return (300, 60, 60)
    return (100, 20, 20)


@dataclasses.dataclass
class DataConfig(Section):
    """Dataset choice, location, split sizes, target and batching/padding of the input."""

    SECTION = "data"

    dataset: str = param("synthetic_pf", "TFDS dataset to read", choices=DATASETS)
    config: str = param(
        DEFAULT_SYNTHETIC_CONFIG, "builder config: synthetic_pf: gun | ttbar | qcd | "
        "<process>_pu<N> (e.g. ttbar_pu10; default ttbar_pu20); delphes_pf: default")
    data_dir: str = param(".data/tfds", "TFDS data directory (built datasets are cached here)")
    manual_dir: str = param(
        "", "directory with the Delphes *.pkl.bz2 files (default <data_dir>/downloads/manual)")
    n_train: int = param(0, "synthetic_pf: train events (0 = the config's default)",
                         low=0, high=MAX_SPLIT_EVENTS)
    n_validation: int = param(0, "synthetic_pf: validation events (0 = the config's default)",
                              low=0, high=MAX_SPLIT_EVENTS)
    n_test: int = param(0, "synthetic_pf: test events (0 = the config's default)",
                        low=0, high=MAX_SPLIT_EVENTS)
    generation_seed: int = param(DEFAULT_GENERATION_SEED,
                                 "synthetic_pf: seed of the event generation", low=0,
                                 high=2**31 - 1)
    detector: str = param("delphes_cms", "synthetic_pf: detector preset (delphes_cms: the "
                          "Delphes CMS card's; optimistic: the suite's first, easier one)",
                          choices=DETECTORS)
    targets: str = param("reference", "synthetic_pf: ygen conventions (reference: the "
                         "reference ntuplizer's; project: the suite's own)",
                         choices=TARGET_CONVENTIONS)
    target: str = param("ygen", "target set: generator particles (ygen) or rule-based PF "
                        "candidates (ycand)", choices=("ygen", "ycand"))
    max_elements: int = param(6400, "largest number of elements per event (padding size in "
                              "fixed mode)", low=1, high=MAX_ELEMENTS_LIMIT)
    padding: str = param("bucket", "fixed: pad every event to max_elements; bucket: pad each "
                         "batch to a multiple of pad_multiple", choices=("fixed", "bucket"))
    pad_multiple: int = param(256, "bucket mode: batches are padded to a multiple of this",
                              low=1, high=MAX_ELEMENTS_LIMIT)
    truncate: bool = param(False, "drop elements beyond max_elements instead of failing")
    shuffle_buffer: int = param(1000, "events in the shuffle buffer (0 = no shuffling)", low=0,
                                high=MAX_SPLIT_EVENTS)
    cache: bool = param(False, "cache each rank's decoded events in memory after the first "
                        "epoch")
    prefetch: int = param(2, "batches prefetched (0 = no prefetching)", low=0, high=1000)

    def check(self) -> None:
        if self.dataset == "synthetic_pf":
            try:
                parse_synthetic_config(self.config)
            except ValueError as exc:
                self.fail("config", str(exc))
        else:
            if self.config not in DELPHES_CONFIGS:
                self.fail("config", f"unknown delphes_pf config; known: "
                          f"{', '.join(DELPHES_CONFIGS)}")
            for name, default in (("detector", DETECTORS[0]),
                                  ("targets", TARGET_CONVENTIONS[0])):
                if getattr(self, name) != default:
                    self.fail(name, "applies to synthetic_pf only (delphes_pf events come "
                              "from the files)")
            for name in ("n_train", "n_validation", "n_test"):
                if getattr(self, name):
                    self.fail(name, "split sizes apply to synthetic_pf only (delphes_pf splits "
                              "are the files in manual_dir); leave it 0")
        if not self.data_dir.strip():
            self.fail("data_dir", "must not be empty")
        if self.padding == "bucket" and self.pad_multiple > self.max_elements:
            self.fail("pad_multiple", f"exceeds --data.max_elements={self.max_elements}")

    # -- derived values -------------------------------------------------------------------

    def split_sizes(self) -> tuple[int, int, int]:
        """(train, validation, test) events of a synthetic config, defaults resolved."""
        defaults = default_split_sizes(self.config)
        given = (self.n_train, self.n_validation, self.n_test)
        return tuple(g or d for g, d in zip(given, defaults))  # type: ignore[return-value]

    def resolved_data_dir(self) -> str:
        return os.path.abspath(os.path.expanduser(self.data_dir))

    def resolved_manual_dir(self) -> str:
        if self.manual_dir:
            return os.path.abspath(os.path.expanduser(self.manual_dir))
        return os.path.join(self.resolved_data_dir(), "downloads", "manual")
