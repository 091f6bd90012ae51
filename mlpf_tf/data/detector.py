"""Fast, vectorised detector simulation producing events in the Delphes particle-flow schema.

Presets (:func:`detector_preset`): ``delphes_cms``, the default, follows the Delphes CMS
pile-up card that made the public dataset (delphes/delphes_card_CMS_PileUp.tcl in the
reference): separate ECAL (0.0174 x 1 degree) and HCAL (0.087 x 5 degrees) tower elements,
each with E_em or E_had only; the card's ECAL resolution with its eta factors
((1 + 0.64 eta^2) barrel, (2.16 + 5.6 (|eta| - 2)^2) endcap) and HCAL 150%/sqrt(E) (+) 5%;
towers below 2 sigma of their resolution dropped; tracks from 0.1 GeV with the card's
efficiencies and log-normal pT smearing of sqrt(a^2 + (b pT)^2) per species and |eta| region
(hadrons a = 6/10/25%), 0.01 in eta and phi; no fake tracks. ``optimistic`` keeps the
suite's first detector (described below where it differs): one combined tower grid, flat
resolutions, 0.5 GeV tracks, no noise cut. With separate calorimeters, the calorimeter-only
photons and electrons are targets of the ECAL element of their cell (class photon), the
other calorimeter-only particles of the HCAL element (class neutral hadron); the ycand of a
tower is the energy left after subtracting the tracks pointing into it, kept when it exceeds
``cand_significance`` times the track and calorimeter resolutions added in quadrature
(Delphes' energy-flow rule), a photon in the ECAL and a neutral hadron in the HCAL.

Target conventions (``target_convention``): ``reference``, the default, follows the
reference's ntuplizer (delphes/ntuplizer.py): ygen charge is the sign of the PDG id (+1 for
e- and mu-); a tower's target class is the category (neutral hadron, charged hadron, photon,
electron) with the most energy among its untracked particles, so an untracked charged hadron
inside the tracker is class 1 (charge +1) and an untracked electron class 4; neutral-hadron
targets need 9 GeV, photons none. ``project`` (the ``optimistic`` preset's) is described
below.

The rest of this docstring describes the mechanics common to both presets.

The geometry and response follow the Delphes CMS card at the level the MLPF task needs; every
resolution, threshold and efficiency is a :class:`DetectorConfig` field. ``simulate`` turns one
event's :class:`~mlpf_tf.data.particles.GenParticles` into an :class:`~mlpf_tf.data.schema.Event`.

Propagation. Charged particles follow a helix in a solenoid field ``bz`` (3.8 T) up to the
calorimeter surface, a cylinder of radius ``calo_radius`` (1.29 m) and half-length
``calo_half_length`` (3.0 m). The impact position (eta_outer, phi_outer) is the position seen
from the origin; in the barrel phi_outer = phi - q * asin(0.3 B R / (2 pT)). Particles that
cannot reach the barrel and need more than one full turn to reach an endcap ("loopers") never
reach the calorimeter; a looper's track reports eta_outer, phi_outer = its eta, phi. Neutral
particles fly straight (impact eta, phi = their own).

Tracker. Charged particles with |eta| < ``tracker_eta_max`` and pT >= ``track_pt_min`` are
found with an efficiency depending on the species (hadron / electron / muon), on barrel vs
endcap and on pT below or above ``track_eff_low_pt_max``. A found particle gives exactly one
track; its pT is smeared with a Gaussian of relative width
sqrt(track_pt_resolution^2 + (track_pt_resolution_slope * pT)^2), eta and phi with small
Gaussians; eta_outer / phi_outer are extrapolated from the measured parameters. Fake tracks
(no generator particle) are added at a Poisson rate ``fake_track_rate`` per real track.
Track features: [2, pT, eta, sin phi, cos phi, p, eta_outer, sin phi_outer, cos phi_outer,
charge, is_gen_muon, is_gen_electron]; the last two are generator truth (|pid| 13 / 11), as in
the Delphes ntuples (Delphes PF identifies leptons from generator information).

Calorimeter. Every visible particle reaching the calorimeter inside |eta| < the last tower edge
deposits its energy in the tower containing its impact point: photons, electrons (and a
stable pi0) fully in EM; K0S and Lambda 30% EM / 70% HAD (as in Delphes); other hadrons a
fraction ``hadron_em_fraction`` in EM, the rest in HAD; muons ``min(E, muon_mip_energy)`` in
HAD (0 by default, as in Delphes). Towers form a CMS-like eta-phi grid (0.087 x 5 deg up to
|eta| 1.74, 10 deg up to 3.0, 20 deg in the forward region up to 5.0). The true deposits are
summed per tower exactly (float64 bincount); the EM and HAD sums are then each smeared once per
tower with a log-normal of mean the true energy and width sqrt((c E)^2 + s^2 E + n^2) (ECAL /
HCAL terms for |eta| < ``forward_eta_min``, forward terms beyond), and each part below its
threshold (``ecal_energy_min``, ``hcal_energy_min``) is set to 0. A tower with measured
E = E_em + E_had > 0 becomes an element [1, E_T, eta, sin phi, cos phi, E, E_em, E_had, 0...]
with E_T = E / cosh(eta); its eta/phi are drawn uniformly inside the cell (as Delphes does) or
are the cell centre (``tower_position_uniform=False``).

Element order: all tracks first, by decreasing measured pT (fakes are mixed in), then all
towers by increasing tower index (eta ring from -eta_max to +eta_max, then phi).

Targets ``ygen`` [class, charge, pT, eta, sin phi, cos phi, E] (classes: 0 none, 1 charged
hadron, 2 neutral hadron, 3 photon, 4 electron, 5 muon):
- track: its generator particle (class from |pid|: 11 electron, 13 muon, else charged hadron);
  a fake track has class 0 and all-zero kinematics;
- tower: the particles whose deposit it received and that have no track ("calorimeter-only"
  particles). A charged particle without a track (outside the tracker, below threshold or lost
  to inefficiency) is seen only as a deposit, so it counts with its calorimeter appearance:
  charged hadrons as hadronic, electrons as electromagnetic. The target is the summed
  four-vector of these particles; its class is photon if their EM-type energy (photons,
  electrons) exceeds their hadronic-type energy, else neutral hadron; charge 0. Photon
  targets below ``target_min_e_photon`` and neutral-hadron targets below
  ``target_min_e_neutral_hadron`` become class 0. Untracked muons are not targets.
  Particles deposited in towers that fail the thresholds have no element and no target.
- pileup particles are targets like the hard-scatter ones (as in the Delphes dataset) unless
  ``pileup_targets=False``, in which case their tracks have class 0 and they do not
  contribute to tower targets.
All ygen rows of class 0 have all-zero columns.

Targets ``ycand``: a rule-based particle flow, the baseline of the reports.
- every track gives a charged candidate: muon / electron when the is_gen_muon /
  is_gen_electron flag is set, else charged hadron; charge and pT from the track;
- every tower: the expected calorimeter energy of the tracks whose (measured) eta_outer /
  phi_outer point into it is subtracted (electron tracks: p in EM; muon tracks:
  min(p, muon_mip_energy) in HAD; other tracks: p split by ``hadron_em_fraction``); a remaining
  part counts when it exceeds ``cand_significance`` times the calorimeter resolution of the
  subtracted energy. The remaining EM + HAD energy makes one candidate on that tower element,
  a photon if the EM remainder dominates, else a neutral hadron, kept if its energy is at least
  ``cand_min_e_photon`` / ``cand_min_e_neutral_hadron``; position = the tower's eta, phi.
As in the real Delphes files, ycand neutral candidates carry only E (pT column 0) and charged
ones only pT (E column 0); a loader derives the missing one from the other and eta.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import typing

import numpy as np

from mlpf_tf.configbase import Section, param
from mlpf_tf.data import schema as S
from mlpf_tf.data.particles import PID_ELECTRON, PID_MUON, PID_PHOTON, GenParticles

# Speed of light factor: curvature radius [m] = pT [GeV] / (C_LIGHT * B [T] * |q|).
C_LIGHT = 0.299792458

_BARREL_EDGES = tuple(round(0.087 * i, 3) for i in range(21))  # 0 .. 1.74
_ENDCAP_EDGES = (1.83, 1.93, 2.043, 2.172, 2.322, 2.5, 2.65, 2.868, 3.0)
_FORWARD_EDGES = (3.139, 3.314, 3.489, 3.664, 3.839, 4.013, 4.191, 4.363, 4.538, 4.716, 4.889,
                  5.0)
#: The ``optimistic`` preset's single (combined EM + HAD) tower grid.
OPTIMISTIC_TOWER_ETA_EDGES = _BARREL_EDGES + _ENDCAP_EDGES + _FORWARD_EDGES
OPTIMISTIC_TOWER_PHI_BINS = (72,) * 20 + (36,) * len(_ENDCAP_EDGES) + (18,) * len(_FORWARD_EDGES)
# Kept for callers of the old names.
DEFAULT_TOWER_ETA_EDGES = OPTIMISTIC_TOWER_ETA_EDGES
DEFAULT_TOWER_PHI_BINS = OPTIMISTIC_TOWER_PHI_BINS

#: HCAL towers of the Delphes CMS pile-up card: 0.087 x 5 degrees up to |eta| 1.74, 10 degrees
#: up to 4.525, 20 degrees up to 5.
CMS_HCAL_ETA_EDGES = _BARREL_EDGES + (1.83, 1.93, 2.043, 2.172, 2.322, 2.5, 2.65, 2.868, 2.95,
                                      3.125, 3.3, 3.475, 3.65, 3.825, 4.0, 4.175, 4.35, 4.525,
                                      4.7, 5.0)
CMS_HCAL_PHI_BINS = (72,) * 20 + (36,) * 18 + (18,) * 2
#: ECAL towers of the card: 0.0174 in eta x 1 degree up to |eta| ~3 (172 rings), then the HF
#: granularity (0.175 x 10 degrees) up to 5.
CMS_ECAL_ETA_EDGES = tuple(round(0.0174 * i, 4) for i in range(173)) + (
    3.125, 3.3, 3.475, 3.65, 3.825, 4.0, 4.175, 4.35, 4.525, 4.7, 5.0)
CMS_ECAL_PHI_BINS = (360,) * 172 + (36,) * 11

# Neutral long-lived hadrons Delphes deposits 30% in ECAL: K0S, Lambda.
_V0_PIDS = (310, 3122)
_V0_EM_FRACTION = 0.3
_PI0 = 111


@dataclasses.dataclass
class DetectorConfig(Section):
    """Resolutions, thresholds and geometry of the fast detector simulation (CMS-like)."""

    SECTION: typing.ClassVar[str] = "detector"

    # Geometry and field.
    bz: float = param(3.8, "solenoid field (T); 0 = straight tracks", low=0.0)
    calo_radius: float = param(1.29, "calorimeter inner radius (m)", low=1e-3)
    calo_half_length: float = param(3.0, "calorimeter half-length along the beam (m)", low=1e-3)
    # Tracker.
    tracker_eta_max: float = param(2.5, "tracker acceptance |eta|", low=0.0)
    track_pt_min: float = param(0.1, "minimum pT of a track (GeV)", low=0.0)
    track_eff_low_pt_max: float = param(1.0, "pT (GeV) up to which low-pT efficiencies apply",
                                        low=0.0)
    track_eff_barrel_eta_max: float = param(1.5, "|eta| boundary of barrel efficiencies",
                                            low=0.0)
    track_eff_hadron: tuple = param(
        None, "charged-hadron tracking efficiency (barrel low pT, barrel high pT, endcap low pT, "
              "endcap high pT)", default_factory=lambda: (0.70, 0.95, 0.60, 0.85))
    track_eff_electron: tuple = param(
        None, "electron tracking efficiency (barrel low, barrel high, endcap low, endcap high)",
        default_factory=lambda: (0.73, 0.95, 0.50, 0.83))
    track_eff_muon: tuple = param(
        None, "muon tracking efficiency (barrel low, barrel high, endcap low, endcap high)",
        default_factory=lambda: (0.75, 0.99, 0.70, 0.98))
    track_resolution: str = param(
        "eta_regions", "track pT resolution model: eta_regions (per species and |eta| region, "
        "the card's) or flat (track_pt_resolution (+) track_pt_resolution_slope * pT)",
        choices=("eta_regions", "flat"))
    track_pt_resolution: float = param(
        0.01, "flat model: constant term of the relative track pT resolution", low=0.0,
        high=0.5)
    track_pt_resolution_slope: float = param(
        1.5e-4, "flat model: term of sigma(pT)/pT proportional to pT (1/GeV), in quadrature",
        low=0.0, high=0.01)
    track_res_eta_edges: tuple = param(None, "eta_regions model: |eta| region boundaries",
                                       default_factory=lambda: (0.5, 1.5))
    track_res_hadron: tuple = param(None, "eta_regions: constant term per region, hadrons",
                                    default_factory=lambda: (0.06, 0.10, 0.25))
    track_res_slope_hadron: tuple = param(
        None, "eta_regions: pT term (1/GeV) per region, hadrons",
        default_factory=lambda: (1.3e-3, 1.7e-3, 3.1e-3))
    track_res_electron: tuple = param(None, "eta_regions: constant term per region, electrons",
                                      default_factory=lambda: (0.03, 0.05, 0.15))
    track_res_slope_electron: tuple = param(
        None, "eta_regions: pT term (1/GeV) per region, electrons",
        default_factory=lambda: (1.3e-3, 1.7e-3, 3.1e-3))
    track_res_muon: tuple = param(None, "eta_regions: constant term per region, muons",
                                  default_factory=lambda: (0.01, 0.015, 0.025))
    track_res_slope_muon: tuple = param(
        None, "eta_regions: pT term (1/GeV) per region, muons",
        default_factory=lambda: (1.0e-4, 1.5e-4, 3.5e-4))
    track_pt_lognormal: bool = param(
        True, "smear track pT with a log-normal (Delphes) instead of a Gaussian")
    track_eta_resolution: float = param(0.01, "Gaussian smearing of track eta", low=0.0)
    track_phi_resolution: float = param(0.01, "Gaussian smearing of track phi (rad)", low=0.0)
    fake_track_rate: float = param(0.0, "mean number of fake tracks per real track", low=0.0,
                                   high=1.0)
    # Calorimeter.
    separate_calorimeters: bool = param(
        True, "ECAL and HCAL towers are separate elements (each with E_em or E_had only, as "
              "in Delphes); false = one combined tower grid with both parts")
    tower_eta_edges: tuple = param(None, "HCAL (or combined) tower |eta| edges, from 0 up to "
                                   "the coverage", default_factory=lambda: CMS_HCAL_ETA_EDGES)
    tower_phi_bins: tuple = param(None, "number of phi cells of each HCAL (or combined) ring",
                                  default_factory=lambda: CMS_HCAL_PHI_BINS)
    ecal_tower_eta_edges: tuple = param(None, "ECAL tower |eta| edges (separate_calorimeters)",
                                        default_factory=lambda: CMS_ECAL_ETA_EDGES)
    ecal_tower_phi_bins: tuple = param(None, "number of phi cells of each ECAL ring",
                                       default_factory=lambda: CMS_ECAL_PHI_BINS)
    tower_position_uniform: bool = param(
        True, "tower eta/phi drawn uniformly inside the cell (Delphes); false = cell centre")
    forward_eta_min: float = param(3.0, "|eta| where the forward HAD calorimeter starts",
                                   low=0.0)
    ecal_forward_eta_min: float = param(2.5, "|eta| where the forward EM resolution starts",
                                        low=0.0)
    ecal_eta_dependence: bool = param(
        True, "scale the ECAL resolution by the card's eta factors: (1 + 0.64 eta^2) for "
              "|eta| <= 1.5, (2.16 + 5.6 (|eta| - 2)^2) up to ecal_forward_eta_min")
    ecal_stochastic: float = param(0.11, "ECAL stochastic term (GeV^0.5)", low=0.0)
    ecal_constant: float = param(0.008, "ECAL constant term", low=0.0)
    ecal_noise: float = param(0.40, "ECAL noise term (GeV)", low=0.0)
    hcal_stochastic: float = param(1.5, "HCAL stochastic term (GeV^0.5)", low=0.0)
    hcal_constant: float = param(0.05, "HCAL constant term", low=0.0)
    forward_em_stochastic: float = param(2.08, "forward EM stochastic term (GeV^0.5)", low=0.0)
    forward_em_constant: float = param(0.107, "forward EM constant term", low=0.0)
    forward_had_stochastic: float = param(2.7, "forward HAD stochastic term (GeV^0.5)", low=0.0)
    forward_had_constant: float = param(0.13, "forward HAD constant term", low=0.0)
    ecal_energy_min: float = param(0.5, "EM part of a tower below this (GeV) is dropped",
                                   low=0.0)
    hcal_energy_min: float = param(1.0, "HAD part of a tower below this (GeV) is dropped",
                                   low=0.0)
    calo_significance_min: float = param(
        2.0, "a tower part below this many sigma of its resolution (noise) is dropped", low=0.0)
    hadron_em_fraction: float = param(0.0, "fraction of a hadron's energy deposited in EM",
                                      low=0.0, high=1.0)
    muon_mip_energy: float = param(0.0, "HAD energy a muon deposits (GeV; 0 = none)", low=0.0)
    # Targets.
    pileup_targets: bool = param(True, "pileup particles are ygen targets")
    target_convention: str = param(
        "reference", "ygen conventions: reference (the reference ntuplizer's: charge = sign of "
        "the PDG id, an untracked charged hadron inside the tracker is class 1, an untracked "
        "electron class 4) or project (physical charge; untracked particles become photon or "
        "neutral-hadron targets)", choices=("reference", "project"))
    target_min_e_photon: float = param(0.0, "photon tower targets below this E are class 0",
                                       low=0.0)
    target_min_e_neutral_hadron: float = param(
        9.0, "neutral-hadron tower targets below this E are class 0 (the ntuplizer's 9 GeV)",
        low=0.0)
    cand_min_e_photon: float = param(1.0, "minimum E of a ycand photon (GeV)", low=0.0)
    cand_min_e_neutral_hadron: float = param(5.0, "minimum E of a ycand neutral hadron (GeV)",
                                             low=0.0)
    cand_significance: float = param(
        2.0, "remaining tower energy must exceed this many sigma of the subtracted track energy",
        low=0.0)

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list):
                object.__setattr__(self, name, tuple(value))
        self.validate()

    def check(self) -> None:
        for name in ("track_eff_hadron", "track_eff_electron", "track_eff_muon"):
            value = getattr(self, name)
            if (not isinstance(value, tuple) or len(value) != 4
                    or not all(_is_number(v) and 0.0 <= v <= 1.0 for v in value)):
                self.fail(name, "expected 4 efficiencies in [0, 1]")
        for edges_name, bins_name in (("tower_eta_edges", "tower_phi_bins"),
                                      ("ecal_tower_eta_edges", "ecal_tower_phi_bins")):
            self._check_grid(edges_name, bins_name)
        edges = self.track_res_eta_edges
        if (not isinstance(edges, tuple) or not all(_is_number(v) and v > 0 for v in edges)
                or any(b <= a for a, b in zip(edges, edges[1:]))):
            self.fail("track_res_eta_edges", "expected increasing positive numbers")
        for name in ("track_res_hadron", "track_res_slope_hadron", "track_res_electron",
                     "track_res_slope_electron", "track_res_muon", "track_res_slope_muon"):
            value = getattr(self, name)
            if (not isinstance(value, tuple) or len(value) != len(edges) + 1
                    or not all(_is_number(v) and v >= 0 for v in value)):
                self.fail(name, f"expected {len(edges) + 1} non-negative numbers, one per "
                          "|eta| region of track_res_eta_edges")

    def _check_grid(self, edges_name: str, bins_name: str) -> None:
        edges = getattr(self, edges_name)
        if (not isinstance(edges, tuple) or len(edges) < 2
                or not all(_is_number(v) for v in edges)):
            self.fail(edges_name, "expected at least 2 numbers")
        if edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])):
            self.fail(edges_name, "must start at 0 and increase strictly")
        bins = getattr(self, bins_name)
        if not isinstance(bins, tuple) or len(bins) != len(edges) - 1:
            self.fail(bins_name, f"expected {len(edges) - 1} entries, one per eta ring")
        if not all(isinstance(b, (int, np.integer)) and not isinstance(b, bool) and b >= 1
                   for b in bins):
            self.fail(bins_name, "expected positive integers")

    @property
    def calo_eta_max(self) -> float:
        return float(self.tower_eta_edges[-1])

    def track_pt_sigma(self, pt: np.ndarray, eta: np.ndarray | None = None,
                       pid: np.ndarray | None = None) -> np.ndarray:
        """Relative track pT resolution sigma(pT)/pT at generator pT ``pt``.

        The eta_regions model needs ``eta`` (and ``pid``: electrons and muons have their own
        terms; hadrons otherwise); the flat model ignores both.
        """
        pt = np.asarray(pt, dtype=np.float64)
        if self.track_resolution == "flat":
            return np.sqrt(self.track_pt_resolution ** 2
                           + (self.track_pt_resolution_slope * pt) ** 2)
        if eta is None:
            raise ValueError("the eta_regions track resolution needs eta")
        region = np.searchsorted(np.asarray(self.track_res_eta_edges), np.abs(eta),
                                 side="left")
        region = np.minimum(region, len(self.track_res_eta_edges))
        apid = np.abs(np.asarray(pid)) if pid is not None else np.zeros(pt.shape, np.int64)
        const = np.array([self.track_res_hadron, self.track_res_electron, self.track_res_muon])
        slope = np.array([self.track_res_slope_hadron, self.track_res_slope_electron,
                          self.track_res_slope_muon])
        species = np.where(apid == PID_ELECTRON, 1, np.where(apid == PID_MUON, 2, 0))
        return np.sqrt(const[species, region] ** 2 + (slope[species, region] * pt) ** 2)

    def calo_sigma(self, energy: np.ndarray, abs_eta: np.ndarray, em: bool) -> np.ndarray:
        """Absolute energy resolution (GeV) of the EM (``em``) or HAD part of a tower."""
        energy = np.asarray(energy, dtype=np.float64)
        abs_eta = np.abs(np.asarray(abs_eta, dtype=np.float64))
        if em:
            forward = abs_eta > self.ecal_forward_eta_min
            c = np.where(forward, self.forward_em_constant, self.ecal_constant)
            s = np.where(forward, self.forward_em_stochastic, self.ecal_stochastic)
            n = np.where(forward, 0.0, self.ecal_noise)
            factor = 1.0
            if self.ecal_eta_dependence:
                factor = np.where(abs_eta <= 1.5, 1.0 + 0.64 * abs_eta ** 2,
                                  2.16 + 5.6 * (abs_eta - 2.0) ** 2)
                factor = np.where(forward, 1.0, factor)
        else:
            forward = abs_eta > self.forward_eta_min
            c = np.where(forward, self.forward_had_constant, self.hcal_constant)
            s = np.where(forward, self.forward_had_stochastic, self.hcal_stochastic)
            n = 0.0
            factor = 1.0
        return factor * np.sqrt((c * energy) ** 2 + s * s * np.maximum(energy, 0.0) + n * n)


_TUPLE_FIELDS = ("track_eff_hadron", "track_eff_electron", "track_eff_muon", "tower_eta_edges",
                 "tower_phi_bins", "ecal_tower_eta_edges", "ecal_tower_phi_bins",
                 "track_res_eta_edges", "track_res_hadron", "track_res_slope_hadron",
                 "track_res_electron", "track_res_slope_electron", "track_res_muon",
                 "track_res_slope_muon")

#: Named detector presets: ``delphes_cms`` (the defaults: the Delphes CMS pile-up card that
#: made the public dataset) and ``optimistic`` (the suite's first, easier detector: one
#: combined tower grid, flat and small resolutions, 0.5 GeV tracks, no noise cut).
DETECTOR_PRESETS = ("delphes_cms", "optimistic")
_OPTIMISTIC = dict(
    track_pt_min=0.5, track_resolution="flat", track_pt_lognormal=False,
    track_eta_resolution=0.001, track_phi_resolution=0.001, fake_track_rate=0.01,
    separate_calorimeters=False, tower_eta_edges=OPTIMISTIC_TOWER_ETA_EDGES,
    tower_phi_bins=OPTIMISTIC_TOWER_PHI_BINS, ecal_forward_eta_min=3.0,
    ecal_eta_dependence=False, ecal_stochastic=0.05, ecal_constant=0.007, ecal_noise=0.25,
    hcal_stochastic=1.0, calo_significance_min=0.0, cand_significance=1.0)
#: Field values of the project's own target conventions (``--data.targets=project``).
PROJECT_TARGETS = dict(target_convention="project", target_min_e_photon=1.0,
                       target_min_e_neutral_hadron=5.0)
_OPTIMISTIC.update(PROJECT_TARGETS)


def detector_preset(name: str, **overrides) -> DetectorConfig:
    """The named preset (see :data:`DETECTOR_PRESETS`) with field ``overrides``."""
    if name not in DETECTOR_PRESETS:
        raise ValueError(f"unknown detector preset {name!r}; known: "
                         f"{', '.join(DETECTOR_PRESETS)}")
    values = dict(_OPTIMISTIC) if name == "optimistic" else {}
    values.update(overrides)
    return DetectorConfig(**values)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) \
        and math.isfinite(v)


# ---------------------------------------------------------------------------- tower grid
class TowerGrid:
    """Eta-phi tower cells: rings ordered from -eta_max to +eta_max, phi cells inside a ring."""

    def __init__(self, eta_edges: tuple, phi_bins: tuple):
        self.abs_edges = np.asarray(eta_edges, dtype=np.float64)
        k = len(self.abs_edges) - 1
        self.n_abs_rings = k
        nphi = np.asarray(phi_bins, dtype=np.int64)
        ring_abs = np.concatenate([np.arange(k)[::-1], np.arange(k)])
        positive = np.concatenate([np.zeros(k, bool), np.ones(k, bool)])
        self.ring_nphi = nphi[ring_abs]
        self.offset = np.concatenate([[0], np.cumsum(self.ring_nphi)])
        self.n_towers = int(self.offset[-1])
        lo, hi = self.abs_edges[ring_abs], self.abs_edges[ring_abs + 1]
        ring_eta_lo = np.where(positive, lo, -hi)
        ring_eta_hi = np.where(positive, hi, -lo)
        ring = np.repeat(np.arange(2 * k), self.ring_nphi)
        phibin = np.arange(self.n_towers) - self.offset[ring]
        dphi = 2.0 * np.pi / self.ring_nphi[ring]
        self.eta_lo, self.eta_hi = ring_eta_lo[ring], ring_eta_hi[ring]
        self.phi_lo = -np.pi + phibin * dphi
        self.phi_hi = self.phi_lo + dphi
        self.eta_center = 0.5 * (self.eta_lo + self.eta_hi)
        self.phi_center = 0.5 * (self.phi_lo + self.phi_hi)
        self.eta_max = float(self.abs_edges[-1])

    def locate(self, eta: np.ndarray, phi: np.ndarray) -> np.ndarray:
        """Tower index of each (eta, phi), -1 outside the coverage."""
        eta = np.asarray(eta, dtype=np.float64)
        phi = np.asarray(phi, dtype=np.float64)
        a = np.abs(eta)
        inside = a < self.eta_max
        k = np.clip(np.searchsorted(self.abs_edges, a, side="right") - 1, 0,
                    self.n_abs_rings - 1)
        ring = np.where(eta >= 0, self.n_abs_rings + k, self.n_abs_rings - 1 - k)
        nphi = self.ring_nphi[ring]
        cell = np.floor((phi + np.pi) / (2.0 * np.pi) * nphi).astype(np.int64) % nphi
        return np.where(inside, self.offset[ring] + cell, -1)


@functools.lru_cache(maxsize=8)
def tower_grid(eta_edges: tuple, phi_bins: tuple) -> TowerGrid:
    return TowerGrid(eta_edges, phi_bins)


# ---------------------------------------------------------------------------- propagation
def propagate_to_calorimeter(pt, eta, phi, charge, cfg: DetectorConfig):
    """Impact (eta, phi) on the calorimeter surface seen from the origin, and whether it is
    reached (False for loopers). Neutral particles (or ``bz`` = 0) fly straight."""
    pt = np.asarray(pt, dtype=np.float64)
    eta = np.asarray(eta, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    charge = np.asarray(charge)
    eta_c, phi_c = eta.copy(), phi.copy()
    reaches = np.ones(pt.shape, dtype=bool)
    bend = (charge != 0) & (cfg.bz > 0)
    if not bend.any():
        return eta_c, phi_c, reaches
    rad, half = cfg.calo_radius, cfg.calo_half_length
    q = np.sign(charge[bend]).astype(np.float64)
    rc = np.maximum(pt[bend], 1e-9) / (C_LIGHT * cfg.bz * np.abs(charge[bend]))
    s = np.sinh(eta[bend])
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        alpha_b = 2.0 * np.arcsin(np.minimum(rad / (2.0 * rc), 1.0))
        z_b = rc * alpha_b * s
        barrel = (2.0 * rc >= rad) & (np.abs(z_b) <= half)
        alpha_e = half / np.abs(s) / rc
        alpha_e = np.where(np.isfinite(alpha_e), alpha_e, np.inf)
    loop = ~barrel & (alpha_e > 2.0 * np.pi)
    alpha = np.where(barrel, alpha_b, np.where(loop, 0.0, alpha_e))
    r = 2.0 * rc * np.sin(0.5 * alpha)
    z = np.where(barrel, z_b, np.sign(s) * half)
    pos_phi = phi[bend] - q * 0.5 * alpha
    x, y = r * np.cos(pos_phi), r * np.sin(pos_phi)
    out_phi = np.arctan2(y, x)
    out_eta = np.arcsinh(z / np.maximum(np.abs(r), 1e-6))
    eta_c[bend] = np.where(loop, eta[bend], out_eta)
    phi_c[bend] = np.where(loop, phi[bend], out_phi)
    reaches[bend] = ~loop
    return eta_c, phi_c, reaches


# ---------------------------------------------------------------------------- simulation
@dataclasses.dataclass
class SimulationResult:
    """The event and the bookkeeping behind it (used by tests and statistics).

    Per track row: ``track_particle`` (particle index, -1 for a fake), ``track_gen_pt``.
    Per tower row: ``tower_id`` (cell index in its layer's grid) and ``tower_layer`` (0 = ECAL
    or the combined grid, 1 = HCAL); ``occupied`` / ``occupied_layer`` likewise per occupied
    cell. Per particle: ``particle_tower`` (tower receiving its deposit,
    -1 none), ``deposit_em`` / ``deposit_had`` (true deposited energy), ``particle_element``
    (row whose ygen target includes the particle, -1 none). Per occupied tower (sorted ids
    ``occupied``): ``true_em`` / ``true_had`` (exact sums of deposits) and ``meas_em`` /
    ``meas_had`` (after smearing and thresholds).
    """

    event: S.Event
    n_tracks: int
    track_particle: np.ndarray
    track_gen_pt: np.ndarray
    tower_id: np.ndarray
    particle_tower: np.ndarray
    deposit_em: np.ndarray
    deposit_had: np.ndarray
    particle_element: np.ndarray
    occupied: np.ndarray
    true_em: np.ndarray
    true_had: np.ndarray
    meas_em: np.ndarray
    meas_had: np.ndarray
    tower_layer: np.ndarray | None = None
    occupied_layer: np.ndarray | None = None


def gen_classes(pid: np.ndarray, charge: np.ndarray) -> np.ndarray:
    """Target class of each generator particle by |pid| and charge."""
    apid = np.abs(pid)
    cls = np.where(charge != 0, S.CLS_CH_HAD, S.CLS_N_HAD)
    cls = np.where((apid == PID_PHOTON) | (apid == _PI0), S.CLS_PHOTON, cls)
    cls = np.where(apid == PID_ELECTRON, S.CLS_ELECTRON, cls)
    cls = np.where(apid == PID_MUON, S.CLS_MUON, cls)
    return cls.astype(np.int64)


def track_efficiency(pid, pt, eta, cfg: DetectorConfig) -> np.ndarray:
    apid = np.abs(np.asarray(pid))
    table = np.array([cfg.track_eff_hadron, cfg.track_eff_electron, cfg.track_eff_muon])
    species = np.where(apid == PID_ELECTRON, 1, np.where(apid == PID_MUON, 2, 0))
    col = np.where(np.abs(eta) <= cfg.track_eff_barrel_eta_max, 0, 2) + \
        (np.asarray(pt) > cfg.track_eff_low_pt_max).astype(np.int64)
    return table[species, col]


def _lognormal_smear(true: np.ndarray, sigma: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Log-normal with mean ``true`` and standard deviation ``sigma`` (exact where sigma=0)."""
    out = true.copy()
    ok = (true > 0) & (sigma > 0)
    if ok.any():
        t, sg = true[ok], sigma[ok]
        v = np.log1p((sg / t) ** 2)
        out[ok] = np.exp(np.log(t) - 0.5 * v + np.sqrt(v) * z[ok])
    return out


