"""Read and write the reference Delphes particle-flow files (``*.pkl.bz2``).

Each file is a bz2-compressed pickle of one dict ``{"X": [...], "ygen": [...], "ycand": [...]}``
holding one float array per event: X is (elements x 12), ygen and ycand (elements x 7).

Security: unpickling runs code chosen by whoever wrote the file (a pickle can call any
importable function). Files are therefore read with :class:`NumpyOnlyUnpickler`, which resolves
only the few numpy globals that rebuild arrays and refuses every other global, and the result is
then checked against the expected structure before any array is used. Only read files whose
origin you trust all the same: the check narrows the attack surface, it does not sandbox numpy.

ycand completion: in the reference files a neutral candidate (neutral hadron, photon) carries
only its energy E (pT column 0) and a charged one (charged hadron, electron, muon) only its pT
(E column 0). :func:`complete_ycand` fills the missing value from the other and eta, treating
candidates as massless: ``pT = E / cosh(eta)`` and ``E = pT * cosh(eta)``. Values already
present (non-zero) are kept; rows of class 0 are left as they are.
"""

from __future__ import annotations

import bz2
import os
import pickle
from collections.abc import Iterable, Iterator

import numpy as np

from mlpf_tf.data import schema

KEYS = ("X", "ygen", "ycand")


class DelphesFileError(ValueError):
    """A Delphes file is missing, corrupt, unsafe or not in the expected structure."""


def _numpy_globals() -> dict[tuple[str, str], object]:
    """The globals numpy arrays need when unpickled, under numpy 1 and numpy 2 module names."""
    from numpy.core import multiarray, numeric

    allowed: dict[tuple[str, str], object] = {}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = multiarray.scalar
        # Pickle protocol 5 rebuilds contiguous arrays from an in-band buffer with this.
        allowed[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    # Protocols 0-2 store the raw bytes of an array as a latin-1 text, re-encoded on load.
    allowed[("_codecs", "encode")] = _latin1_encode
    return allowed


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """``codecs.encode`` restricted to the latin-1 text -> bytes step of old pickle protocols."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_ALLOWED = _numpy_globals()


class NumpyOnlyUnpickler(pickle.Unpickler):
    """An unpickler that can rebuild numpy arrays, dicts, lists and scalars, and nothing else."""

    def find_class(self, module: str, name: str):  # noqa: D401 - pickle API
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: only numpy array reconstruction is allowed"
            ) from None


def _load_pickle(path: str) -> object:
    if not os.path.isfile(path):
        raise DelphesFileError(f"{path}: no such file")
    try:
        with bz2.open(path, "rb") as fh:
            return NumpyOnlyUnpickler(fh).load()
    except pickle.UnpicklingError as exc:
        raise DelphesFileError(f"{path}: refused or invalid pickle: {exc}") from None
    except EOFError as exc:
        raise DelphesFileError(f"{path}: truncated file ({exc or 'unexpected end of data'})"
                               ) from None
    except (OSError, ValueError, TypeError, AttributeError, IndexError, KeyError,
            MemoryError) as exc:
        raise DelphesFileError(
            f"{path}: corrupt file, not a bz2-compressed pickle of arrays "
            f"({type(exc).__name__}: {exc})") from None


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
            f"{path}: expected exactly the keys {list(KEYS)}, got {sorted(map(str, data))}")
    lengths = {}
    for key in KEYS:
        if not isinstance(data[key], list):
            raise DelphesFileError(
                f"{path}: {key!r} is {type(data[key]).__name__}, expected a list of arrays")
        lengths[key] = len(data[key])
    if len(set(lengths.values())) != 1:
        raise DelphesFileError(f"{path}: event counts differ between keys: {lengths}")
    return lengths["X"]


def read_delphes_file(path: str | os.PathLike, *, complete: bool = True) -> list[schema.Event]:
    """All events of one ``*.pkl.bz2`` file as float32 :class:`schema.Event` tuples.

    ``complete`` fills the missing ycand pT/E (see the module docstring). Errors
    (:class:`DelphesFileError`) name the file and, for a bad event, its index.
    """
    path = os.fspath(path)
    data = _load_pickle(path)
    n = _check_structure(path, data)
    events = []
    for i in range(n):
        X, ygen, ycand = (data[k][i] for k in KEYS)
        try:
            schema.check_event(X, ygen, ycand, where=f"{path}: event {i}")
        except schema.SchemaError as exc:
            raise DelphesFileError(str(exc)) from None
        ycand = complete_ycand(ycand) if complete else ycand.astype(schema.FEATURE_DTYPE)
        events.append(schema.Event(X.astype(schema.FEATURE_DTYPE),
                                   ygen.astype(schema.FEATURE_DTYPE), ycand))
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
