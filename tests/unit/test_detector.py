"""Fast detector simulation: geometry, bookkeeping, tracking, resolution and targets."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import curve_fit

from mlpf_tf.configbase import ConfigError
from mlpf_tf.data import schema as S
from mlpf_tf.data.detector import (
    C_LIGHT,
    DetectorConfig,
    detector_preset,
    propagate_to_calorimeter,
    simulate,
    simulate_detailed,
    tower_grid,
)
from mlpf_tf.data.particle_gun import gun_particles
from mlpf_tf.data.particles import GenParticles


def OPT(**changes) -> DetectorConfig:
    """The ``optimistic`` preset (the suite's first detector), which these tests describe."""
    return detector_preset("optimistic", **changes)


# ---------------------------------------------------------------------------- helpers
def fitted_gaussian_width(x: np.ndarray) -> float:
    """Width of a Gaussian fitted to the histogram of ``x`` around its core (+-2.5 sigma)."""
    x = np.asarray(x, dtype=np.float64)
    med = np.median(x)
    s0 = 0.5 * (np.percentile(x, 84.135) - np.percentile(x, 15.865))
    core = x[np.abs(x - med) < 2.5 * s0]
    counts, edges = np.histogram(core, bins=50)
    centres = 0.5 * (edges[1:] + edges[:-1])

    def gauss(v, a, mu, sigma):
        return a * np.exp(-0.5 * ((v - mu) / sigma) ** 2)

    popt, _ = curve_fit(gauss, centres, counts, p0=(counts.max(), med, s0))
    return abs(float(popt[2]))


def gun_sample(n_events: int, seed: int, cfg: DetectorConfig, detailed: bool = False):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_events):
        parts = gun_particles(rng)
        res = simulate_detailed(parts, rng, cfg)
        out.append((parts, res) if detailed else res.event)
    return out


def single(pid, charge, pt, eta, phi, mass=0.0):
    return GenParticles.from_pt_eta_phi_m(np.atleast_1d(pid), np.atleast_1d(charge),
                                          np.atleast_1d(pt), np.atleast_1d(eta),
                                          np.atleast_1d(phi), np.atleast_1d(mass))


PERFECT = dict(track_pt_resolution=0.0, track_pt_resolution_slope=0.0,
               track_eta_resolution=0.0, track_phi_resolution=0.0, fake_track_rate=0.0,
               ecal_stochastic=0.0, ecal_constant=0.0, ecal_noise=0.0, hcal_stochastic=0.0,
               hcal_constant=0.0, forward_em_stochastic=0.0, forward_em_constant=0.0,
               forward_had_stochastic=0.0, forward_had_constant=0.0,
               track_eff_hadron=(1.0, 1.0, 1.0, 1.0), track_eff_electron=(1.0, 1.0, 1.0, 1.0),
               track_eff_muon=(1.0, 1.0, 1.0, 1.0), tower_position_uniform=False)


# ---------------------------------------------------------------------------- config
def test_config_defaults_are_cms_like_and_validated():
    cfg = OPT()
    assert cfg.bz == 3.8 and cfg.calo_radius == 1.29 and cfg.tracker_eta_max == 2.5
    assert cfg.calo_eta_max == 5.0
    assert cfg.to_dict()["tower_phi_bins"][0] == 72
    assert DetectorConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("changes, message", [
    (dict(track_pt_resolution=-0.1), "--detector.track_pt_resolution=-0.1: must be >= 0.0"),
    (dict(fake_track_rate=2.0), "--detector.fake_track_rate=2.0: must be <= 1.0"),
    (dict(track_eff_hadron=(0.9, 1.2, 0.8, 0.8)),
     "--detector.track_eff_hadron=(0.9, 1.2, 0.8, 0.8): expected 4 efficiencies in [0, 1]"),
    (dict(tower_eta_edges=(0.0, 1.0, 0.5)),
     "--detector.tower_eta_edges=(0.0, 1.0, 0.5): must start at 0 and increase strictly"),
    (dict(tower_eta_edges=(0.0, 1.0, 2.0), tower_phi_bins=(4,)),
     "--detector.tower_phi_bins=(4,): expected 2 entries, one per eta ring"),
    (dict(bz="strong"), "--detector.bz='strong': expected a number (float)"),
])
def test_config_rejects_bad_values_naming_them(changes, message):
    with pytest.raises(ConfigError) as err:
        OPT(**changes)
    assert str(err.value) == message


