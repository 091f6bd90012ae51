"""Event generation front end: generator (Pythia 8 or the particle gun) + detector simulation.

``generate_events(process, n_events, seed, pileup, detector)`` yields
:class:`~mlpf_tf.data.schema.Event` tuples in the Delphes particle-flow schema (see
``detector`` for the element and target definitions).

Determinism: everything derives from ``seed`` through ``numpy.random.SeedSequence``: the Pythia
seeds of the hard-process and pileup instances and the pileup multiplicities are separate
streams consumed event by event; the detector randomness and the particle gun use one stream
per event (spawn key (stream, event index)), so a gun event depends only on (seed, index,
pileup). The same arguments give identical arrays, and the first k events of a longer run equal
a k-event run. Pileup overlays
``Poisson(pileup)`` minimum-bias interactions per event (Pythia SoftQCD:nonDiffractive, or soft
gun interactions for ``gun``); their particles carry ``is_pileup``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from mlpf_tf.data.detector import DetectorConfig, simulate
from mlpf_tf.data.particle_gun import GunConfig, gun_particles
from mlpf_tf.data.particles import GenParticles
from mlpf_tf.data.pythia_gen import PYTHIA_SEED_MAX, PYTHIA_SEED_MIN, PythiaSource
from mlpf_tf.data.schema import Event

PROCESSES = ("ttbar", "qcd", "gun")
PILEUP_MAX = 1000.0
# Hard-process events requested from Pythia per batch.
_BATCH = 16

# SeedSequence spawn keys of the independent streams.
_KEY_DETECTOR, _KEY_PILEUP_COUNT, _KEY_GUN, _KEY_PYTHIA_HARD, _KEY_PYTHIA_PU = range(5)


def _pythia_seed(seed: int, key: int) -> int:
    """A Pythia Random:seed in 1..900_000_000 derived from ``seed`` (0 would mean 'clock')."""
    state = np.random.SeedSequence(seed, spawn_key=(key,)).generate_state(1, np.uint64)[0]
    return 1 + int(state % np.uint64(PYTHIA_SEED_MAX))


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def validate_arguments(process, n_events, seed, pileup, detector) -> DetectorConfig:
    """Raise ValueError naming the bad value; return the detector configuration to use."""
    if process not in PROCESSES:
        raise ValueError(f"unknown process {process!r}; expected one of {', '.join(PROCESSES)}")
    if isinstance(n_events, bool) or not isinstance(n_events, (int, np.integer)):
        raise ValueError(f"n_events must be an integer, got {n_events!r}")
    if n_events < 0:
        raise ValueError(f"n_events must be >= 0, got {n_events}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if not PYTHIA_SEED_MIN <= seed <= PYTHIA_SEED_MAX:
        raise ValueError(f"seed must be in [{PYTHIA_SEED_MIN}, {PYTHIA_SEED_MAX}] "
                         f"(Pythia's Random:seed range), got {seed}")
    if (isinstance(pileup, bool) or not isinstance(pileup, (int, float, np.integer, np.floating))
            or not math.isfinite(pileup)):
        raise ValueError(f"pileup must be a finite number, got {pileup!r}")
    if not 0.0 <= pileup <= PILEUP_MAX:
        raise ValueError(f"pileup must be in [0, {PILEUP_MAX:g}], got {pileup}")
    if detector is None:
        return DetectorConfig()
    if not isinstance(detector, DetectorConfig):
        raise ValueError(f"detector must be a DetectorConfig or None, got "
                         f"{type(detector).__name__}")
    return detector


def generate_events(process: str, n_events: int, seed: int, pileup: float = 0.0,
                    detector: DetectorConfig | None = None) -> Iterator[Event]:
    """Yield ``n_events`` simulated events of ``process`` (one of :data:`PROCESSES`).

    Arguments are checked immediately (not at the first ``next``); Pythia is initialised once
    per call, lazily when the first event is requested.
    """
    cfg = validate_arguments(process, n_events, seed, pileup, detector)
    return _stream(process, int(n_events), int(seed), float(pileup), cfg)


def generate_particles(process: str, n_events: int, seed: int,
                       pileup: float = 0.0) -> Iterator[GenParticles]:
    """Yield the generator-level particles behind :func:`generate_events` (same streams)."""
    validate_arguments(process, n_events, seed, pileup, None)
    return _particle_stream(process, int(n_events), int(seed), float(pileup))


def _particle_stream(process: str, n_events: int, seed: int,
                     pileup: float) -> Iterator[GenParticles]:
    if n_events == 0:
        return
    if process == "gun":
        gun_cfg = GunConfig()
        for i in range(n_events):
            yield gun_particles(_rng(seed, _KEY_GUN, i), gun_cfg, pileup)
        return
    hard = PythiaSource(process, _pythia_seed(seed, _KEY_PYTHIA_HARD))
    pu_source = PythiaSource("minbias", _pythia_seed(seed, _KEY_PYTHIA_PU)) if pileup > 0 \
        else None
    pu_rng = _rng(seed, _KEY_PILEUP_COUNT)
    done = 0
    while done < n_events:
        k = min(_BATCH, n_events - done)
        events = hard.generate(k)
        if pu_source is not None:
            counts = pu_rng.poisson(pileup, size=k)
            pu_events = pu_source.generate(int(counts.sum()), pileup=True) if counts.sum() \
                else []
            bounds = np.concatenate([[0], np.cumsum(counts)])
            events = [GenParticles.concatenate([ev, *pu_events[a:b]])
                      for ev, a, b in zip(events, bounds[:-1], bounds[1:])]
        yield from events
        done += k


def _stream(process: str, n_events: int, seed: int, pileup: float,
            cfg: DetectorConfig) -> Iterator[Event]:
    for i, particles in enumerate(_particle_stream(process, n_events, seed, pileup)):
        yield simulate(particles, _rng(seed, _KEY_DETECTOR, i), cfg)
