"""Physics summary of the best model, next to the rule-based particle-flow baseline (ycand).

Inputs in ``<run_dir>/best/`` (written by the search runner for the best trial):

``predictions.npz`` (numpy ``savez``; arrays only, loaded with ``allow_pickle=False``)
  ``pred``, ``ygen``, ``ycand``: float arrays [total elements, 7] in the target layout of
  :mod:`mlpf_tf.data.schema` ([class, charge, pT, eta, sin phi, cos phi, E]); row i of each is
  element i, events concatenated in order, padding removed. ``offsets``: int array
  [events + 1], event k is rows ``offsets[k]:offsets[k+1]`` (offsets[0] = 0, last = rows).
  Both pT and E must be filled for every particle (class != 0); where one of them is 0 it is
  derived from the other and eta (pT = E / cosh eta), as for Delphes ycand.
``physics.json`` (optional; numbers computed by the runner, e.g. on more events)
  ``{"events": int, "trial_id": str, "model": METRICS, "ycand": METRICS}`` with
  METRICS = ``{"efficiency": {class: float}, "fake_rate": {class: float},
  "pt_resolution": {class: {"mean": f, "std": f}}, "energy_resolution": {...},
  "jet_response": {"median": f, "iqr": f, "n": int},
  "met_response": {"median": f, "iqr": f, "n": int}}``; any key may be absent.

Definitions (element-wise, as MLPF predicts one particle per element):
  * efficiency of class c = #(true = c and reco = c) / #(true = c);
  * fake rate of class c = #(reco = c and true != c) / #(reco = c);
  * pT / energy resolution of class c: r = (reco - true) / true over elements with
    true = reco = c and true > 0; mean and std (and median, IQR) of r;
  * jets: anti-kT R = 0.4 (E recombination) with fastjet on the particles of an event
    (class != 0), jets above ``jet_ptmin`` GeV; each true jet (descending pT) is matched to the
    nearest unmatched reco jet with dR < 0.2; response = pT_reco / pT_true, median and IQR;
  * MET: magnitude of minus the vector sum of particle pT per event; response MET_reco /
    MET_true over events with MET_true > ``met_min``, median and IQR.
"true" is ``ygen``; "reco" is ``pred`` for the model and ``ycand`` for the baseline.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pandas as pd

from mlpf_tf.data.schema import (
    CLASS_NAMES,
    NUM_TARGETS,
    T_CLS,
    T_COS_PHI,
    T_E,
    T_ETA,
    T_PT,
    T_SIN_PHI,
)

JET_R = 0.4
MATCH_DR = 0.2
DEFAULT_JET_PTMIN = 5.0
DEFAULT_MET_MIN = 1.0


class PhysicsError(ValueError):
    """A physics input file is malformed; the message names the file."""


@dataclasses.dataclass(frozen=True)
class Predictions:
    pred: np.ndarray
    ygen: np.ndarray
    ycand: np.ndarray
    offsets: np.ndarray

    @property
    def events(self) -> int:
        return len(self.offsets) - 1

    def event(self, which: str, k: int) -> np.ndarray:
        return getattr(self, which)[self.offsets[k]:self.offsets[k + 1]]


@dataclasses.dataclass(frozen=True)
class Response:
    median: float
    iqr: float
    n: int
    values: np.ndarray

    def as_dict(self) -> dict:
        return {"median": self.median, "iqr": self.iqr, "n": self.n}


def load_predictions(path: str | os.PathLike) -> Predictions:
    """Read and check ``predictions.npz``; PhysicsError naming the file on any problem."""
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError) as exc:
        raise PhysicsError(f"{path}: not a readable npz file ({exc})") from None
    missing = [k for k in ("pred", "ygen", "ycand", "offsets") if k not in arrays]
    if missing:
        raise PhysicsError(f"{path}: missing array(s) {', '.join(missing)}")
    n = arrays["ygen"].shape[0] if arrays["ygen"].ndim == 2 else -1
    for k in ("pred", "ygen", "ycand"):
        a = arrays[k]
        if a.ndim != 2 or a.shape[1] != NUM_TARGETS or a.shape[0] != n:
            raise PhysicsError(f"{path}: {k} has shape {a.shape}, expected ({n}, {NUM_TARGETS})")
        if not np.isfinite(a).all():
            raise PhysicsError(f"{path}: {k} has non-finite values")
    off = arrays["offsets"]
    if (off.ndim != 1 or off.size < 1 or off[0] != 0 or off[-1] != n
            or (np.diff(off) < 0).any()):
        raise PhysicsError(f"{path}: offsets must rise from 0 to {n} (rows), got "
                           f"{off[:3].tolist()}...{off[-2:].tolist()}")
    return Predictions(*(fill_kinematics(arrays[k].astype(np.float64))
                         for k in ("pred", "ygen", "ycand")), offsets=off.astype(np.int64))


def fill_kinematics(y: np.ndarray) -> np.ndarray:
    """Copy of ``y`` with a zero pT or E derived from the other and eta (for particles)."""
    y = np.array(y, dtype=np.float64)
    is_particle = y[:, T_CLS] != 0
    cosh = np.cosh(y[:, T_ETA])
    no_pt = is_particle & (y[:, T_PT] == 0) & (y[:, T_E] > 0)
    no_e = is_particle & (y[:, T_E] == 0) & (y[:, T_PT] > 0)
    y[no_pt, T_PT] = y[no_pt, T_E] / cosh[no_pt]
    y[no_e, T_E] = y[no_e, T_PT] * cosh[no_e]
    return y


def efficiency_fake_rate(true: np.ndarray, reco: np.ndarray) -> pd.DataFrame:
    """Per particle class (index): n_true, n_reco, efficiency, fake_rate (NaN if 0/0)."""
    t = np.round(true[:, T_CLS]).astype(int)
    r = np.round(reco[:, T_CLS]).astype(int)
    rows = {}
    for c, name in enumerate(CLASS_NAMES):
        if c == 0:
            continue
        n_true, n_reco = int((t == c).sum()), int((r == c).sum())
        good = int(((t == c) & (r == c)).sum())
        rows[name] = {"n_true": n_true, "n_reco": n_reco,
                      "efficiency": good / n_true if n_true else math.nan,
                      "fake_rate": (n_reco - good) / n_reco if n_reco else math.nan}
    return pd.DataFrame.from_dict(rows, orient="index")


def resolution(true: np.ndarray, reco: np.ndarray, column: int) -> pd.DataFrame:
    """Per class: mean, std, median, IQR of (reco - true) / true over matched elements."""
    t = np.round(true[:, T_CLS]).astype(int)
    r = np.round(reco[:, T_CLS]).astype(int)
    rows = {}
    for c, name in enumerate(CLASS_NAMES):
        if c == 0:
            continue
        sel = (t == c) & (r == c) & (true[:, column] > 0)
        x = (reco[sel, column] - true[sel, column]) / true[sel, column]
        rows[name] = _stats(x)
    return pd.DataFrame.from_dict(rows, orient="index")


def _stats(x: np.ndarray) -> dict:
    if x.size == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "median": math.nan, "iqr": math.nan}
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    return {"n": int(x.size), "mean": float(x.mean()), "std": float(x.std()),
            "median": float(q50), "iqr": float(q75 - q25)}


def _response(values: list[float]) -> Response:
    v = np.asarray(values, dtype=float)
    if v.size == 0:
        return Response(math.nan, math.nan, 0, v)
    q25, q50, q75 = np.percentile(v, [25, 50, 75])
    return Response(float(q50), float(q75 - q25), int(v.size), v)


def cluster_jets(particles: np.ndarray, ptmin: float = DEFAULT_JET_PTMIN,
                 radius: float = JET_R) -> np.ndarray:
    """Anti-kT jets of one event's particles (class != 0): array [jets, 3] of (pT, eta, phi)."""
    import fastjet

    p = particles[np.round(particles[:, T_CLS]) != 0]
    if len(p) == 0:
        return np.zeros((0, 3))
    phi = np.arctan2(p[:, T_SIN_PHI], p[:, T_COS_PHI])
    pt = p[:, T_PT]
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(p[:, T_ETA])
    energy = np.maximum(p[:, T_E], np.sqrt(px * px + py * py + pz * pz))
    inputs = [fastjet.PseudoJet(float(a), float(b), float(c), float(d))
              for a, b, c, d in zip(px, py, pz, energy)]
    sequence = fastjet.ClusterSequence(inputs, fastjet.JetDefinition(fastjet.antikt_algorithm,
                                                                      radius))
    jets = fastjet.sorted_by_pt(sequence.inclusive_jets(ptmin))
    return np.array([(j.pt(), j.eta(), j.phi_std()) for j in jets]).reshape(-1, 3)


