"""Pythia 8 event sources and Pythia-based events (determinism, particles, pileup)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import curve_fit

from mlpf_tf.data import schema as S
from mlpf_tf.data.detector import detector_preset
from mlpf_tf.data.generate import generate_events, generate_particles
from mlpf_tf.data.pythia_gen import PythiaSource
from mlpf_tf.data.stats import event_statistics

pytestmark = pytest.mark.pythia


def OPT(**changes):
    return detector_preset("optimistic", **changes)


def fitted_gaussian_width(x: np.ndarray) -> float:
    """Width of a Gaussian fitted to the histogram of ``x`` in its core (+-2.5 sigma)."""
    med = np.median(x)
    s0 = 0.5 * (np.percentile(x, 84.135) - np.percentile(x, 15.865))
    counts, edges = np.histogram(x[np.abs(x - med) < 2.5 * s0], bins=30)
    centres = 0.5 * (edges[1:] + edges[:-1])
    popt, _ = curve_fit(lambda v, a, mu, sg: a * np.exp(-0.5 * ((v - mu) / sg) ** 2),
                        centres, counts, p0=(counts.max(), med, s0))
    return abs(float(popt[2]))


def _identical(a, b) -> bool:
    return len(a) == len(b) and all(
        x.shape == y.shape and np.array_equal(x, y) for ea, eb in zip(a, b)
        for x, y in zip(ea, eb))


def test_ttbar_events_are_deterministic_per_seed():
    a = list(generate_events("ttbar", 3, seed=7))
    b = list(generate_events("ttbar", 3, seed=7))
    c = list(generate_events("ttbar", 3, seed=8))
    print("elements per event, seed 7:", [e.X.shape[0] for e in a],
          "seed 8:", [e.X.shape[0] for e in c])
    assert _identical(a, b)
    assert not any(x.X.shape == y.X.shape and np.array_equal(x.X, y.X) for x, y in zip(a, c))
    for ev in a:
        S.check_event(*ev)


def test_pythia_source_argument_errors():
    with pytest.raises(ValueError) as err:
        PythiaSource("zz", 5)
    assert str(err.value) == "unknown Pythia process 'zz'; expected one of ttbar, qcd, minbias"
    with pytest.raises(ValueError) as err:
        PythiaSource("ttbar", 0)
    assert str(err.value) == "Pythia seed must be an integer in [1, 900000000], got 0"
    with pytest.raises(ValueError) as err:
        PythiaSource("ttbar", 5, extra_settings=("Top:noSuchSwitch = on",))
    assert str(err.value) == "Pythia rejected the setting 'Top:noSuchSwitch = on'"


def test_qcd_particles_with_pileup_are_visible_charged_consistently_and_flagged():
    events = list(generate_particles("qcd", 3, seed=11, pileup=4))
    n_pu = [int(p.is_pileup.sum()) for p in events]
    n_hard = [int((~p.is_pileup).sum()) for p in events]
    print("hard particles", n_hard, "pileup particles", n_pu)
    assert all(h > 50 for h in n_hard) and sum(n_pu) > 100
    for p in events:
        apid = np.abs(p.pid)
        assert not np.isin(apid, (12, 14, 16)).any()
        sign = np.sign(p.pid)
        np.testing.assert_array_equal(p.charge[apid == 211], sign[apid == 211])
        np.testing.assert_array_equal(p.charge[apid == 11], -sign[apid == 11])
        assert (p.charge[np.isin(apid, (22, 130, 2112, 310))] == 0).all()
        # the hard interaction comes first, pileup particles follow
        first_pu = np.argmax(p.is_pileup) if p.is_pileup.any() else len(p)
        assert not p.is_pileup[:first_pu].any() and p.is_pileup[first_pu:].all()
        # energy conservation: visible energy of the hard event <= the collision energy
        assert p.e[~p.is_pileup].sum() <= 14000.0 + 1e-6


def test_track_pt_resolution_on_pythia_ttbar():
    cfg = OPT()
    pulls, rel = [], []
    for X, ygen, _ in generate_events("ttbar", 8, seed=3, detector=cfg):
        m = (X[:, S.F_TYPE] == S.ELEM_TRACK) & (ygen[:, S.T_CLS] != S.CLS_NONE)
        pt_gen = ygen[m, S.T_PT].astype(np.float64)
        r = X[m, S.F_PT] / pt_gen - 1.0
        rel.append(r)
        pulls.append(r / cfg.track_pt_sigma(pt_gen))
    pulls = np.concatenate(pulls)
    width = fitted_gaussian_width(pulls)
    rel = np.concatenate(rel)
    rel_width = 0.5 * (np.percentile(rel, 84.135) - np.percentile(rel, 15.865))
    print(f"Pythia ttbar: {pulls.size} tracks, pull width {width:.3f} (expected 1); "
          f"(pT_track - pT_gen)/pT_gen width {rel_width:.4f}, configured at 1 GeV "
          f"{cfg.track_pt_sigma(1.0):.4f}")
    assert pulls.size > 300
    assert abs(width - 1.0) < 0.10


@pytest.mark.slow
def test_pythia_pileup_events_targets_and_statistics():
    events = list(generate_events("ttbar", 5, seed=2, pileup=20, detector=OPT()))
    st = event_statistics(events)
    print("ttbar PU20:", st["elements_per_event"], st["ygen_class_fractions"])
    assert st["elements_per_event"]["mean"] > 500
    assert st["tracks_per_event"]["mean"] > 100
    no_pu_targets = list(generate_events("ttbar", 5, seed=2, pileup=20,
                                         detector=OPT(pileup_targets=False)))
    assert _identical([(e.X,) for e in events], [(e.X,) for e in no_pu_targets])
    n_with = sum(int((e.ygen[:, 0] > 0).sum()) for e in events)
    n_without = sum(int((e.ygen[:, 0] > 0).sum()) for e in no_pu_targets)
    print(f"targets with pileup {n_with}, without {n_without}")
    assert n_without < n_with
