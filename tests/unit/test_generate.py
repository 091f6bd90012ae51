"""generate_events front end (argument checks, determinism, streams) and event_statistics."""

from __future__ import annotations

import numpy as np
import pytest

from mlpf_tf.data import schema as S
from mlpf_tf.data.detector import DetectorConfig
from mlpf_tf.data.generate import PROCESSES, _pythia_seed, generate_events
from mlpf_tf.data.stats import event_statistics, format_statistics


@pytest.mark.parametrize("kwargs, message", [
    (dict(process="zz"), "unknown process 'zz'; expected one of ttbar, qcd, gun"),
    (dict(n_events=-1), "n_events must be >= 0, got -1"),
    (dict(n_events=2.5), "n_events must be an integer, got 2.5"),
    (dict(seed=-1), "seed must be in [0, 900000000] (Pythia's Random:seed range), got -1"),
    (dict(seed=900_000_001),
     "seed must be in [0, 900000000] (Pythia's Random:seed range), got 900000001"),
    (dict(seed="7"), "seed must be an integer, got '7'"),
    (dict(pileup=-0.5), "pileup must be in [0, 1000], got -0.5"),
    (dict(pileup=1000.5), "pileup must be in [0, 1000], got 1000.5"),
    (dict(pileup=float("nan")), "pileup must be a finite number, got nan"),
    (dict(detector="cms"), "detector must be a DetectorConfig or None, got str"),
])
def test_bad_arguments_raise_at_call_time_naming_the_value(kwargs, message):
    args = dict(process="ttbar", n_events=2, seed=1, pileup=0.0, detector=None)
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        generate_events(**args)   # no iteration: checks happen before the first event
    assert str(err.value) == message


def test_boundary_values_are_accepted():
    assert PROCESSES == ("ttbar", "qcd", "gun")
    assert list(generate_events("ttbar", 0, seed=900_000_000)) == []
    events = list(generate_events("gun", 1, seed=0, pileup=1000))
    S.check_event(*events[0])
    print(f"gun event with pileup 1000: {events[0].X.shape[0]} elements")
    assert events[0].X.shape[0] > 2000


def test_derived_pythia_seeds_are_in_range_and_distinct():
    seeds = [_pythia_seed(s, k) for s in (0, 1, 900_000_000) for k in (3, 4)]
    assert all(1 <= s <= 900_000_000 for s in seeds)
    assert len(set(seeds)) == len(seeds)
    assert _pythia_seed(7, 3) == _pythia_seed(7, 3)


def _same(a, b):
    return len(a) == len(b) and all(
        x.shape == y.shape and np.array_equal(x, y) for ea, eb in zip(a, b)
        for x, y in zip(ea, eb))


def test_gun_events_deterministic_prefix_stable_and_seed_dependent():
    a = list(generate_events("gun", 20, seed=5, pileup=3))
    b = list(generate_events("gun", 20, seed=5, pileup=3))
    prefix = list(generate_events("gun", 7, seed=5, pileup=3))
    other = list(generate_events("gun", 20, seed=6, pileup=3))
    assert _same(a, b)
    assert _same(a[:7], prefix)
    assert not any(x.X.shape == y.X.shape and np.array_equal(x.X, y.X)
                   for x, y in zip(a, other))
    for ev in a:
        assert ev.X.dtype == np.float32
        S.check_event(*ev)


def test_detector_config_is_used():
    narrow = DetectorConfig(tracker_eta_max=1.0)
    evs = list(generate_events("gun", 30, seed=2, detector=narrow))
    eta = np.concatenate([e.X[e.X[:, 0] == S.ELEM_TRACK, S.F_ETA] for e in evs])
    assert np.abs(eta).max() < 1.0 + 0.01


def _event(types, gen_cls, cand_cls):
    n = len(types)
    X = np.zeros((n, 12), np.float32)
    X[:, 0] = types
    yg = np.zeros((n, 7), np.float32)
    yc = np.zeros((n, 7), np.float32)
    yg[:, 0] = gen_cls
    yc[:, 0] = cand_cls
    return S.Event(X, yg, yc)


def test_event_statistics_on_known_events():
    # event 1: 2 tracks, 2 towers, 1 padding row; event 2: 1 track, 3 towers
    e1 = _event([2, 2, 1, 1, 0], [1, 0, 3, 0, 0], [1, 1, 3, 2, 0])
    e2 = _event([2, 1, 1, 1], [5, 2, 2, 0], [5, 2, 0, 0])
    st = event_statistics([e1, e2])
    print(format_statistics(st))
    assert st["n_events"] == 2
    assert st["elements_per_event"] == {"mean": 4.0, "min": 4, "max": 4}
    assert st["tracks_per_event"] == {"mean": 1.5, "min": 1, "max": 2}
    assert st["towers_per_event"] == {"mean": 2.5, "min": 2, "max": 3}
    assert st["ygen_class_counts"] == {"none": 3, "charged_hadron": 1, "neutral_hadron": 2,
                                       "photon": 1, "electron": 0, "muon": 1}
    assert st["ygen_class_fractions"]["neutral_hadron"] == pytest.approx(2 / 8)
    assert st["ygen_class_fractions_all"]["none"] == pytest.approx(4 / 9)
    assert st["ycand_class_fractions"]["charged_hadron"] == pytest.approx(2 / 8)
    assert st["ycand_class_fractions_all"]["charged_hadron"] == pytest.approx(2 / 9)
    assert st["ygen_particles_per_event"] == {"mean": 2.5, "min": 2, "max": 3}
    assert st["fake_track_fraction"] == pytest.approx(1 / 3)
    assert st["class_agreement"] == pytest.approx(5 / 8)
    assert st["padding_fraction"] == pytest.approx(1 / 9)
    assert sum(st["ycand_class_fractions"].values()) == pytest.approx(1.0)


def test_event_statistics_rejects_bad_events():
    bad = S.Event(np.zeros((3, 11), np.float32), np.zeros((3, 7)), np.zeros((3, 7)))
    with pytest.raises(S.SchemaError, match=r"event 0: X has shape \(3, 11\)"):
        event_statistics([bad])
    empty = event_statistics([])
    assert empty["n_events"] == 0 and empty["elements_per_event"]["mean"] == 0.0
