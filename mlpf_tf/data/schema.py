"""The MLPF event schema (Delphes particle-flow dataset layout), in one place.

An event is a set of detector *elements* (calorimeter towers and tracks). Each element has
12 input features and two 7-value targets: ``ygen`` (the generator particle the element
represents, or class 0) and ``ycand`` (the rule-based particle-flow candidate).

Feature layout per element type (unused slots are 0):
  tower (type 1): [1, E_T, eta, sin phi, cos phi, E, E_em, E_had, 0, 0, 0, 0]
  track (type 2): [2, pT, eta, sin phi, cos phi, p, eta_outer, sin phi_outer, cos phi_outer,
                   charge, is_gen_muon, is_gen_electron]
Element type 0 marks padding.

Target layout: [class, charge, pT, eta, sin phi, cos phi, E].
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

NUM_FEATURES = 12
NUM_TARGETS = 7

# Element types (feature column 0).
ELEM_PAD = 0
ELEM_TOWER = 1
ELEM_TRACK = 2
ELEMENT_TYPES = (ELEM_TOWER, ELEM_TRACK)
NUM_ELEMENT_TYPES = 3  # including padding, for the one-hot input encoding

# Feature columns shared by both element types.
F_TYPE, F_PT, F_ETA, F_SIN_PHI, F_COS_PHI, F_E = 0, 1, 2, 3, 4, 5
# Tower-only columns.
F_E_EM, F_E_HAD = 6, 7
# Track-only columns.
F_ETA_OUTER, F_SIN_PHI_OUTER, F_COS_PHI_OUTER, F_CHARGE, F_IS_MU, F_IS_ELE = 6, 7, 8, 9, 10, 11

FEATURE_NAMES = {
    ELEM_TOWER: ("type", "et", "eta", "sin_phi", "cos_phi", "e", "e_em", "e_had",
                 "unused8", "unused9", "unused10", "unused11"),
    ELEM_TRACK: ("type", "pt", "eta", "sin_phi", "cos_phi", "p", "eta_outer",
                 "sin_phi_outer", "cos_phi_outer", "charge", "is_gen_muon", "is_gen_electron"),
}

# Target columns.
T_CLS, T_CHARGE, T_PT, T_ETA, T_SIN_PHI, T_COS_PHI, T_E = range(NUM_TARGETS)
TARGET_NAMES = ("cls", "charge", "pt", "eta", "sin_phi", "cos_phi", "energy")

# Particle classes (target column 0).
CLASS_NAMES = ("none", "charged_hadron", "neutral_hadron", "photon", "electron", "muon")
NUM_CLASSES = len(CLASS_NAMES)
CLS_NONE, CLS_CH_HAD, CLS_N_HAD, CLS_PHOTON, CLS_ELECTRON, CLS_MUON = range(NUM_CLASSES)
CHARGED_CLASSES = (CLS_CH_HAD, CLS_ELECTRON, CLS_MUON)
NEUTRAL_CLASSES = (CLS_N_HAD, CLS_PHOTON)

# Padding size of the reference dataset.
DELPHES_MAX_ELEMENTS = 6400

FEATURE_DTYPE = np.float32


class Event(NamedTuple):
    """One event: X (elements x 12), ygen and ycand (elements x 7), float32."""

    X: np.ndarray
    ygen: np.ndarray
    ycand: np.ndarray


class SchemaError(ValueError):
    """An array does not follow the event schema."""


def check_event(X: np.ndarray, ygen: np.ndarray, ycand: np.ndarray, where: str = "event") -> None:
    """Raise SchemaError naming ``where`` unless (X, ygen, ycand) is one valid event."""
    for name, arr, width in (("X", X, NUM_FEATURES), ("ygen", ygen, NUM_TARGETS),
                             ("ycand", ycand, NUM_TARGETS)):
        if not isinstance(arr, np.ndarray):
            raise SchemaError(f"{where}: {name} is {type(arr).__name__}, expected a numpy array")
        if arr.ndim != 2 or arr.shape[1] != width:
            raise SchemaError(f"{where}: {name} has shape {arr.shape}, expected (elements, {width})")
        if arr.dtype.kind not in "fiu":
            raise SchemaError(f"{where}: {name} has dtype {arr.dtype}, expected a numeric dtype")
    n = X.shape[0]
    if ygen.shape[0] != n or ycand.shape[0] != n:
        raise SchemaError(
            f"{where}: element counts differ: X {n}, ygen {ygen.shape[0]}, ycand {ycand.shape[0]}")
    types = X[:, F_TYPE]
    if not np.isin(types, (ELEM_PAD, ELEM_TOWER, ELEM_TRACK)).all():
        bad = np.unique(types[~np.isin(types, (ELEM_PAD, ELEM_TOWER, ELEM_TRACK))])
        raise SchemaError(f"{where}: unknown element types {bad.tolist()} in X[:, 0]")
    for name, y in (("ygen", ygen), ("ycand", ycand)):
        cls = y[:, T_CLS]
        if ((cls < 0) | (cls >= NUM_CLASSES) | (cls != np.round(cls))).any():
            raise SchemaError(f"{where}: {name} class column outside 0..{NUM_CLASSES - 1}")
    if not (np.isfinite(X).all() and np.isfinite(ygen).all() and np.isfinite(ycand).all()):
        raise SchemaError(f"{where}: non-finite values")
