"""Generator-level particles of one event, as flat numpy arrays.

:class:`GenParticles` is the hand-over between the event generators (Pythia 8 in
``pythia_gen``, the numpy particle gun in ``particle_gun``) and the detector simulation in
``detector``. It holds only final-state particles; whether a particle is visible or comes from a
pileup interaction is part of the record, so the detector and the targets can treat pileup
explicitly.

Units: GeV for momenta and energies; pseudorapidity and azimuth in the usual collider frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# PDG ids used by the class mapping (absolute values).
PID_ELECTRON = 11
PID_MUON = 13
PID_PHOTON = 22
NEUTRINO_PIDS = (12, 14, 16)

# Masses (GeV) of the species the particle gun emits, keyed by |pid|.
MASSES = {
    11: 0.000511, 13: 0.10566, 22: 0.0, 211: 0.13957, 321: 0.49368, 2212: 0.93827,
    130: 0.49761, 2112: 0.93957,
}

_ARRAYS = ("pid", "charge", "px", "py", "pz", "e", "is_pileup")


@dataclass(frozen=True)
class GenParticles:
    """Final-state generator particles of one event (one entry per particle).

    ``pid``: PDG id (int32); ``charge``: electric charge in units of e (int8);
    ``px, py, pz, e``: four-momentum in GeV (float64); ``is_pileup``: True for particles that
    come from an overlaid minimum-bias interaction.
    """

    pid: np.ndarray
    charge: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    e: np.ndarray
    is_pileup: np.ndarray

    def __post_init__(self) -> None:
        conv = {"pid": np.int32, "charge": np.int8, "is_pileup": bool}
        n = None
        for name in _ARRAYS:
            arr = np.asarray(getattr(self, name), dtype=conv.get(name, np.float64))
            if arr.ndim != 1:
                raise ValueError(f"GenParticles.{name} must be 1-D, got shape {arr.shape}")
            if n is None:
                n = arr.shape[0]
            elif arr.shape[0] != n:
                raise ValueError(
                    f"GenParticles.{name} has {arr.shape[0]} entries, expected {n} like pid")
            object.__setattr__(self, name, arr)
        for name in ("px", "py", "pz", "e"):
            if not np.isfinite(getattr(self, name)).all():
                raise ValueError(f"GenParticles.{name} has non-finite values")

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls) -> GenParticles:
        z = np.zeros(0)
        return cls(z.astype(np.int32), z.astype(np.int8), z, z, z, z, z.astype(bool))

    @classmethod
    def from_pt_eta_phi_m(cls, pid, charge, pt, eta, phi, mass,
                          is_pileup=None) -> GenParticles:
        """Build from (pT, eta, phi, mass) arrays."""
        pt = np.asarray(pt, dtype=np.float64)
        eta = np.asarray(eta, dtype=np.float64)
        phi = np.asarray(phi, dtype=np.float64)
        mass = np.broadcast_to(np.asarray(mass, dtype=np.float64), pt.shape)
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        e = np.sqrt(px * px + py * py + pz * pz + mass * mass)
        if is_pileup is None:
            is_pileup = np.zeros(pt.shape, dtype=bool)
        return cls(np.asarray(pid), np.asarray(charge), px, py, pz, e,
                   np.broadcast_to(np.asarray(is_pileup, dtype=bool), pt.shape))

    @staticmethod
    def concatenate(parts: list[GenParticles]) -> GenParticles:
        if not parts:
            return GenParticles.empty()
        return GenParticles(*(np.concatenate([getattr(p, name) for p in parts])
                              for name in _ARRAYS))

    def select(self, mask_or_index) -> GenParticles:
        return GenParticles(*(getattr(self, name)[mask_or_index] for name in _ARRAYS))

    def with_pileup_flag(self, flag: bool) -> GenParticles:
        return GenParticles(self.pid, self.charge, self.px, self.py, self.pz, self.e,
                            np.full(len(self), flag, dtype=bool))

    def visible(self) -> GenParticles:
        """Drop neutrinos (the only invisible final-state particles of the SM generators)."""
        return self.select(~np.isin(np.abs(self.pid), NEUTRINO_PIDS))

    # ------------------------------------------------------------------ kinematics
    def __len__(self) -> int:
        return int(self.pid.shape[0])

    @property
    def pt(self) -> np.ndarray:
        return np.hypot(self.px, self.py)

    @property
    def p(self) -> np.ndarray:
        return np.sqrt(self.px ** 2 + self.py ** 2 + self.pz ** 2)

    @property
    def eta(self) -> np.ndarray:
        """Pseudorapidity; particles exactly along the beam get a large finite value."""
        return np.arcsinh(self.pz / np.maximum(self.pt, 1e-9))

    @property
    def phi(self) -> np.ndarray:
        return np.arctan2(self.py, self.px)

    @property
    def mass(self) -> np.ndarray:
        return np.sqrt(np.maximum(self.e ** 2 - self.p ** 2, 0.0))