def delta_r(eta1, phi1, eta2, phi2):
    dphi = np.mod(np.asarray(phi1) - np.asarray(phi2) + np.pi, 2 * np.pi) - np.pi
    return np.hypot(np.asarray(eta1) - np.asarray(eta2), dphi)


def match_jets(true_jets: np.ndarray, reco_jets: np.ndarray,
               max_dr: float = MATCH_DR) -> list[tuple[int, int]]:
    """Greedy: each true jet (descending pT) takes the nearest free reco jet within max_dr."""
    pairs, used = [], set()
    for i in np.argsort(-true_jets[:, 0]) if len(true_jets) else []:
        if len(reco_jets) == 0:
            break
        dr = delta_r(true_jets[i, 1], true_jets[i, 2], reco_jets[:, 1], reco_jets[:, 2])
        dr[list(used)] = np.inf
        j = int(np.argmin(dr))
        if dr[j] < max_dr:
            pairs.append((int(i), j))
            used.add(j)
    return pairs


def jet_response(true_events: list[np.ndarray], reco_events: list[np.ndarray],
                 ptmin: float = DEFAULT_JET_PTMIN) -> Response:
    """pT_reco / pT_true of matched anti-kT R=0.4 jets over all events."""
    ratios: list[float] = []
    for true_p, reco_p in zip(true_events, reco_events, strict=True):
        tj, rj = cluster_jets(true_p, ptmin), cluster_jets(reco_p, ptmin)
        ratios.extend(rj[j, 0] / tj[i, 0] for i, j in match_jets(tj, rj))
    return _response(ratios)


