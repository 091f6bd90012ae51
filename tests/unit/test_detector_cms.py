"""The default ``delphes_cms`` detector against the Delphes CMS pile-up card's numbers.

Card values (delphes/delphes_card_CMS_PileUp.tcl in jpata/particleflow at 0ea146025d35) are
written out here, not read from the configuration, so a changed default fails these tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlpf_tf.data import schema as S
from mlpf_tf.data.detector import (
    DetectorConfig,
    detector_preset,
    simulate,
    simulate_detailed,
    tower_grid,
)
from mlpf_tf.data.particles import GenParticles

REL = 0.10  # "within 10% of the card values"


def card_track_resolution(pt: float, abs_eta: float) -> float:
    """Charged-hadron sigma(pT)/pT of the card (arXiv:1405.6569 parametrisation)."""
    if abs_eta <= 0.5:
        return math.sqrt(0.06 ** 2 + pt ** 2 * 1.3e-3 ** 2)
    if abs_eta <= 1.5:
        return math.sqrt(0.10 ** 2 + pt ** 2 * 1.7e-3 ** 2)
    return math.sqrt(0.25 ** 2 + pt ** 2 * 3.1e-3 ** 2)


def card_ecal_sigma(e: float, abs_eta: float) -> float:
    core = math.sqrt(e ** 2 * 0.008 ** 2 + e * 0.11 ** 2 + 0.40 ** 2)
    if abs_eta <= 1.5:
        return (1 + 0.64 * abs_eta ** 2) * core
    if abs_eta <= 2.5:
        return (2.16 + 5.6 * (abs_eta - 2) ** 2) * core
    return math.sqrt(e ** 2 * 0.107 ** 2 + e * 2.08 ** 2)


def card_hcal_sigma(e: float, abs_eta: float) -> float:
    if abs_eta <= 3.0:
        return math.sqrt(e ** 2 * 0.050 ** 2 + e * 1.50 ** 2)
    return math.sqrt(e ** 2 * 0.130 ** 2 + e * 2.70 ** 2)


def ring(pid: int, charge: int, n: int, eta: float, nphi: int, *, pt=None, energy=None,
         mass=0.0) -> GenParticles:
    """``n`` particles at ``eta``, one per phi cell of an ``nphi``-cell ring (cell centres)."""
    k = np.arange(n) % nphi
    phi = -math.pi + (k + 0.5) * 2 * math.pi / nphi
    if pt is None:
        pt = math.sqrt(max(energy ** 2 - mass ** 2, 0.0)) / math.cosh(eta)
    return GenParticles.from_pt_eta_phi_m(np.full(n, pid), np.full(n, charge), np.full(n, pt),
                                          np.full(n, eta), phi, np.full(n, mass))


def test_delphes_cms_is_the_default_and_optimistic_keeps_the_old_detector():
    cfg = DetectorConfig()
    assert cfg == detector_preset("delphes_cms")
    assert cfg.separate_calorimeters and cfg.track_pt_min == pytest.approx(0.1)
    opt = detector_preset("optimistic")
    assert not opt.separate_calorimeters and opt.track_pt_min == 0.5
    assert opt.track_pt_sigma(np.array([10.0]))[0] == pytest.approx(math.hypot(0.01, 1.5e-3))
    assert opt.calo_sigma(np.array([4.0]), np.array([0.0]), em=True)[0] == pytest.approx(
        math.sqrt(0.007 ** 2 * 16 + 0.05 ** 2 * 4 + 0.25 ** 2))
    with pytest.raises(ValueError, match="unknown detector preset 'atlas'; known: "
                                         "delphes_cms, optimistic"):
        detector_preset("atlas")


@pytest.mark.parametrize("eta", [0.25, 1.0, 2.0])
def test_fitted_track_pt_resolution_per_eta_region(eta):
    pt = 10.0
    parts = ring(211, 1, 4000, eta, 4000, pt=pt, mass=0.1396)
    res = simulate_detailed(parts, np.random.default_rng(1), DetectorConfig())
    trk = slice(0, res.n_tracks)
    real = res.track_particle >= 0
    rel = res.event.X[trk, S.F_PT][real] / res.track_gen_pt[real] - 1.0
    assert real.sum() > 3000
    width = float(np.std(rel))
    expected = card_track_resolution(pt, eta)
    print(f"|eta| {eta}: measured sigma(pT)/pT (std) {width:.4f}, card {expected:.4f}")
    assert abs(width / expected - 1) < REL
    assert abs(np.mean(rel)) < 0.2 * expected  # unbiased


@pytest.mark.parametrize("energy", [5.0, 20.0, 100.0])
def test_ecal_resolution_at_three_energies(energy):
    eta = 0.3
    parts = ring(22, 0, 360 * 6, eta, 360, energy=energy)
    widths = []
    for seed in range(6):  # 360 photons per event, one per 1-degree cell
        res = simulate_detailed(parts.select(np.arange(360 * seed, 360 * (seed + 1))),
                                np.random.default_rng(seed), DetectorConfig())
        kept = res.meas_em > 0
        widths.append(res.meas_em[kept] - res.true_em[kept])
    diff = np.concatenate(widths)
    expected = card_ecal_sigma(energy, eta)
    print(f"ECAL E={energy}: sigma {np.std(diff):.3f} GeV, card {expected:.3f}")
    assert diff.size > 2000
    assert abs(np.std(diff) / expected - 1) < REL


def test_ecal_resolution_eta_dependence_in_the_endcap():
    eta, energy = 2.2, 50.0
    parts = ring(22, 0, 360, eta, 360, energy=energy)
    res = simulate_detailed(parts, np.random.default_rng(3), DetectorConfig())
    kept = res.meas_em > 0
    expected = card_ecal_sigma(energy, eta)  # factor 2.16 + 5.6 * 0.04 = 2.384
    assert abs(np.std(res.meas_em[kept] - res.true_em[kept]) / expected - 1) < REL


@pytest.mark.parametrize("energy", [50.0, 100.0, 200.0])
def test_hcal_resolution_at_three_energies(energy):
    eta = 0.3
    parts = ring(130, 0, 72 * 40, eta, 72, energy=energy, mass=0.4976)
    diffs = []
    for k in range(40):  # 72 K0L per event, one per 5-degree cell
        res = simulate_detailed(parts.select(np.arange(72 * k, 72 * (k + 1))),
                                np.random.default_rng(100 + k), DetectorConfig())
        kept = res.meas_had > 0
        diffs.append(res.meas_had[kept] - res.true_had[kept])
    diff = np.concatenate(diffs)
    expected = card_hcal_sigma(energy, eta)
    print(f"HCAL E={energy}: sigma {np.std(diff):.2f} GeV, card {expected:.2f}")
    assert diff.size > 2500
    assert abs(np.std(diff) / expected - 1) < REL


def test_tower_granularity_matches_the_card():
    cfg = DetectorConfig()
    ecal = tower_grid(cfg.ecal_tower_eta_edges, cfg.ecal_tower_phi_bins)
    hcal = tower_grid(cfg.tower_eta_edges, cfg.tower_phi_bins)
    barrel = np.abs(ecal.eta_center) < 1.4
    np.testing.assert_allclose((ecal.eta_hi - ecal.eta_lo)[barrel], 0.0174, rtol=1e-3)
    np.testing.assert_allclose((ecal.phi_hi - ecal.phi_lo)[barrel], math.radians(1.0))
    barrel = np.abs(hcal.eta_center) < 1.5
    np.testing.assert_allclose((hcal.eta_hi - hcal.eta_lo)[barrel], 0.087, rtol=1e-3)
    np.testing.assert_allclose((hcal.phi_hi - hcal.phi_lo)[barrel], math.radians(5.0))
    assert ecal.eta_max == hcal.eta_max == 5.0
    # two photons 0.03 apart in eta: two ECAL elements; the same two as K0L: one HCAL cell
    two = GenParticles.from_pt_eta_phi_m(np.array([22, 22]), np.zeros(2), np.full(2, 20.0),
                                         np.array([0.401, 0.431]), np.full(2, 0.3), np.zeros(2))
    ev = simulate(two, np.random.default_rng(0), cfg)
    assert ev.X.shape[0] == 2 and (ev.X[:, S.F_E_HAD] == 0).all()
    two_h = GenParticles.from_pt_eta_phi_m(np.array([130, 130]), np.zeros(2), np.full(2, 60.0),
                                           np.array([0.401, 0.431]), np.full(2, 0.3),
                                           np.full(2, 0.4976))
    ev = simulate(two_h, np.random.default_rng(0), cfg)
    assert ev.X.shape[0] == 1 and ev.X[0, S.F_E_EM] == 0


def test_noise_cut_drops_towers_below_two_sigma():
    cfg = DetectorConfig()
    energy, eta = 1.0, 5.5 * 0.0174  # an ECAL cell centre; 2 sigma ~ 0.83 GeV, near E
    parts = ring(22, 0, 360 * 20, eta, 360, energy=energy)
    kept, total, lowest = 0, 0, np.inf
    sigma = card_ecal_sigma(energy, eta)
    for k in range(20):
        res = simulate_detailed(parts.select(np.arange(360 * k, 360 * (k + 1))),
                                np.random.default_rng(k), cfg)
        total += res.occupied.size
        alive = res.meas_em > 0
        kept += int(alive.sum())
        if alive.any():
            lowest = min(lowest, float(res.meas_em[alive].min()))
    # expected survival: P(lognormal(mean E, sd sigma) >= 2 sigma)
    v = math.log1p((sigma / energy) ** 2)
    mu = math.log(energy) - v / 2
    z = (math.log(2 * sigma) - mu) / math.sqrt(v)
    expected = 0.5 * math.erfc(z / math.sqrt(2))
    print(f"noise cut at {2 * sigma:.3f} GeV: kept {kept / total:.3f}, expected {expected:.3f}, "
          f"lowest kept {lowest:.3f}")
    assert lowest >= 2 * sigma * (1 - 1e-9)
    assert abs(kept / total / expected - 1) < REL
    # without the cut nearly every tower survives the 0.5 GeV threshold alone
    loose = detector_preset("delphes_cms", calo_significance_min=0.0)
    res = simulate_detailed(parts.select(np.arange(360)), np.random.default_rng(0), loose)
    assert (res.meas_em > 0).mean() > kept / total + 0.1


@pytest.mark.parametrize("pt, eta, card", [(0.5, 0.5, 0.70), (5.0, 0.5, 0.95),
                                            (0.5, 2.0, 0.60), (5.0, 2.0, 0.85),
                                            (0.05, 0.5, 0.0)])
def test_tracking_efficiency_matches_the_card(pt, eta, card):
    parts = ring(211, 1, 5000, eta, 5000, pt=pt, mass=0.1396)
    res = simulate_detailed(parts, np.random.default_rng(7), DetectorConfig())
    eff = (res.track_particle >= 0).sum() / len(parts)
    print(f"pT {pt} |eta| {eta}: efficiency {eff:.3f}, card {card}")
    if card == 0.0:
        assert eff == 0.0
    else:
        assert abs(eff / card - 1) < REL


def test_photon_and_neutral_hadron_in_one_cell_give_two_elements_and_two_targets():
    parts = GenParticles.from_pt_eta_phi_m(np.array([22, 130]), np.zeros(2),
                                           np.array([15.0, 60.0]), np.array([0.2, 0.2]),
                                           np.array([1.0, 1.0]), np.array([0.0, 0.4976]))
    ev = simulate(parts, np.random.default_rng(0), DetectorConfig())
    assert ev.X.shape[0] == 2
    em = ev.X[:, S.F_E_EM] > 0
    had = ev.X[:, S.F_E_HAD] > 0
    assert (em ^ had).all() and em.sum() == 1 and had.sum() == 1  # never both parts
    assert ev.ygen[em, S.T_CLS][0] == S.CLS_PHOTON
    assert ev.ygen[had, S.T_CLS][0] == S.CLS_N_HAD
    assert ev.ygen[em, S.T_E][0] == pytest.approx(15.0 * math.cosh(0.2), rel=1e-5)
    assert ev.ycand[em, S.T_CLS][0] == S.CLS_PHOTON
    assert ev.ycand[had, S.T_CLS][0] == S.CLS_N_HAD
    # the optimistic (combined) detector merges them into one element and one target
    ev = simulate(parts, np.random.default_rng(0), detector_preset("optimistic"))
    assert ev.X.shape[0] == 1 and (ev.ygen[:, S.T_CLS] != 0).sum() == 1


# ---------------------------------------------------------------- target conventions
def _one(pid, charge, pt, eta, mass=0.0):
    return GenParticles.from_pt_eta_phi_m(np.array([pid]), np.array([charge]), np.array([pt]),
                                          np.array([eta]), np.array([0.5]), np.array([mass]))


def test_reference_track_charge_is_the_sign_of_the_pdg_id():
    electron = _one(11, -1, 20.0, 0.3)  # an e- has PDG id +11
    perfect = dict(track_eff_electron=(1.0, 1.0, 1.0, 1.0))
    ref = simulate(electron, np.random.default_rng(0), detector_preset("delphes_cms", **perfect))
    proj = simulate(electron, np.random.default_rng(0),
                    detector_preset("delphes_cms", **perfect, target_convention="project"))
    trk = ref.X[:, S.F_TYPE] == S.ELEM_TRACK
    assert ref.ygen[trk, S.T_CLS][0] == S.CLS_ELECTRON
    assert ref.ygen[trk, S.T_CHARGE][0] == 1.0 and proj.ygen[trk, S.T_CHARGE][0] == -1.0
    assert ref.X[trk, S.F_CHARGE][0] == -1.0 and ref.ycand[trk, S.T_CHARGE][0] == -1.0


@pytest.mark.parametrize("eta, reference_class", [(1.0, S.CLS_CH_HAD), (2.8, S.CLS_N_HAD)])
def test_untracked_charged_hadron_class_follows_the_ntuplizer(eta, reference_class):
    pion = _one(211, 1, 60.0 / math.cosh(eta), eta, 0.1396)
    lost = dict(track_eff_hadron=(0.0, 0.0, 0.0, 0.0))
    ev = simulate(pion, np.random.default_rng(0), detector_preset("delphes_cms", **lost))
    assert ev.X.shape[0] == 1 and ev.X[0, S.F_TYPE] == S.ELEM_TOWER
    assert ev.ygen[0, S.T_CLS] == reference_class
    assert ev.ygen[0, S.T_CHARGE] == (1.0 if reference_class == S.CLS_CH_HAD else 0.0)
    ev = simulate(pion, np.random.default_rng(0),
                  detector_preset("delphes_cms", **lost, target_convention="project"))
    assert ev.ygen[0, S.T_CLS] == S.CLS_N_HAD and ev.ygen[0, S.T_CHARGE] == 0


def test_untracked_electron_is_class_electron():
    electron = _one(11, -1, 20.0, 0.3)
    lost = dict(track_eff_electron=(0.0, 0.0, 0.0, 0.0))
    ev = simulate(electron, np.random.default_rng(0), detector_preset("delphes_cms", **lost))
    assert ev.X.shape[0] == 1 and ev.ygen[0, S.T_CLS] == S.CLS_ELECTRON
    ev = simulate(electron, np.random.default_rng(0),
                  detector_preset("delphes_cms", **lost, target_convention="project"))
    assert ev.ygen[0, S.T_CLS] == S.CLS_PHOTON


@pytest.mark.parametrize("energy, expected", [(8.0, S.CLS_NONE), (10.0, S.CLS_N_HAD)])
def test_neutral_hadron_target_threshold_is_9_gev(energy, expected):
    k0l = GenParticles.from_pt_eta_phi_m(np.array([130]), np.zeros(1),
                                         np.array([math.sqrt(energy ** 2 - 0.4976 ** 2)]),
                                         np.zeros(1), np.zeros(1), np.array([0.4976]))
    cfg = detector_preset("delphes_cms", calo_significance_min=0.0, hcal_stochastic=0.0,
                          hcal_constant=0.0)
    ev = simulate(k0l, np.random.default_rng(0), cfg)
    assert ev.X.shape[0] == 1 and ev.ygen[0, S.T_CLS] == expected


def test_ycand_subtracts_tracks_with_the_combined_significance_test():
    pion = _one(211, 1, 50.0, 0.2, 0.1396)
    k0l = _one(130, 0, 80.0, 0.2, 0.4976)
    perfect_trk = dict(track_eff_hadron=(1.0, 1.0, 1.0, 1.0))
    cfg = detector_preset("delphes_cms", **perfect_trk)
    # a lone pion: its HCAL tower is explained by the track, no neutral candidate
    n_neutral = 0
    for seed in range(20):
        ev = simulate(pion, np.random.default_rng(seed), cfg)
        n_neutral += int((ev.ycand[:, S.T_CLS] == S.CLS_N_HAD).sum())
    assert n_neutral <= 1  # a 2-sigma upward fluctuation at most once in 20
    # pion + 80 GeV K0L in the same cell: a neutral-hadron candidate of about the excess
    both = GenParticles.concatenate([pion, k0l])
    found = []
    for seed in range(20):
        res = simulate_detailed(both, np.random.default_rng(seed), cfg)
        ev = res.event
        nh = ev.ycand[:, S.T_CLS] == S.CLS_N_HAD
        if nh.any():
            tower = ev.X[nh][0]
            track_p = ev.X[ev.X[:, S.F_TYPE] == S.ELEM_TRACK, S.F_E].sum()
            np.testing.assert_allclose(ev.ycand[nh, S.T_E][0], tower[S.F_E_HAD] - track_p,
                                       rtol=1e-4)
            found.append(ev.ycand[nh, S.T_E][0])
    assert len(found) >= 15
    assert abs(np.mean(found) / (80.0 * math.cosh(0.2)) - 1) < 0.25