def test_tower_grid_cells_roundtrip():
    cfg = OPT()
    grid = tower_grid(cfg.tower_eta_edges, cfg.tower_phi_bins)
    assert grid.n_towers == 2 * (20 * 72 + 9 * 36 + 12 * 18)
    idx = grid.locate(grid.eta_center, grid.phi_center)
    np.testing.assert_array_equal(idx, np.arange(grid.n_towers))
    assert grid.locate(np.array([5.0, -5.2, 0.0]), np.array([0.0, 0.0, np.pi]))[:2].tolist() \
        == [-1, -1]
    # barrel cells are 0.087 x 5 degrees
    assert np.allclose((grid.eta_hi - grid.eta_lo)[np.abs(grid.eta_center) < 1.7], 0.087)
    assert np.allclose((grid.phi_hi - grid.phi_lo)[np.abs(grid.eta_center) < 1.7],
                       2 * np.pi / 72)


# ---------------------------------------------------------------------------- propagation
def test_helix_deflection_in_barrel_matches_formula():
    cfg = OPT()
    pt = np.array([2.0, 2.0, 20.0, 5.0])
    q = np.array([1, -1, 1, 0])
    eta_c, phi_c, ok = propagate_to_calorimeter(pt, np.zeros(4), np.full(4, 0.3), q, cfg)
    expected = 0.3 - q * np.arcsin(C_LIGHT * 3.8 * 1.29 / (2 * pt))
    print("phi_outer", phi_c, "expected", expected)
    np.testing.assert_allclose(phi_c, expected, atol=1e-12)
    np.testing.assert_allclose(eta_c, 0.0, atol=1e-12)
    assert ok.all()


def test_helix_endcap_and_loopers():
    cfg = OPT()
    pt, eta = np.array([2.0, 0.3, 0.5]), np.array([2.8, 0.05, 1.2])
    eta_c, phi_c, ok = propagate_to_calorimeter(pt, eta, np.zeros(3), np.ones(3), cfg)
    rc = pt[0] / (C_LIGHT * 3.8)
    alpha = 3.0 / (rc * math.sinh(eta[0]))
    r = 2 * rc * math.sin(alpha / 2)
    assert eta_c[0] == pytest.approx(math.asinh(3.0 / r), rel=1e-12)
    assert phi_c[0] == pytest.approx(-alpha / 2, rel=1e-12)
    # 0.3 GeV central: cannot reach R=1.29 m and needs many turns to reach the endcap
    assert ok.tolist() == [True, False, True]
    # mirror symmetry: eta -> -eta gives eta_outer -> -eta_outer, same phi_outer
    eta_m, phi_m, ok_m = propagate_to_calorimeter(pt, -eta, np.zeros(3), np.ones(3), cfg)
    np.testing.assert_allclose(eta_m, -eta_c, atol=1e-12)
    np.testing.assert_allclose(phi_m, phi_c, atol=1e-12)
    assert ok_m.tolist() == ok.tolist()