def _calo_fractions(pid, charge, energy, cfg: DetectorConfig):
    """(EM, HAD) energy each particle deposits if it reaches the calorimeter."""
    apid = np.abs(pid)
    em_like = (apid == PID_ELECTRON) | (apid == PID_PHOTON) | (apid == _PI0)
    muon = apid == PID_MUON
    v0 = (apid == _V0_PIDS[0]) | (apid == _V0_PIDS[1])
    f_em = np.where(v0, _V0_EM_FRACTION, cfg.hadron_em_fraction)
    f_em = np.where(em_like, 1.0, f_em)
    em = np.where(muon, 0.0, energy * f_em)
    had = np.where(muon, np.minimum(energy, cfg.muon_mip_energy), energy * (1.0 - f_em))
    return em, had


def _wrap(phi: np.ndarray) -> np.ndarray:
    return np.arctan2(np.sin(phi), np.cos(phi))


def simulate(particles: GenParticles, rng: np.random.Generator, cfg: DetectorConfig) -> S.Event:
    """Detector response to ``particles``: the event (X, ygen, ycand) as float32 arrays."""
    return simulate_detailed(particles, rng, cfg).event


def simulate_detailed(particles: GenParticles, rng: np.random.Generator,
                      cfg: DetectorConfig) -> SimulationResult:
    """:func:`simulate` plus the bookkeeping (track/particle links, per-tower deposits)."""
    if not isinstance(particles, GenParticles):
        raise TypeError(f"particles must be GenParticles, got {type(particles).__name__}")
    if not isinstance(cfg, DetectorConfig):
        raise TypeError(f"cfg must be a DetectorConfig, got {type(cfg).__name__}")
    grid = tower_grid(cfg.tower_eta_edges, cfg.tower_phi_bins)
    n = len(particles)
    pid, charge = particles.pid, particles.charge.astype(np.int64)
    pt, eta, phi, energy = particles.pt, particles.eta, particles.phi, particles.e
    is_pu = particles.is_pileup
    cls = gen_classes(pid, charge)
    is_target = np.ones(n, bool) if cfg.pileup_targets else ~is_pu

    # ---------------- tracker
    in_trk = (charge != 0) & (np.abs(eta) < cfg.tracker_eta_max) & (pt >= cfg.track_pt_min)
    eff = track_efficiency(pid, pt, eta, cfg)
    tracked = in_trk & (rng.random(n) < eff)
    z = rng.standard_normal((3, n))
    ti = np.flatnonzero(tracked)
    t_sig = cfg.track_pt_sigma(pt[ti], eta[ti], pid[ti])
    if cfg.track_pt_lognormal:
        t_pt = np.maximum(_lognormal_smear(pt[ti], t_sig * pt[ti], z[0, ti]), 1e-3)
    else:
        t_pt = np.maximum(pt[ti] * (1.0 + t_sig * z[0, ti]), 1e-3)
    t_eta = eta[ti] + cfg.track_eta_resolution * z[1, ti]
    t_phi = _wrap(phi[ti] + cfg.track_phi_resolution * z[2, ti])
    t_q = charge[ti]
    n_fake = int(rng.poisson(cfg.fake_track_rate * ti.size)) if cfg.fake_track_rate > 0 else 0
    if n_fake:
        f_pt = cfg.track_pt_min + rng.exponential(1.0, n_fake)
        f_eta = rng.uniform(-cfg.tracker_eta_max, cfg.tracker_eta_max, n_fake)
        f_phi = rng.uniform(-np.pi, np.pi, n_fake)
        f_q = np.where(rng.random(n_fake) < 0.5, -1, 1)
        t_pt, t_eta = np.concatenate([t_pt, f_pt]), np.concatenate([t_eta, f_eta])
        t_phi, t_q = np.concatenate([t_phi, f_phi]), np.concatenate([t_q, f_q])
        t_sig = np.concatenate([t_sig, cfg.track_pt_sigma(f_pt, f_eta)])
    t_part = np.concatenate([ti, np.full(n_fake, -1)])
    order = np.argsort(-t_pt, kind="stable")
    t_pt, t_eta, t_phi, t_q, t_part, t_sig = (
        a[order] for a in (t_pt, t_eta, t_phi, t_q, t_part, t_sig))
    n_trk = t_pt.size
    t_eta_out, t_phi_out, t_reach = propagate_to_calorimeter(t_pt, t_eta, t_phi, t_q, cfg)
    real = t_part >= 0
    t_apid = np.where(real, np.abs(pid[np.maximum(t_part, 0)]), 0) if n_trk else np.zeros(0, int)
    t_mu = (t_apid == PID_MUON).astype(np.float64)
    t_ele = (t_apid == PID_ELECTRON).astype(np.float64)
    t_p = t_pt * np.cosh(t_eta)

    x_trk = np.zeros((n_trk, S.NUM_FEATURES))
    x_trk[:, S.F_TYPE] = S.ELEM_TRACK
    x_trk[:, S.F_PT] = t_pt
    x_trk[:, S.F_ETA] = t_eta
    x_trk[:, S.F_SIN_PHI] = np.sin(t_phi)
    x_trk[:, S.F_COS_PHI] = np.cos(t_phi)
    x_trk[:, S.F_E] = t_p
    x_trk[:, S.F_ETA_OUTER] = t_eta_out
    x_trk[:, S.F_SIN_PHI_OUTER] = np.sin(t_phi_out)
    x_trk[:, S.F_COS_PHI_OUTER] = np.cos(t_phi_out)
    x_trk[:, S.F_CHARGE] = t_q
    x_trk[:, S.F_IS_MU] = t_mu
    x_trk[:, S.F_IS_ELE] = t_ele

    ygen_trk = np.zeros((n_trk, S.NUM_TARGETS))
    gi = t_part[real]
    keep = is_target[gi]
    rows = np.flatnonzero(real)[keep]
    gi = gi[keep]
    ygen_trk[rows, S.T_CLS] = cls[gi]
    # reference: the sign of the PDG id (+1 for e- and mu-); project: the physical charge
    ygen_trk[rows, S.T_CHARGE] = np.sign(pid[gi]) if cfg.target_convention == "reference" \
        else charge[gi]
    ygen_trk[rows, S.T_PT] = pt[gi]
    ygen_trk[rows, S.T_ETA] = eta[gi]
    ygen_trk[rows, S.T_SIN_PHI] = np.sin(phi[gi])
    ygen_trk[rows, S.T_COS_PHI] = np.cos(phi[gi])
    ygen_trk[rows, S.T_E] = energy[gi]
    particle_element = np.full(n, -1, dtype=np.int64)
    particle_element[gi] = rows

    ycand_trk = np.zeros((n_trk, S.NUM_TARGETS))
    ycand_trk[:, S.T_CLS] = np.where(t_mu > 0, S.CLS_MUON,
                                     np.where(t_ele > 0, S.CLS_ELECTRON, S.CLS_CH_HAD))
    ycand_trk[:, S.T_CHARGE] = t_q
    ycand_trk[:, S.T_PT] = t_pt
    ycand_trk[:, S.T_ETA] = t_eta
    ycand_trk[:, S.T_SIN_PHI] = np.sin(t_phi)
    ycand_trk[:, S.T_COS_PHI] = np.cos(t_phi)

    # ---------------- calorimeter
    eta_c, phi_c, reaches = propagate_to_calorimeter(pt, eta, phi, charge, cfg)
    dep_em, dep_had = _calo_fractions(pid, charge, energy, cfg)
    t_exp_em = np.where(t_ele > 0, t_p, np.where(t_mu > 0, 0.0, cfg.hadron_em_fraction * t_p))
    t_exp_had = np.where(t_ele > 0, 0.0,
                         np.where(t_mu > 0, np.minimum(t_p, cfg.muon_mip_energy),
                                  (1.0 - cfg.hadron_em_fraction) * t_p))
    # calorimeter-only particles (no track, not muons) are tower targets
    calo_only = ~tracked & (cls != S.CLS_MUON) & is_target
    em_like = (cls == S.CLS_PHOTON) | (cls == S.CLS_ELECTRON)
    if cfg.separate_calorimeters:
        ecal = tower_grid(cfg.ecal_tower_eta_edges, cfg.ecal_tower_phi_bins)
        layers = [("ecal", ecal, dep_em, np.zeros(n), calo_only & em_like,
                   t_exp_em, np.zeros(n_trk)),
                  ("hcal", grid, np.zeros(n), dep_had, calo_only & ~em_like,
                   np.zeros(n_trk), t_exp_had)]
    else:
        layers = [("combined", grid, dep_em, dep_had, calo_only, t_exp_em, t_exp_had)]
    x_parts, ygen_parts, ycand_parts = [], [], []
    particle_tower = np.full(n, -1, dtype=np.int64)
    book = {k: [] for k in ("tower_id", "tower_layer", "occupied", "occupied_layer", "true_em",
                            "true_had", "meas_em", "meas_had")}
    deposit_em, deposit_had = np.zeros(n), np.zeros(n)
    row0 = n_trk
    for layer_index, (kind, lgrid, l_em, l_had, home, exp_em_t, exp_had_t) in enumerate(layers):
        cell = np.where(reaches, lgrid.locate(eta_c, phi_c), -1)
        deposits = (cell >= 0) & ((l_em > 0) | (l_had > 0))
        cell = np.where(deposits, cell, -1)
        deposit_em += np.where(deposits, l_em, 0.0)
        deposit_had += np.where(deposits, l_had, 0.0)
        home_here = home & deposits
        # the cell a particle deposits in (its own layer's when it deposits in both)
        own_layer = (layer_index == 0) == (em_like | (len(layers) == 1))
        mark = deposits & (own_layer | (particle_tower < 0))
        particle_tower[mark] = cell[mark]
        out = _calo_layer(kind, lgrid, cell, deposits, np.where(deposits, l_em, 0.0),
                          np.where(deposits, l_had, 0.0), home_here, particles, cls,
                          row0, t_eta_out, t_phi_out, t_reach, t_sig * t_p, exp_em_t, exp_had_t,
                          rng, cfg)
        x_parts.append(out["x"])
        ygen_parts.append(out["ygen"])
        ycand_parts.append(out["ycand"])
        particle_element[out["particle_index"]] = out["particle_row"]
        row0 += out["x"].shape[0]
        for key in ("true_em", "true_had", "meas_em", "meas_had", "occupied"):
            book[key].append(out[key])
        book["tower_id"].append(out["tower_id"])
        book["tower_layer"].append(np.full(out["tower_id"].size, layer_index, np.int64))
        book["occupied_layer"].append(np.full(out["occupied"].size, layer_index, np.int64))

    f32 = S.FEATURE_DTYPE
    event = S.Event(np.concatenate([x_trk, *x_parts]).astype(f32),
                    np.concatenate([ygen_trk, *ygen_parts]).astype(f32),
                    np.concatenate([ycand_trk, *ycand_parts]).astype(f32))
    cat = {k: np.concatenate(v) for k, v in book.items()}
    return SimulationResult(
        event=event, n_tracks=n_trk, track_particle=t_part,
        track_gen_pt=np.where(real, pt[np.maximum(t_part, 0)] if n else 0.0, 0.0),
        tower_id=cat["tower_id"], particle_tower=particle_tower, deposit_em=deposit_em,
        deposit_had=deposit_had, particle_element=particle_element, occupied=cat["occupied"],
        true_em=cat["true_em"], true_had=cat["true_had"], meas_em=cat["meas_em"],
        meas_had=cat["meas_had"], tower_layer=cat["tower_layer"],
        occupied_layer=cat["occupied_layer"])


