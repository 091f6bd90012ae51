"""Read and write the reference Delphes particle-flow files (``*.pkl.bz2``).

Each file is a bz2-compressed pickle of one dict ``{"X": [...], "ygen": [...], "ycand": [...]}``
holding one float array per event: X is (elements x 12), ygen and ycand (elements x 7).

Security: unpickling runs code chosen by whoever wrote the file (a pickle can call any
importable function). Files are therefore read with the guarded unpickler of
:mod:`mlpf_tf.data.safe_unpickle`: an allow-list of pickle opcodes, numpy globals resolved to
wrappers accepting exactly numpy's own call shapes, float/int dtypes only, C-contiguous arrays
whose byte size matches their shape, and caps (:data:`DEFAULT_LIMITS`) on elements per event,
events per file and decompressed bytes (the bz2 stream is decompressed lazily under the cap).
The result is then checked against the expected structure before any array is used. Every
failure is a one-line :class:`DelphesFileError` naming the file. An optional checksum manifest
(``sha256sum`` format, :func:`read_manifest`) is checked before unpickling: with it, only the
files you listed, byte for byte, are read. Prefer files whose origin you trust all the same.

ycand completion: in the reference files a neutral candidate (neutral hadron, photon) carries
only its energy E (pT column 0) and a charged one (charged hadron, electron, muon) only its pT
(E column 0). :func:`complete_ycand` fills the missing value from the other and eta, treating
candidates as massless: ``pT = E / cosh(eta)`` and ``E = pT * cosh(eta)``. Values already
present (non-zero) are kept; rows of class 0 are left as they are.
"""

from __future__ import annotations

import bz2
import hashlib
import os
import pickle
from collections.abc import Iterable, Iterator

import numpy as np

from mlpf_tf.data import safe_unpickle, schema
from mlpf_tf.data.safe_unpickle import PickleLimits

KEYS = ("X", "ygen", "ycand")
#: Caps of the reader: the reference files hold 100 events of at most 6400 elements, float64
#: (about 135 MB decompressed at most); the caps leave room above that.
DEFAULT_LIMITS = PickleLimits(max_elements=50_000, max_columns=schema.NUM_FEATURES,
                              max_list_length=1_000, max_decompressed_bytes=256 << 20)


class DelphesFileError(ValueError):
    """A Delphes file is missing, corrupt, unsafe or not in the expected structure."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit] + "..."


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes (as stored, i.e. compressed), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(path: str | os.PathLike) -> dict[str, str]:
    """``{file name: sha256}`` from a ``sha256sum``-style manifest (``<hex>  <name>`` lines).

    Blank lines and lines starting with ``#`` are skipped; names are base names.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DelphesFileError(f"{path}: checksum manifest not found")
    entries: dict[str, str] = {}
    with open(path, encoding="utf-8", errors="replace") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split(None, 1)
            digest = parts[0].lower()
            if (len(parts) != 2 or len(digest) != 64
                    or any(c not in "0123456789abcdef" for c in digest)):
                raise DelphesFileError(f"{path}: line {number}: expected '<sha256 hex>  <file "
                                       f"name>', got {_one_line(line, 80)!r}")
            entries[os.path.basename(parts[1].lstrip("*").strip())] = digest
    return entries


def check_manifest(path: str, manifest: dict[str, str]) -> None:
    """Refuse ``path`` unless the manifest lists it with the file's SHA-256."""
    name = os.path.basename(path)
    if name not in manifest:
        raise DelphesFileError(f"{path}: not listed in the checksum manifest; refused")
    actual = file_sha256(path)
    if actual != manifest[name]:
        raise DelphesFileError(f"{path}: SHA-256 {actual} differs from the manifest's "
                               f"{manifest[name]}; refused")


def _load_pickle(path: str, limits: PickleLimits) -> object:
    if not os.path.isfile(path):
        raise DelphesFileError(f"{path}: no such file")
    try:
        with bz2.open(path, "rb") as fh:
            return safe_unpickle.load(fh, limits)
    except pickle.UnpicklingError as exc:
        raise DelphesFileError(
            f"{path}: refused or invalid pickle: {_one_line(exc)}") from None
    except EOFError as exc:
        detail = _one_line(exc) or "unexpected end of data"
        raise DelphesFileError(f"{path}: truncated file ({detail})") from None
    except Exception as exc:  # noqa: BLE001 - any failure of a hostile file is one line
        raise DelphesFileError(
            f"{path}: corrupt file, not a bz2-compressed pickle of arrays "
            f"({type(exc).__name__}: {_one_line(exc)})") from None