def met(particles: np.ndarray) -> float:
    """Missing transverse momentum: |minus the vector sum of particle pT| (class != 0)."""
    p = particles[np.round(particles[:, T_CLS]) != 0]
    phi = np.arctan2(p[:, T_SIN_PHI], p[:, T_COS_PHI])
    return float(np.hypot((p[:, T_PT] * np.cos(phi)).sum(), (p[:, T_PT] * np.sin(phi)).sum()))


def met_response(true_events: list[np.ndarray], reco_events: list[np.ndarray],
                 met_min: float = DEFAULT_MET_MIN) -> Response:
    """MET_reco / MET_true over events with MET_true > met_min."""
    ratios = []
    for true_p, reco_p in zip(true_events, reco_events, strict=True):
        m_true = met(true_p)
        if m_true > met_min:
            ratios.append(met(reco_p) / m_true)
    return _response(ratios)


def physics_tables(preds: Predictions, jet_ptmin: float = DEFAULT_JET_PTMIN,
                   met_min: float = DEFAULT_MET_MIN) -> dict[str, pd.DataFrame]:
    """Model vs ycand: 'classes' (per class), 'resolution' (per class x quantity), 'response'."""
    true_events = [preds.event("ygen", k) for k in range(preds.events)]
    classes, resol, resp = [], [], []
    for label, which in (("model", "pred"), ("ycand", "ycand")):
        reco = getattr(preds, which)
        c = efficiency_fake_rate(preds.ygen, reco)
        c.insert(0, "reco", label)
        classes.append(c)
        for quantity, column in (("pt", T_PT), ("energy", T_E)):
            r = resolution(preds.ygen, reco, column)
            r.insert(0, "quantity", quantity)
            r.insert(0, "reco", label)
            resol.append(r)
        reco_events = [preds.event(which, k) for k in range(preds.events)]
        jets = jet_response(true_events, reco_events, jet_ptmin)
        mets = met_response(true_events, reco_events, met_min)
        resp.append({"reco": label, "observable": "jet_pt", **jets.as_dict()})
        resp.append({"reco": label, "observable": "met", **mets.as_dict()})
    return {"classes": pd.concat(classes).rename_axis("class").reset_index(),
            "resolution": pd.concat(resol).rename_axis("class").reset_index(),
            "response": pd.DataFrame(resp)}


def read_physics_json(path: str | os.PathLike) -> dict:
    """Read ``physics.json``; PhysicsError naming the file if it is not the documented shape."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise PhysicsError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not any(k in data for k in ("model", "ycand")):
        raise PhysicsError(f"{path}: expected an object with 'model' and/or 'ycand'")
    return data


def physics_json_table(data: dict) -> pd.DataFrame:
    """Long table (reco, metric, class, value) of the numbers in a physics.json."""
    rows = []
    for reco in ("model", "ycand"):
        block = data.get(reco) or {}
        for metric in ("efficiency", "fake_rate"):
            for cls, value in (block.get(metric) or {}).items():
                rows.append({"reco": reco, "metric": metric, "class": cls, "value": value})
        for metric in ("pt_resolution", "energy_resolution"):
            for cls, stats in (block.get(metric) or {}).items():
                for stat, value in (stats or {}).items():
                    rows.append({"reco": reco, "metric": f"{metric}_{stat}", "class": cls,
                                 "value": value})
        for metric in ("jet_response", "met_response"):
            for stat, value in (block.get(metric) or {}).items():
                rows.append({"reco": reco, "metric": f"{metric}_{stat}", "class": "",
                             "value": value})
    return pd.DataFrame(rows, columns=["reco", "metric", "class", "value"])