# ---------------------------------------------------------------------------- bookkeeping
def test_tower_energy_sums_equal_deposited_energy():
    cfg = OPT()
    total_dep, total_tower = 0.0, 0.0
    for parts, res in gun_sample(40, seed=11, cfg=cfg, detailed=True):
        # independent per-tower sums with a Python dictionary
        sums: dict[int, list[float]] = {}
        for i in np.flatnonzero(res.particle_tower >= 0):
            cell = sums.setdefault(int(res.particle_tower[i]), [0.0, 0.0])
            cell[0] += res.deposit_em[i]
            cell[1] += res.deposit_had[i]
        assert sorted(sums) == res.occupied.tolist()
        ref = np.array([sums[t] for t in res.occupied.tolist()]).reshape(-1, 2)
        np.testing.assert_allclose(res.true_em, ref[:, 0], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(res.true_had, ref[:, 1], rtol=1e-12, atol=1e-12)
        # deposits are the particles' energies (nothing created or lost)
        dep = res.deposit_em + res.deposit_had
        hit = res.particle_tower >= 0
        mu = np.abs(parts.pid) == 13
        np.testing.assert_allclose(dep[hit & ~mu], parts.e[hit & ~mu], rtol=1e-12)
        total_dep += dep.sum()
        total_tower += res.true_em.sum() + res.true_had.sum()
        # measured bookkeeping of the elements
        X = res.event.X
        tw = X[:, S.F_TYPE] == S.ELEM_TOWER
        np.testing.assert_allclose(X[tw, S.F_E], X[tw, S.F_E_EM] + X[tw, S.F_E_HAD], rtol=1e-6)
        np.testing.assert_allclose(X[tw, S.F_PT] * np.cosh(X[tw, S.F_ETA]), X[tw, S.F_E],
                                   rtol=1e-5)
        pos = np.searchsorted(res.occupied, res.tower_id)
        np.testing.assert_allclose(X[tw, S.F_E_EM], res.meas_em[pos], rtol=1e-6)
        np.testing.assert_allclose(X[tw, S.F_E_HAD], res.meas_had[pos], rtol=1e-6)
        assert (res.meas_em[res.meas_em > 0] >= cfg.ecal_energy_min).all()
        assert (res.meas_had[res.meas_had > 0] >= cfg.hcal_energy_min).all()
    print(f"deposited {total_dep:.6f} GeV, tower sums {total_tower:.6f} GeV")
    assert total_tower == pytest.approx(total_dep, rel=1e-12)


def test_perfect_calorimeter_elements_carry_exactly_the_deposits():
    cfg = OPT(**PERFECT, ecal_energy_min=0.0, hcal_energy_min=0.0)
    for _, res in gun_sample(10, seed=3, cfg=cfg, detailed=True):
        X = res.event.X
        tw = X[:, S.F_TYPE] == S.ELEM_TOWER
        assert tw.sum() == res.occupied.size   # every occupied tower is an element
        np.testing.assert_allclose(X[tw, S.F_E_EM], res.true_em, rtol=1e-6)
        np.testing.assert_allclose(X[tw, S.F_E_HAD], res.true_had, rtol=1e-6)
        hit = res.particle_tower >= 0
        assert X[tw, S.F_E].astype(np.float64).sum() == pytest.approx(
            (res.deposit_em + res.deposit_had)[hit].sum(), rel=1e-6)


def test_smeared_tower_energy_is_unbiased():
    cfg = OPT(ecal_energy_min=0.0, hcal_energy_min=0.0)
    true, meas = 0.0, 0.0
    for _, res in gun_sample(60, seed=5, cfg=cfg, detailed=True):
        true += res.true_em.sum() + res.true_had.sum()
        meas += res.meas_em.sum() + res.meas_had.sum()
    print(f"measured / true tower energy = {meas / true:.4f}")
    assert meas / true == pytest.approx(1.0, abs=0.02)


# ---------------------------------------------------------------------------- tracking
def test_each_charged_particle_gives_at_most_one_track():
    cfg = OPT()
    n_tracks = n_cand = 0
    for parts, res in gun_sample(60, seed=21, cfg=cfg, detailed=True):
        real = res.track_particle[res.track_particle >= 0]
        assert np.unique(real).size == real.size, "a particle produced two tracks"
        in_acc = (parts.charge != 0) & (np.abs(parts.eta) < 2.5) & (parts.pt >= cfg.track_pt_min)
        assert in_acc[real].all(), "a track from a particle outside the acceptance"
        n_tracks += real.size
        n_cand += int(in_acc.sum())
    eff = n_tracks / n_cand
    print(f"tracks {n_tracks} from {n_cand} charged particles in acceptance: eff {eff:.3f}")
    assert 0.8 < eff < 0.97


def test_full_efficiency_gives_exactly_one_track_per_charged_particle():
    cfg = OPT(**PERFECT)
    for parts, res in gun_sample(20, seed=8, cfg=cfg, detailed=True):
        in_acc = (parts.charge != 0) & (np.abs(parts.eta) < 2.5) & (parts.pt >= cfg.track_pt_min)
        assert sorted(res.track_particle.tolist()) == np.flatnonzero(in_acc).tolist()
        X = res.event.X
        trk = X[:, S.F_TYPE] == S.ELEM_TRACK
        np.testing.assert_allclose(X[trk, S.F_PT], parts.pt[res.track_particle], rtol=1e-6)
        assert (np.diff(X[trk, S.F_PT]) <= 0).all()   # tracks ordered by decreasing pT
        assert (X[:res.n_tracks, S.F_TYPE] == S.ELEM_TRACK).all()


def test_track_pt_resolution_matches_configured_value():
    sigma = 0.03
    cfg = OPT(track_pt_resolution=sigma, track_pt_resolution_slope=0.0)
    rel = []
    for X, ygen, _ in gun_sample(300, seed=2, cfg=cfg):
        m = (X[:, S.F_TYPE] == S.ELEM_TRACK) & (ygen[:, S.T_CLS] != S.CLS_NONE)
        rel.append(X[m, S.F_PT] / ygen[m, S.T_PT] - 1.0)
    rel = np.concatenate(rel)
    width = fitted_gaussian_width(rel)
    print(f"configured {sigma}, fitted width {width:.4f} from {rel.size} tracks")
    assert rel.size > 3000
    assert abs(width / sigma - 1.0) < 0.10


def test_track_pt_resolution_pt_dependent_term():
    cfg = OPT(track_pt_resolution=0.01, track_pt_resolution_slope=2e-3)
    pulls = []
    for X, ygen, _ in gun_sample(300, seed=4, cfg=cfg):
        m = (X[:, S.F_TYPE] == S.ELEM_TRACK) & (ygen[:, S.T_CLS] != S.CLS_NONE)
        pt_gen = ygen[m, S.T_PT].astype(np.float64)
        rel = X[m, S.F_PT] / pt_gen - 1.0
        pulls.append(rel / cfg.track_pt_sigma(pt_gen))
    width = fitted_gaussian_width(np.concatenate(pulls))
    print(f"pull width {width:.4f} (expected 1)")
    assert abs(width - 1.0) < 0.10


# ---------------------------------------------------------------------------- targets
def assert_targets_consistent(X, ygen, ycand):
    S.check_event(X, ygen, ycand)
    assert X.dtype == ygen.dtype == ycand.dtype == np.float32
    trk = X[:, S.F_TYPE] == S.ELEM_TRACK
    tw = X[:, S.F_TYPE] == S.ELEM_TOWER
    assert (trk | tw).all()
    for y in (ygen, ycand):
        cls = y[:, S.T_CLS].astype(int)
        charged = np.isin(cls, S.CHARGED_CLASSES)
        assert (np.abs(y[charged, S.T_CHARGE]) == 1).all()
        assert (y[~charged, S.T_CHARGE] == 0).all()
        assert (y[cls == S.CLS_NONE] == 0).all(), "class-0 rows must have zero kinematics"
        has = cls != S.CLS_NONE
        np.testing.assert_allclose(y[has, S.T_SIN_PHI] ** 2 + y[has, S.T_COS_PHI] ** 2, 1.0,
                                   rtol=1e-5)
    g, c = ygen[:, S.T_CLS].astype(int), ycand[:, S.T_CLS].astype(int)
    assert np.isin(g[trk], (S.CLS_NONE, *S.CHARGED_CLASSES)).all()
    assert np.isin(g[tw], (S.CLS_NONE, *S.NEUTRAL_CLASSES)).all()
    assert np.isin(c[trk], S.CHARGED_CLASSES).all()
    assert np.isin(c[tw], (S.CLS_NONE, *S.NEUTRAL_CLASSES)).all()
    # Delphes convention: neutral candidates carry only E, charged ones only pT
    assert (ycand[np.isin(c, S.NEUTRAL_CLASSES), S.T_PT] == 0).all()
    assert (ycand[np.isin(c, S.NEUTRAL_CLASSES), S.T_E] > 0).all()
    assert (ycand[trk, S.T_E] == 0).all() and (ycand[trk, S.T_PT] > 0).all()
    # track flags are the generator truth behind the ygen class
    np.testing.assert_array_equal(X[trk, S.F_IS_MU] == 1, g[trk] == S.CLS_MUON)
    np.testing.assert_array_equal(X[trk, S.F_IS_ELE] == 1, g[trk] == S.CLS_ELECTRON)
    np.testing.assert_array_equal(ycand[trk, S.T_CHARGE], X[trk, S.F_CHARGE])
    # gen targets of real tracks have the track's charge
    real = trk & (g != S.CLS_NONE)
    np.testing.assert_array_equal(ygen[real, S.T_CHARGE], X[real, S.F_CHARGE])


def test_targets_follow_the_schema_on_gun_events():
    cfg = OPT()
    n_fake = 0
    for ev in gun_sample(100, seed=9, cfg=cfg):
        assert_targets_consistent(*ev)
        trk = ev.X[:, S.F_TYPE] == S.ELEM_TRACK
        n_fake += int((ev.ygen[trk, S.T_CLS] == 0).sum())
    print(f"fake tracks in 100 gun events: {n_fake}")
    assert n_fake > 0


def test_pileup_targets_flag():
    rng = np.random.default_rng(0)
    parts = gun_particles(rng, pileup=10)
    assert parts.is_pileup.any()
    pu_charged = parts.is_pileup & (parts.charge != 0) & (np.abs(parts.eta) < 2.5) \
        & (parts.pt > 0.5)
    with_pu = simulate_detailed(parts, np.random.default_rng(1), OPT(**PERFECT))
    without = simulate_detailed(parts, np.random.default_rng(1),
                                OPT(**PERFECT, pileup_targets=False))
    np.testing.assert_array_equal(with_pu.event.X, without.event.X)
    n_trk = with_pu.n_tracks
    pu_rows = np.isin(with_pu.track_particle, np.flatnonzero(pu_charged))
    assert pu_rows.sum() == pu_charged.sum() > 0
    assert (with_pu.event.ygen[:n_trk][pu_rows, S.T_CLS] != 0).all()
    assert (without.event.ygen[:n_trk][pu_rows, S.T_CLS] == 0).all()
    assert_targets_consistent(*without.event)


def test_single_particles_targets_and_candidates():
    cfg = OPT(**PERFECT)
    # isolated photon of 20 GeV: one tower, ygen photon, ycand photon, no track
    ev = simulate(single(22, 0, 20.0, 0.5, 1.0), np.random.default_rng(0), cfg)
    assert ev.X.shape == (1, 12) and ev.X[0, S.F_TYPE] == S.ELEM_TOWER
    assert ev.X[0, S.F_E_EM] == pytest.approx(20.0 * math.cosh(0.5), rel=1e-6)
    assert ev.ygen[0, S.T_CLS] == S.CLS_PHOTON and ev.ycand[0, S.T_CLS] == S.CLS_PHOTON
    assert ev.ygen[0, S.T_PT] == pytest.approx(20.0, rel=1e-6)
    # a 10 GeV pi+: a track (charged hadron) and a tower whose energy the track explains
    ev = simulate(single(211, 1, 10.0, 0.2, -2.0, 0.1396), np.random.default_rng(0), cfg)
    assert ev.X[:, S.F_TYPE].tolist() == [S.ELEM_TRACK, S.ELEM_TOWER]
    assert ev.ygen[:, S.T_CLS].tolist() == [S.CLS_CH_HAD, S.CLS_NONE]
    assert ev.ycand[:, S.T_CLS].tolist() == [S.CLS_CH_HAD, S.CLS_NONE]
    # the tower is where the bent track points
    grid = tower_grid(cfg.tower_eta_edges, cfg.tower_phi_bins)
    phi_out = math.atan2(ev.X[0, S.F_SIN_PHI_OUTER], ev.X[0, S.F_COS_PHI_OUTER])
    phi_tw = math.atan2(ev.X[1, S.F_SIN_PHI], ev.X[1, S.F_COS_PHI])
    assert grid.locate(np.array([ev.X[0, S.F_ETA_OUTER]]), np.array([phi_out]))[0] == \
        grid.locate(np.array([ev.X[1, S.F_ETA]]), np.array([phi_tw]))[0]
    # a 10 GeV K0L: neutral hadron tower target and candidate
    ev = simulate(single(130, 0, 10.0, -1.0, 0.0, 0.4976), np.random.default_rng(0), cfg)
    assert ev.ygen[0, S.T_CLS] == S.CLS_N_HAD and ev.ycand[0, S.T_CLS] == S.CLS_N_HAD
    assert ev.ycand[0, S.T_E] == pytest.approx(ev.ygen[0, S.T_E], rel=1e-5)
    # pi+ outside the tracker (|eta| 3.5): no track, the tower target is hadronic, neutral
    ev = simulate(single(211, 1, 5.0, 3.5, 0.0, 0.1396), np.random.default_rng(0), cfg)
    assert ev.X[:, S.F_TYPE].tolist() == [S.ELEM_TOWER]
    assert ev.ygen[0, S.T_CLS] == S.CLS_N_HAD and ev.ygen[0, S.T_CHARGE] == 0


def test_overlapping_photon_and_pion_leave_the_photon_candidate():
    cfg = OPT(**PERFECT)
    parts = GenParticles.concatenate([single(211, 1, 50.0, 0.04, 0.04, 0.1396),
                                      single(22, 0, 8.0, 0.04, 0.04)])
    # the 50 GeV pion bends by ~0.015 rad: both land in the same 5-degree cell
    ev = simulate(parts, np.random.default_rng(0), cfg)
    tw = ev.X[:, S.F_TYPE] == S.ELEM_TOWER
    assert tw.sum() == 1
    assert ev.ycand[tw, S.T_CLS][0] == S.CLS_PHOTON
    assert ev.ycand[tw, S.T_E][0] == pytest.approx(8.0 * math.cosh(0.04), abs=1e-3)
    assert ev.ygen[tw, S.T_CLS][0] == S.CLS_PHOTON


def test_empty_event_and_type_errors():
    ev = simulate(GenParticles.empty(), np.random.default_rng(0), OPT())
    assert ev.X.shape == (0, 12) and ev.ygen.shape == (0, 7) and ev.ycand.shape == (0, 7)
    S.check_event(*ev)
    with pytest.raises(TypeError, match="cfg must be a DetectorConfig, got dict"):
        simulate(GenParticles.empty(), np.random.default_rng(0), {})
    with pytest.raises(TypeError, match="particles must be GenParticles, got list"):
        simulate([], np.random.default_rng(0), OPT())


def test_simulation_is_deterministic_per_rng_seed():
    parts = gun_particles(np.random.default_rng(1))
    a = simulate(parts, np.random.default_rng(5), OPT())
    b = simulate(parts, np.random.default_rng(5), OPT())
    c = simulate(parts, np.random.default_rng(6), OPT())
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert a.X.shape != c.X.shape or not np.array_equal(a.X, c.X)