def complete_ycand(ycand: np.ndarray) -> np.ndarray:
    """Fill the missing pT (neutral) or E (charged) of ycand rows from the other and eta."""
    y = np.array(ycand, dtype=schema.FEATURE_DTYPE, copy=True)
    cls = y[:, schema.T_CLS]
    cosh_eta = np.cosh(y[:, schema.T_ETA].astype(np.float64))
    neutral = np.isin(cls, schema.NEUTRAL_CLASSES) & (y[:, schema.T_PT] == 0)
    charged = np.isin(cls, schema.CHARGED_CLASSES) & (y[:, schema.T_E] == 0)
    y[neutral, schema.T_PT] = y[neutral, schema.T_E] / cosh_eta[neutral]
    y[charged, schema.T_E] = y[charged, schema.T_PT] * cosh_eta[charged]
    return y


def strip_ycand(ycand: np.ndarray) -> np.ndarray:
    """The reverse as stored in the files: neutral rows lose pT, charged rows lose E."""
    y = np.array(ycand, dtype=schema.FEATURE_DTYPE, copy=True)
    cls = y[:, schema.T_CLS]
    y[np.isin(cls, schema.NEUTRAL_CLASSES), schema.T_PT] = 0
    y[np.isin(cls, schema.CHARGED_CLASSES), schema.T_E] = 0
    return y


def _check_structure(path: str, data: object) -> int:
    if not isinstance(data, dict):
        raise DelphesFileError(
            f"{path}: expected a dict with keys {list(KEYS)}, got {type(data).__name__}")
    if set(data) != set(KEYS):
        raise DelphesFileError(
            f"{path}: expected exactly the keys {list(KEYS)}, got "
            f"{_one_line(sorted(map(str, data)), 120)}")
    lengths = {}
    for key in KEYS:
        if not isinstance(data[key], list):
            raise DelphesFileError(
                f"{path}: {key!r} is {type(data[key]).__name__}, expected a list of arrays")
        lengths[key] = len(data[key])
    if len(set(lengths.values())) != 1:
        raise DelphesFileError(f"{path}: event counts differ between keys: {lengths}")
    return lengths["X"]


def read_delphes_file(path: str | os.PathLike, *, complete: bool = True,
                      limits: PickleLimits = DEFAULT_LIMITS,
                      manifest: dict[str, str] | None = None) -> list[schema.Event]:
    """All events of one ``*.pkl.bz2`` file as float32 :class:`schema.Event` tuples.

    ``complete`` fills the missing ycand pT/E (see the module docstring). ``limits`` caps
    elements per event, events per file and decompressed bytes. With a ``manifest`` (see
    :func:`read_manifest`) the file's SHA-256 is checked before anything is unpickled. Every
    failure is one :class:`DelphesFileError` line naming the file (and a bad event's index).
    """
    path = os.fspath(path)
    if manifest is not None:
        check_manifest(path, manifest)
    data = _load_pickle(path, limits)
    n = _check_structure(path, data)
    events = []
    for i in range(n):
        X, ygen, ycand = (data[k][i] for k in KEYS)
        try:
            schema.check_event(X, ygen, ycand, where=f"{path}: event {i}")
            ycand = complete_ycand(ycand) if complete else ycand.astype(schema.FEATURE_DTYPE)
            events.append(schema.Event(X.astype(schema.FEATURE_DTYPE),
                                       ygen.astype(schema.FEATURE_DTYPE), ycand))
        except schema.SchemaError as exc:
            raise DelphesFileError(_one_line(exc)) from None
        except Exception as exc:  # noqa: BLE001 - never a raw traceback for a bad file
            raise DelphesFileError(f"{path}: event {i}: {type(exc).__name__}: "
                                   f"{_one_line(exc)}") from None
    return events


def iter_delphes_files(paths: Iterable[str | os.PathLike]) -> Iterator[tuple[str, int,
                                                                          schema.Event]]:
    """(file, index in file, event) over several files, one file in memory at a time."""
    for path in paths:
        for i, event in enumerate(read_delphes_file(path)):
            yield os.fspath(path), i, event


def write_delphes_file(path: str | os.PathLike, events: Iterable[schema.Event], *,
                       strip: bool = True) -> int:
    """Write events in the reference format; returns the number of events written.

    ``strip`` stores ycand as the reference files do (neutral rows without pT, charged rows
    without E). The file appears atomically (written to a temporary name, then renamed).
    """
    path = os.fspath(path)
    data: dict[str, list[np.ndarray]] = {k: [] for k in KEYS}
    for i, event in enumerate(events):
        X, ygen, ycand = (np.asarray(a) for a in event)
        schema.check_event(X, ygen, ycand, where=f"{path}: event {i}")
        data["X"].append(X.astype(schema.FEATURE_DTYPE))
        data["ygen"].append(ygen.astype(schema.FEATURE_DTYPE))
        data["ycand"].append(strip_ycand(ycand) if strip else ycand.astype(schema.FEATURE_DTYPE))
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    try:
        with bz2.open(tmp, "wb") as fh:
            pickle.dump(data, fh, protocol=4)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return len(data["X"])
