"""Pythia 8 event sources (pp at 14 TeV) returning final-state visible particles.

Processes, as in the Delphes MLPF dataset:
  ``ttbar``: Top:gg2ttbar + Top:qqbar2ttbar;
  ``qcd``: HardQCD:all with PhaseSpace:pTHatMin = 20 GeV;
  ``minbias``: SoftQCD:nonDiffractive, the pileup overlay (SoftQCD:inelastic would add the
  diffractive part but its initialisation takes several seconds, the non-diffractive one about
  0.4 s).
Particles with c*tau0 > 10 mm are kept stable (the usual LHC generator convention), so K0S and
Lambda reach the detector. Each :class:`PythiaSource` initialises one Pythia instance once; its
random stream is fixed by ``Random:setSeed = on`` / ``Random:seed``, so the same seed gives the
same events. Events are produced in batches through ``Pythia.nextBatch`` (columnar, much faster
than reading particles one by one) and converted to :class:`GenParticles`; neutrinos are
dropped. All Pythia printout is switched off.
"""

from __future__ import annotations

import numpy as np

from mlpf_tf.data.particles import GenParticles

PYTHIA_SEED_MIN = 0
PYTHIA_SEED_MAX = 900_000_000

COMMON_SETTINGS = (
    "Beams:idA = 2212",
    "Beams:idB = 2212",
    "Beams:eCM = 14000.",
    "ParticleDecays:limitTau0 = on",
    "ParticleDecays:tau0Max = 10.",
    "Print:quiet = on",
    "Init:showProcesses = off",
    "Init:showMultipartonInteractions = off",
    "Init:showChangedSettings = off",
    "Init:showChangedParticleData = off",
    "Next:numberCount = 0",
    "Next:numberShowInfo = 0",
    "Next:numberShowProcess = 0",
    "Next:numberShowEvent = 0",
    "Random:setSeed = on",
)

PROCESS_SETTINGS = {
    "ttbar": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on"),
    "qcd": ("HardQCD:all = on", "PhaseSpace:pTHatMin = 20."),
    "minbias": ("SoftQCD:nonDiffractive = on",),
}


class PythiaSource:
    """One initialised Pythia instance producing events of ``process`` from ``seed``.

    ``seed`` is passed to Random:seed and must be in 1..900_000_000 (Pythia reads 0 as "seed
    from the clock", which would not be reproducible).
    """

    def __init__(self, process: str, seed: int, extra_settings: tuple[str, ...] = ()):
        if process not in PROCESS_SETTINGS:
            raise ValueError(f"unknown Pythia process {process!r}; expected one of "
                             f"{', '.join(PROCESS_SETTINGS)}")
        if (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                or not 1 <= seed <= PYTHIA_SEED_MAX):
            raise ValueError(f"Pythia seed must be an integer in [1, {PYTHIA_SEED_MAX}], "
                             f"got {seed!r}")
        import pythia8mc  # heavy import, only when Pythia is used

        self.process = process
        self.seed = int(seed)
        self._pythia = pythia8mc.Pythia("", False)
        settings = (*COMMON_SETTINGS, f"Random:seed = {self.seed}",
                    *PROCESS_SETTINGS[process], *extra_settings)
        for line in settings:
            if not self._pythia.readString(line, False):
                raise ValueError(f"Pythia rejected the setting {line!r}")
        if not self._pythia.init():
            raise RuntimeError(f"Pythia initialisation failed for process {process!r}")
        self._charge_of: dict[int, int] = {}

    def _charges(self, pid: np.ndarray) -> np.ndarray:
        ids, inv = np.unique(pid, return_inverse=True)
        pdata = self._pythia.particleData
        table = np.empty(ids.size, dtype=np.int8)
        for k, i in enumerate(ids.tolist()):
            q = self._charge_of.get(i)
            if q is None:
                q = int(round(pdata.charge(i)))
                self._charge_of[i] = q
            table[k] = q
        return table[inv]

    def generate(self, n: int, pileup: bool = False) -> list[GenParticles]:
        """The next ``n`` events, each as visible final-state particles."""
        import awkward as ak

        out: list[GenParticles] = []
        while len(out) < n:
            batch = self._pythia.nextBatch(n - len(out))
            prt = batch["prt"]
            final = prt[prt["status"] > 0]
            counts = np.asarray(ak.num(final, axis=1), dtype=np.int64)
            if counts.size == 0:
                raise RuntimeError(f"Pythia produced no {self.process} events")
            flat = ak.flatten(final, axis=1)
            pid = ak.to_numpy(flat["id"]).astype(np.int32)
            p4 = flat["p"]
            cols = [ak.to_numpy(p4[c]).astype(np.float64) for c in ("px", "py", "pz", "e")]
            charge = self._charges(pid) if pid.size else np.zeros(0, np.int8)
            is_pu = np.full(pid.size, pileup, dtype=bool)
            allp = GenParticles(pid, charge, *cols, is_pu)
            bounds = np.concatenate([[0], np.cumsum(counts)])
            for a, b in zip(bounds[:-1], bounds[1:]):
                out.append(allp.select(slice(int(a), int(b))).visible())
        return out
