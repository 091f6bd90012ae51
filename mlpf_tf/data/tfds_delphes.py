"""TFDS builder ``delphes_pf``: the reference Delphes particle-flow files as a TFDS dataset.

The ``*.pkl.bz2`` files (Zenodo record 4559324) are read from the manual directory with the
restricted reader of :mod:`mlpf_tf.data.delphes_reader`. Split assignment by file name:

* validation: held-out ttbar files (names containing ``tev14_pythia8_ttbar``, sorted, taken
  from the end) holding at least :data:`VALIDATION_EVENTS` (5,000, as the reference
  validated on) events when the files allow: ``ceil(5000 / 100)`` = 50 files of 100 events,
  but never more than :data:`VALIDATION_MAX_FRACTION` (a fifth) of the ttbar files, and at
  least one when there are two or more (otherwise no validation split);
* train: the other ttbar files;
* test: files whose name contains ``qcd``.

Every example has the features X (elements x 12), ygen and ycand (elements x 7), float32,
with ycand completed (pT for neutral, E for charged candidates, see ``complete_ycand``).
If the manual directory holds a checksum manifest named ``SHA256SUMS`` (``sha256sum``
format), every file is checked against it before it is unpickled and unlisted files are
refused. The dataset is built once per data directory: after changing the files, delete
``<data_dir>/delphes_pf`` to rebuild. Importing this module registers the builder, so
``tfds.load("delphes_pf", data_dir=..., download_and_prepare_kwargs={"download_config":
tfds.download.DownloadConfig(manual_dir=...)})`` works.
"""

from __future__ import annotations

import math
import os

import numpy as np
import tensorflow_datasets as tfds

from mlpf_tf.data import schema
from mlpf_tf.data.delphes_reader import DelphesFileError, read_delphes_file, read_manifest

TTBAR_PATTERN = "tev14_pythia8_ttbar"
QCD_PATTERN = "qcd"
FILE_SUFFIX = ".pkl.bz2"
MANIFEST_NAME = "SHA256SUMS"
#: Validation events the held-out ttbar files should hold (the reference's 5,000), the
#: events per file of the public dataset, and the largest share of ttbar files held out.
VALIDATION_EVENTS = 5_000
EVENTS_PER_FILE = 100
VALIDATION_MAX_FRACTION = 0.2


def event_features() -> tfds.features.FeaturesDict:
    """The feature spec shared by every MLPF builder."""
    return tfds.features.FeaturesDict({
        "X": tfds.features.Tensor(shape=(None, schema.NUM_FEATURES), dtype=np.float32),
        "ygen": tfds.features.Tensor(shape=(None, schema.NUM_TARGETS), dtype=np.float32),
        "ycand": tfds.features.Tensor(shape=(None, schema.NUM_TARGETS), dtype=np.float32),
    })


def validation_file_count(n_ttbar: int) -> int:
    """Held-out ttbar files for validation out of ``n_ttbar`` (see the module docstring)."""
    wanted = math.ceil(VALIDATION_EVENTS / EVENTS_PER_FILE)
    return max(1, min(wanted, int(n_ttbar * VALIDATION_MAX_FRACTION)))


def split_files(manual_dir: str) -> dict[str, list[str]]:
    """Assign the ``*.pkl.bz2`` files of ``manual_dir`` to splits (see the module docstring)."""
    if not os.path.isdir(manual_dir):
        raise DelphesFileError(
            f"delphes_pf: manual directory {manual_dir} does not exist; put the Delphes "
            f"*{FILE_SUFFIX} files there (or set --data.manual_dir)")
    names = sorted(n for n in os.listdir(manual_dir) if n.endswith(FILE_SUFFIX))
    ttbar = [os.path.join(manual_dir, n) for n in names if TTBAR_PATTERN in n]
    qcd = [os.path.join(manual_dir, n) for n in names
           if QCD_PATTERN in n and TTBAR_PATTERN not in n]
    if not ttbar and not qcd:
        raise DelphesFileError(
            f"delphes_pf: no *{FILE_SUFFIX} files with {TTBAR_PATTERN!r} or {QCD_PATTERN!r} in "
            f"their name in manual directory {manual_dir} ({len(names)} {FILE_SUFFIX} files)")
    splits: dict[str, list[str]] = {}
    if len(ttbar) >= 2:
        n_val = validation_file_count(len(ttbar))
        splits["train"], splits["validation"] = ttbar[:-n_val], ttbar[-n_val:]
    elif ttbar:
        splits["train"] = ttbar
    if qcd:
        splits["test"] = qcd
    return splits


class DelphesPf(tfds.core.GeneratorBasedBuilder):
    """Delphes ttbar (train/validation) and QCD (test) events with PU 200 at 14 TeV."""

    name = "delphes_pf"
    VERSION = tfds.core.Version("2.0.0")
    RELEASE_NOTES = {"1.0.0": "First release: X, ygen, ycand with completed ycand pT/E.",
                     "2.0.0": "Validation: held-out ttbar files up to 5,000 events."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(
        name="default", description="ttbar files -> train/validation (held-out files, up to "
                                    "5,000 events), qcd files -> test")]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the Delphes particle-flow files (*.pkl.bz2, Zenodo record 4559324) and put "
        "them in the manual directory: files named *tev14_pythia8_ttbar* become train and "
        "validation (the last files, up to 5,000 events), files named *qcd* become test.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__, features=event_features(),
            homepage="https://zenodo.org/record/4559324")

    def _split_generators(self, dl_manager):
        try:
            manual_dir = os.fspath(dl_manager.manual_dir)
        except AssertionError as exc:
            raise DelphesFileError(f"delphes_pf: {exc}") from None
        manifest_path = os.path.join(manual_dir, MANIFEST_NAME)
        manifest = read_manifest(manifest_path) if os.path.exists(manifest_path) else None
        return {split: self._generate_examples(files, manifest)
                for split, files in split_files(manual_dir).items()}

    def _generate_examples(self, files, manifest=None):
        for path in files:
            base = os.path.basename(path)
            for i, event in enumerate(read_delphes_file(path, manifest=manifest)):
                yield f"{base}:{i}", {"X": event.X, "ygen": event.ygen, "ycand": event.ycand}
