"""Pure-numpy particle gun: jet-like clusters of particles of every class, no Pythia needed.

Each event has ``1 + Poisson(n_jets_mean - 1)`` jets with a falling pT spectrum
(a power law above ``jet_pt_min``), each fragmenting into ``2 + Poisson(k ln(pT/5 GeV))``
particles whose momentum fractions follow a Dirichlet distribution and whose directions spread
around the jet axis (softer particles spread more). On top come a few isolated prompt
particles (electrons, muons, photons), a soft isotropic "underlying event", and, for
``pileup > 0``, ``Poisson(pileup)`` soft interactions of the same kind flagged as pileup.
Particles then go through the same detector simulation as Pythia events.

It is fast (about 0.3 ms per event, plus about 0.8 ms for the detector simulation, per core)
and deterministic for a given ``numpy.random.Generator`` state, which makes it the event source
of model and pipeline unit tests. Default settings give 40-180 elements per event (mean ~90).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mlpf_tf.data.particles import MASSES, GenParticles


@dataclass(frozen=True)
class GunConfig:
    """Shape of the particle-gun events."""

    n_jets_mean: float = 4.0          # mean number of jets (at least one)
    jet_pt_min: float = 20.0          # GeV
    jet_pt_max: float = 500.0         # GeV
    jet_pt_power: float = 3.0         # dN/dpT ~ pT^-power
    jet_eta_max: float = 3.0
    multiplicity_slope: float = 4.0   # mean constituents = 2 + slope * ln(pT / 5 GeV)
    dirichlet_alpha: float = 0.6      # momentum-sharing concentration inside a jet
    jet_width: float = 0.08           # angular spread of a constituent carrying 20 GeV
    prompt_mean: float = 0.6          # mean number of isolated e / mu / photon
    prompt_pt_range: tuple = (10.0, 100.0)
    soft_mean: float = 60.0           # mean soft particles of the underlying event
    pileup_soft_mean: float = 40.0    # mean visible particles per pileup interaction
    soft_pt_mean: float = 0.7         # GeV, exponential
    soft_eta_max: float = 5.0
    # Jet composition by particle count: charged hadron, photon, neutral hadron, e, mu.
    jet_fractions: tuple = (0.60, 0.27, 0.10, 0.015, 0.015)
    soft_fractions: tuple = (0.62, 0.28, 0.10, 0.0, 0.0)

    def __post_init__(self) -> None:
        for name in ("n_jets_mean", "jet_pt_min", "jet_pt_power", "multiplicity_slope",
                     "dirichlet_alpha", "jet_width", "soft_pt_mean"):
            if not getattr(self, name) > 0:
                raise ValueError(f"GunConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if self.n_jets_mean < 1:
            raise ValueError(f"GunConfig.n_jets_mean must be >= 1, got {self.n_jets_mean!r}")
        if self.jet_pt_max <= self.jet_pt_min:
            raise ValueError(f"GunConfig.jet_pt_max must exceed jet_pt_min, got "
                             f"{self.jet_pt_max!r}")
        for name in ("jet_fractions", "soft_fractions"):
            fr = np.asarray(getattr(self, name), dtype=float)
            if fr.shape != (5,) or (fr < 0).any() or not np.isclose(fr.sum(), 1.0):
                raise ValueError(f"GunConfig.{name} must be 5 non-negative fractions summing to "
                                 f"1, got {getattr(self, name)!r}")


# Species of each gun class (0 charged hadron, 1 photon, 2 neutral hadron, 3 electron,
# 4 muon): rows of (|pid|, probability inside the class, charge sign relative to the pid sign).
_SPECIES = {
    0: ((211, 0.80, 1), (321, 0.12, 1), (2212, 0.08, 1)),
    1: ((22, 1.0, 0),),
    2: ((130, 0.5, 0), (2112, 0.5, 0)),
    3: ((11, 1.0, -1),),   # e- is +11
    4: ((13, 1.0, -1),),
}
_ROWS = [row for c in range(5) for row in _SPECIES[c]]
_APID = np.array([r[0] for r in _ROWS])
_QSIGN = np.array([r[2] for r in _ROWS])
_MASS = np.array([MASSES[r[0]] for r in _ROWS])
_SIGNED = ~np.isin(_APID, (22, 130))  # species with a distinct antiparticle
_START = np.cumsum([0] + [len(_SPECIES[c]) for c in range(4)])
_CDF = np.ones((5, 3)) * 2.0
for _c in range(5):
    _p = np.cumsum([r[1] for r in _SPECIES[_c]])
    _CDF[_c, :len(_p) - 1] = _p[:-1]


def _species(cls: np.ndarray, rng: np.random.Generator):
    """Signed PDG ids, charges and masses for particles of gun class index ``cls`` (0..4)."""
    u = rng.random(cls.size)
    sign = np.where(rng.random(cls.size) < 0.5, -1, 1)
    row = _START[cls] + (u[:, None] > _CDF[cls]).sum(axis=1)
    pid = np.where(_SIGNED[row], sign * _APID[row], _APID[row])
    return pid.astype(np.int32), (sign * _QSIGN[row]).astype(np.int8), _MASS[row]


def _power_law(rng, n, lo, hi, power):
    """Samples of dN/dx ~ x^-power on [lo, hi] (power != 1)."""
    u = rng.random(n)
    a = 1.0 - power
    return (lo ** a + u * (hi ** a - lo ** a)) ** (1.0 / a)


def _soft(rng, n, cfg: GunConfig):
    cls = rng.choice(5, size=n, p=np.asarray(cfg.soft_fractions))
    pt = rng.exponential(cfg.soft_pt_mean, n) + 0.05
    eta = rng.uniform(-cfg.soft_eta_max, cfg.soft_eta_max, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    return cls, pt, eta, phi


def _jets(rng, cfg: GunConfig):
    n_jets = 1 + rng.poisson(cfg.n_jets_mean - 1.0)
    jpt = _power_law(rng, n_jets, cfg.jet_pt_min, cfg.jet_pt_max, cfg.jet_pt_power)
    jeta = rng.uniform(-cfg.jet_eta_max, cfg.jet_eta_max, n_jets)
    jphi = rng.uniform(-np.pi, np.pi, n_jets)
    mult = 2 + rng.poisson(cfg.multiplicity_slope * np.log(np.maximum(jpt / 5.0, 1.0)))
    jet_of = np.repeat(np.arange(n_jets), mult)
    # Dirichlet fractions per jet via normalised Gamma draws.
    g = rng.gamma(cfg.dirichlet_alpha, 1.0, jet_of.size)
    z = g / np.bincount(jet_of, weights=g)[jet_of]
    pt = np.maximum(z * jpt[jet_of], 0.05)
    width = np.clip(cfg.jet_width * np.sqrt(20.0 / pt), 0.01, 0.4)
    eta = jeta[jet_of] + width * rng.standard_normal(jet_of.size)
    phi = jphi[jet_of] + width * rng.standard_normal(jet_of.size)
    cls = rng.choice(5, size=jet_of.size, p=np.asarray(cfg.jet_fractions))
    return cls, pt, eta, phi


def _prompt(rng, cfg: GunConfig):
    n = rng.poisson(cfg.prompt_mean)
    cls = rng.choice(np.array([1, 3, 4]), size=n)  # photon, electron, muon
    lo, hi = cfg.prompt_pt_range
    pt = rng.uniform(lo, hi, n)
    eta = rng.uniform(-2.5, 2.5, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    return cls, pt, eta, phi


def gun_particles(rng: np.random.Generator, cfg: GunConfig | None = None,
                  pileup: float = 0.0) -> GenParticles:
    """One particle-gun event: jets + prompt particles + underlying event (+ pileup)."""
    cfg = cfg or GunConfig()
    parts = [_jets(rng, cfg), _prompt(rng, cfg), _soft(rng, rng.poisson(cfg.soft_mean), cfg)]
    n_hard = sum(p[0].size for p in parts)
    if pileup > 0:
        n_pu = int(rng.poisson(pileup))
        n_soft = int(rng.poisson(cfg.pileup_soft_mean * n_pu)) if n_pu else 0
        parts.append(_soft(rng, n_soft, cfg))
    cls, pt, eta, phi = (np.concatenate(cols) for cols in zip(*parts))
    pid, charge, mass = _species(cls, rng)
    is_pu = np.arange(cls.size) >= n_hard
    return GenParticles.from_pt_eta_phi_m(pid, charge, pt, eta, _wrap(phi), mass, is_pu)


def _wrap(phi):
    return np.arctan2(np.sin(phi), np.cos(phi))
