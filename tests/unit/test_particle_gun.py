"""Particle gun: determinism, composition, pileup flags, element counts."""

from __future__ import annotations

import numpy as np
import pytest

from mlpf_tf.data import schema as S
from mlpf_tf.data.detector import detector_preset, gen_classes, simulate
from mlpf_tf.data.particle_gun import GunConfig, gun_particles
from mlpf_tf.data.particles import MASSES


def _arrays(p):
    return (p.pid, p.charge, p.px, p.py, p.pz, p.e, p.is_pileup)


def test_same_seed_same_particles_different_seed_differs():
    a = [gun_particles(np.random.default_rng(3), pileup=5) for _ in range(2)]
    for x, y in zip(_arrays(a[0]), _arrays(a[1])):
        np.testing.assert_array_equal(x, y)
    b = gun_particles(np.random.default_rng(4), pileup=5)
    assert len(b) != len(a[0]) or not np.array_equal(b.px, a[0].px)


def test_composition_covers_every_class_with_consistent_charges_and_masses():
    rng = np.random.default_rng(0)
    parts = [gun_particles(rng) for _ in range(200)]
    pid = np.concatenate([p.pid for p in parts])
    charge = np.concatenate([p.charge for p in parts])
    mass = np.concatenate([p.mass for p in parts])
    cls = gen_classes(pid, charge)
    counts = np.bincount(cls, minlength=S.NUM_CLASSES)
    print("particles per class:", dict(zip(S.CLASS_NAMES, counts.tolist())))
    assert (counts[1:] > 100).all()
    assert counts[S.CLS_CH_HAD] > counts[S.CLS_PHOTON] > counts[S.CLS_N_HAD] > \
        counts[S.CLS_ELECTRON]
    # charge follows the PDG id: +211 / -11 / -13 are positive
    apid = np.abs(pid)
    sign = np.sign(pid)
    np.testing.assert_array_equal(charge[apid == 211], sign[apid == 211])
    np.testing.assert_array_equal(charge[apid == 11], -sign[apid == 11])
    np.testing.assert_array_equal(charge[apid == 13], -sign[apid == 13])
    assert (charge[np.isin(apid, (22, 130, 2112))] == 0).all()
    for k, m in MASSES.items():
        np.testing.assert_allclose(mass[apid == k], m, atol=1e-6)


def test_pileup_particles_are_flagged_and_scale_with_pileup():
    rng = np.random.default_rng(1)
    n0 = [gun_particles(rng, pileup=0).is_pileup.sum() for _ in range(20)]
    n50 = [gun_particles(rng, pileup=50).is_pileup.sum() for _ in range(20)]
    print(f"pileup particles per event: mu=0 {np.mean(n0)}, mu=50 {np.mean(n50):.0f}")
    assert sum(n0) == 0
    assert np.mean(n50) == pytest.approx(50 * GunConfig().pileup_soft_mean, rel=0.1)


def test_default_gun_events_have_50_to_300_elements():
    rng = np.random.default_rng(7)
    cfg = detector_preset("optimistic")  # the gun's element counts were tuned on this one
    n = np.array([simulate(gun_particles(rng), rng, cfg).X.shape[0] for _ in range(300)])
    print(f"elements per gun event: mean {n.mean():.1f}, 5% {np.percentile(n, 5):.0f}, "
          f"95% {np.percentile(n, 95):.0f}, min {n.min()}, max {n.max()}")
    assert 50 <= n.mean() <= 300
    assert np.mean((n >= 40) & (n <= 300)) > 0.95


@pytest.mark.parametrize("changes, message", [
    (dict(n_jets_mean=0.5), "GunConfig.n_jets_mean must be >= 1, got 0.5"),
    (dict(jet_pt_max=10.0), "GunConfig.jet_pt_max must exceed jet_pt_min, got 10.0"),
    (dict(jet_fractions=(0.5, 0.5, 0.5, 0.0, 0.0)),
     "GunConfig.jet_fractions must be 5 non-negative fractions summing to 1, "
     "got (0.5, 0.5, 0.5, 0.0, 0.0)"),
    (dict(soft_pt_mean=0.0), "GunConfig.soft_pt_mean must be > 0, got 0.0"),
])
def test_gun_config_rejects_bad_values(changes, message):
    with pytest.raises(ValueError) as err:
        GunConfig(**changes)
    assert str(err.value) == message