def _calo_layer(kind: str, grid: TowerGrid, cell, deposits, dep_em, dep_had, home, particles,
                cls, row0: int, t_eta_out, t_phi_out, t_reach, t_sigma_p, t_exp_em, t_exp_had,
                rng: np.random.Generator, cfg: DetectorConfig) -> dict:
    """Towers of one calorimeter layer (``combined``, ``ecal`` or ``hcal``): elements, targets.

    ``cell`` is each particle's cell in this layer (-1 none), ``dep_em`` / ``dep_had`` what it
    deposits here, ``home`` whether it is a calorimeter-only target of this layer; ``t_*`` are
    per track (impact point, momentum resolution in GeV, expected deposits here).
    """
    energy = particles.e
    occupied, inv = np.unique(cell[deposits], return_inverse=True)
    n_occ = occupied.size
    true_em = np.bincount(inv, weights=dep_em[deposits], minlength=n_occ)
    true_had = np.bincount(inv, weights=dep_had[deposits], minlength=n_occ)
    zc = rng.standard_normal((2, n_occ))
    uc = rng.random((2, n_occ))
    occ_abs_eta = np.abs(grid.eta_center[occupied])
    sig_em = cfg.calo_sigma(true_em, occ_abs_eta, em=True)
    sig_had = cfg.calo_sigma(true_had, occ_abs_eta, em=False)
    meas_em = _lognormal_smear(true_em, sig_em, zc[0])
    meas_had = _lognormal_smear(true_had, sig_had, zc[1])
    # energy threshold and noise cut (Delphes: E < EnergyMin or E < significance * sigma -> 0)
    sig_cut = cfg.calo_significance_min
    meas_em = np.where((meas_em >= cfg.ecal_energy_min) & (meas_em >= sig_cut * sig_em),
                       meas_em, 0.0)
    meas_had = np.where((meas_had >= cfg.hcal_energy_min) & (meas_had >= sig_cut * sig_had),
                        meas_had, 0.0)
    meas_e = meas_em + meas_had
    alive = meas_e > 0
    if cfg.tower_position_uniform:
        tw_eta = grid.eta_lo[occupied] + uc[0] * (grid.eta_hi[occupied] - grid.eta_lo[occupied])
        tw_phi = grid.phi_lo[occupied] + uc[1] * (grid.phi_hi[occupied] - grid.phi_lo[occupied])
    else:
        tw_eta, tw_phi = grid.eta_center[occupied], grid.phi_center[occupied]
    tw_phi = _wrap(tw_phi)
    el = np.flatnonzero(alive)           # occupied-cell positions that become elements
    n_tw = el.size
    row_of_occ = np.full(n_occ, -1, dtype=np.int64)
    row_of_occ[el] = row0 + np.arange(n_tw)

    x_tw = np.zeros((n_tw, S.NUM_FEATURES))
    x_tw[:, S.F_TYPE] = S.ELEM_TOWER
    x_tw[:, S.F_PT] = meas_e[el] / np.cosh(tw_eta[el])
    x_tw[:, S.F_ETA] = tw_eta[el]
    x_tw[:, S.F_SIN_PHI] = np.sin(tw_phi[el])
    x_tw[:, S.F_COS_PHI] = np.cos(tw_phi[el])
    x_tw[:, S.F_E] = meas_e[el]
    x_tw[:, S.F_E_EM] = meas_em[el]
    x_tw[:, S.F_E_HAD] = meas_had[el]

    # ygen: the summed four-vector of this layer's calorimeter-only particles in the cell
    contrib = home[deposits]
    c_occ = inv[contrib]
    c_idx = np.flatnonzero(deposits)[contrib]
    c_cls_ = cls[c_idx]
    c_em_like = (c_cls_ == S.CLS_PHOTON) | (c_cls_ == S.CLS_ELECTRON)

    def per_tower(w):
        return np.bincount(c_occ, weights=w, minlength=n_occ)

    spx, spy = per_tower(particles.px[c_idx]), per_tower(particles.py[c_idx])
    spz, se = per_tower(particles.pz[c_idx]), per_tower(energy[c_idx])
    spt = np.hypot(spx, spy)
    s_eta = np.arcsinh(spz / np.maximum(spt, 1e-9))
    n_contrib = np.bincount(c_occ, minlength=n_occ)
    if cfg.target_convention == "reference":
        # the ntuplizer: the category with the most energy among the untracked particles
        # (neutral hadron, charged hadron, photon, electron) names the target
        apid = np.abs(particles.pid[c_idx])
        category = np.where(apid == PID_ELECTRON, 3, np.where(
            c_cls_ == S.CLS_PHOTON, 2, np.where(particles.charge[c_idx] != 0, 1, 0)))
        sums = np.stack([per_tower(np.where(category == k, energy[c_idx], 0.0))
                         for k in range(4)])
        g_cls = np.array([S.CLS_N_HAD, S.CLS_CH_HAD, S.CLS_PHOTON, S.CLS_ELECTRON])[
            np.argmax(sums, axis=0)]
        # outside the tracker an untracked charged hadron is a neutral hadron
        g_cls = np.where((g_cls == S.CLS_CH_HAD) & (np.abs(s_eta) > cfg.tracker_eta_max),
                         S.CLS_N_HAD, g_cls)
        g_charge = np.isin(g_cls, (S.CLS_CH_HAD, S.CLS_ELECTRON)).astype(np.float64)
    else:
        e_emtype = per_tower(np.where(c_em_like, energy[c_idx], 0.0))
        e_hadtype = per_tower(np.where(c_em_like, 0.0, energy[c_idx]))
        g_cls = np.where(e_emtype > e_hadtype, S.CLS_PHOTON, S.CLS_N_HAD)
        g_charge = np.zeros(n_occ)
    g_min = np.where(g_cls == S.CLS_PHOTON, cfg.target_min_e_photon,
                     np.where(g_cls == S.CLS_N_HAD, cfg.target_min_e_neutral_hadron, 0.0))
    g_ok = (n_contrib > 0) & (se >= g_min) & (se > 0)
    ygen_tw = np.zeros((n_tw, S.NUM_TARGETS))
    ok = g_ok[el]
    g_pt = spt[el]
    ygen_tw[:, S.T_CLS] = np.where(ok, g_cls[el], S.CLS_NONE)
    ygen_tw[:, S.T_CHARGE] = np.where(ok, g_charge[el], 0.0)
    ygen_tw[:, S.T_PT] = np.where(ok, g_pt, 0.0)
    ygen_tw[:, S.T_ETA] = np.where(ok, s_eta[el], 0.0)
    g_phi = np.arctan2(spy[el], spx[el])
    ygen_tw[:, S.T_SIN_PHI] = np.where(ok, np.sin(g_phi), 0.0)
    ygen_tw[:, S.T_COS_PHI] = np.where(ok, np.cos(g_phi), 0.0)
    ygen_tw[:, S.T_E] = np.where(ok, se[el], 0.0)
    c_row = row_of_occ[c_occ]
    c_good = (c_row >= 0) & g_ok[c_occ]

    # ycand: subtract the expected deposits of the tracks pointing into the cell; a neutral
    # remainder is kept if significant against the track and calorimeter resolutions combined
    t_cell = np.where(t_reach, grid.locate(t_eta_out, t_phi_out), -1)
    pos = np.searchsorted(occupied, t_cell)
    pos_c = np.minimum(pos, max(n_occ - 1, 0))
    t_hit = (t_cell >= 0) & (n_occ > 0)
    if n_occ:
        t_hit &= occupied[pos_c] == t_cell
    exp_em = np.bincount(pos_c[t_hit], weights=t_exp_em[t_hit], minlength=n_occ)
    exp_had = np.bincount(pos_c[t_hit], weights=t_exp_had[t_hit], minlength=n_occ)
    if kind == "combined":
        rem_em = meas_em - exp_em
        rem_had = meas_had - exp_had
        sig_em = cfg.cand_significance * cfg.calo_sigma(exp_em, occ_abs_eta, em=True)
        sig_had = cfg.cand_significance * cfg.calo_sigma(exp_had, occ_abs_eta, em=False)
        rem_em = np.where((exp_em > 0) & (rem_em <= sig_em), 0.0, np.maximum(rem_em, 0.0))
        rem_had = np.where((exp_had > 0) & (rem_had <= sig_had), 0.0,
                           np.maximum(rem_had, 0.0))
        c_e = rem_em + rem_had
        c_cls = np.where(rem_em >= rem_had, S.CLS_PHOTON, S.CLS_N_HAD)
    else:
        has_trk = (t_exp_em if kind == "ecal" else t_exp_had) > 0
        trk_var = np.bincount(pos_c[t_hit & has_trk],
                              weights=(t_sigma_p ** 2)[t_hit & has_trk], minlength=n_occ)
        meas = meas_em if kind == "ecal" else meas_had
        expected = exp_em if kind == "ecal" else exp_had
        calo_sig = sig_em if kind == "ecal" else sig_had
        neutral = np.maximum(meas - expected, 0.0)
        significant = neutral > cfg.cand_significance * np.sqrt(trk_var + calo_sig ** 2)
        c_e = np.where(significant, neutral, 0.0)
        c_cls = np.full(n_occ, S.CLS_PHOTON if kind == "ecal" else S.CLS_N_HAD)
    c_min = np.where(c_cls == S.CLS_PHOTON, cfg.cand_min_e_photon, cfg.cand_min_e_neutral_hadron)
    c_ok = (c_e > 0) & (c_e >= c_min)
    ycand_tw = np.zeros((n_tw, S.NUM_TARGETS))
    cok = c_ok[el]
    ycand_tw[:, S.T_CLS] = np.where(cok, c_cls[el], S.CLS_NONE)
    ycand_tw[:, S.T_ETA] = np.where(cok, tw_eta[el], 0.0)
    ycand_tw[:, S.T_SIN_PHI] = np.where(cok, np.sin(tw_phi[el]), 0.0)
    ycand_tw[:, S.T_COS_PHI] = np.where(cok, np.cos(tw_phi[el]), 0.0)
    ycand_tw[:, S.T_E] = np.where(cok, c_e[el], 0.0)
    return {"x": x_tw, "ygen": ygen_tw, "ycand": ycand_tw, "particle_index": c_idx[c_good],
            "particle_row": c_row[c_good], "tower_id": occupied[el], "occupied": occupied,
            "true_em": true_em, "true_had": true_had, "meas_em": meas_em, "meas_had": meas_had}
