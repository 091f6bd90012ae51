"""Learning curves for simulated searches: a recorded table and a parametric surrogate.

A simulated trial needs two things per configuration: its validation loss after each epoch and
the wall seconds one epoch takes. Both sources here answer the same two questions
(:class:`CurveModel`):

``val_losses(values, initial_epoch, epochs)``
    the losses after epochs ``initial_epoch + 1 .. epochs`` (1-based counts of epochs trained).
    A curve is a function of the configuration and the epoch only, so a trial continued from
    ``initial_epoch`` sees exactly the losses its parent would have seen had it trained on.
``epoch_seconds(values)``
    seconds per epoch on ONE node; the simulator divides by the node speed-up of a worker.

Hyperparameter values whose names start with ``tuner/`` (keras-tuner's reserved budget keys) are
ignored by both sources.

The table format (CSV, gzip-compressed when the name ends in ``.gz``, one row per configuration
and epoch)::

    config_id, <one column per hyperparameter>, epoch, val_loss, epoch_seconds
    [, setup_seconds, restore_seconds, peak_memory_mb, params]

``config_id`` names a recorded configuration (any string); the hyperparameter columns hold its
values (the same on every row of that configuration); ``epoch`` runs 1..n without gaps;
``val_loss`` is the validation loss after that epoch; ``epoch_seconds`` the wall seconds that
epoch took on the recording machine (one node). The optional per-configuration columns
(:data:`CONFIG_COLUMNS`, the same on every row of a configuration) hold the seconds a new trial
spends before its first epoch (build, data, trace), the seconds a promoted trial spends
restoring its parent's checkpoint (rebuild, trace, load), the peak resident memory and the
parameter count; a table without them has no setup costs. A table file may begin with one
header line ``# mlpf-curve-table <json>`` naming what it was recorded on (data, model, code
version, command). Lookup (:class:`CurveTable`): a configuration
sampled by an oracle is mapped to the NEAREST recorded configuration in normalised
hyperparameter space (keras-tuner's ``value_to_prob`` of the search space, so log-scaled
ranges are compared on the log scale; booleans and choices by their bucket centre). A table
never extrapolates silently: asking for an epoch beyond a configuration's recording is an
error unless the table was loaded with ``extrapolate="power_law"``; then epochs beyond the last
recorded one follow a power law ``a + b * epoch**-c`` fitted to that
configuration's recorded curve (its last two thirds), scaled to join the last recorded value,
so a short recording can feed a 100-epoch search. For positive losses no extrapolated loss
goes below the extrapolated curve of the configuration with the lowest recorded loss at the
same epoch (or below its own last recorded value, if that is lower still): a curve still
falling steeply at its last recorded epoch would otherwise be extrapolated far below anything
the recording supports.

The surrogate (:class:`Surrogate`) is ``val_loss(epoch; hp) = a(u) + b(u) * epoch**-c(u)``
where ``u`` is the configuration in normalised space: ``a`` is a weighted quadratic bowl with
its minimum ``a_min`` at a seeded location ``u*`` (a learnable optimum); the weights are
log-normal, so a few hyperparameters matter much more than the rest (as in real searches);
``b`` and ``c`` vary smoothly
so that curves of different configurations cross (early rankings are informative but not
exact); multiplicative Gaussian noise, seeded per (configuration, epoch), is added. Epoch time
grows with model-size hyperparameters and falls with the batch size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

RESERVED_PREFIX = "tuner/"
TABLE_COLUMNS = ("config_id", "epoch", "val_loss", "epoch_seconds")
#: optional per-configuration columns: setup and restore seconds, peak memory, parameters
CONFIG_COLUMNS = ("setup_seconds", "restore_seconds", "peak_memory_mb", "params")
#: how epochs beyond a table's recording may be made up (only when asked for)
EXTRAPOLATIONS = ("power_law",)
HEADER_PREFIX = "# mlpf-curve-table "

#: substrings of hyperparameter names that make an epoch slower as the value grows
SIZE_WORDS = ("dim", "layers", "messages", "bin_size", "width", "units")
#: substrings of hyperparameter names that make an epoch faster as the value grows
BATCH_WORDS = ("batch",)


class CurveError(ValueError):
    """A curve table or a curve request is invalid; the message names the file or value."""


class CurveModel(Protocol):
    """What the simulator asks of a learning-curve source."""

    def val_losses(self, values: Mapping[str, Any], initial_epoch: int,
                   epochs: int) -> list[float]: ...

    def epoch_seconds(self, values: Mapping[str, Any]) -> float: ...


def configuration(values: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameter values without keras-tuner's reserved ``tuner/*`` keys."""
    return {k: v for k, v in values.items() if not str(k).startswith(RESERVED_PREFIX)}


def config_key(values: Mapping[str, Any]) -> str:
    """A stable text key of a configuration (sorted names, repr of values)."""
    conf = configuration(values)
    return ";".join(f"{k}={_canonical(conf[k])}" for k in sorted(conf))


def _canonical(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return repr(value)


def stable_seed(*parts: Any) -> int:
    """A 64-bit seed from text parts, equal across processes (unlike ``hash``)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _check_epochs(initial_epoch: int, epochs: int) -> None:
    if not (isinstance(initial_epoch, (int, np.integer)) and isinstance(epochs, (int, np.integer))):
        raise CurveError(f"epochs must be integers, got initial_epoch={initial_epoch!r}, "
                         f"epochs={epochs!r}")
    if initial_epoch < 0 or epochs < initial_epoch:
        raise CurveError(f"need 0 <= initial_epoch <= epochs, got initial_epoch={initial_epoch}, "
                         f"epochs={epochs}")


def normalised(space, values: Mapping[str, Any], names: Sequence[str]) -> np.ndarray:
    """``values`` mapped to [0, 1] per name by the space's ``value_to_prob`` (0.5 if inactive)."""
    hps = hp_by_name(space)
    out = np.full(len(names), 0.5)
    for i, name in enumerate(names):
        if name in values and values[name] is not None:
            try:
                out[i] = float(hps[name].value_to_prob(values[name]))
            except (ValueError, TypeError, KeyError) as exc:
                raise CurveError(f"hyperparameter {name}={values[name]!r} is not in the search "
                                 f"space ({hps[name]!r}): {exc}") from None
    return out


def hp_by_name(space) -> dict[str, Any]:
    """Name -> hyperparameter object of a keras-tuner space (first definition of a name)."""
    out: dict[str, Any] = {}
    for hp in space.space:
        out.setdefault(hp.name, hp)
    return out


def space_names(space) -> list[str]:
    """Names of the tunable (non-reserved) hyperparameters of a keras-tuner space, in order."""
    return [hp.name for hp in space.space if not hp.name.startswith(RESERVED_PREFIX)]


# ---------------------------------------------------------------------------------------------
# Parametric surrogate
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Surrogate:
    """``val_loss = a(u) + b(u) * epoch**-c(u)`` times (1 + noise), over a keras-tuner space.

    ``space`` is a ``keras_tuner.HyperParameters`` (the search space); ``landscape_seed`` fixes
    the optimum ``u*`` and the weights (the "problem"); ``noise_seed`` fixes the noise (one
    realisation per search seed). ``optimum`` may be given explicitly as {name: value}.
    """

    space: Any
    noise_seed: int = 0
    landscape_seed: int = 0
    noise: float = 0.005           # relative standard deviation of the per-epoch noise
    a_min: float = 1.0             # best reachable loss
    a_scale: float = 0.5           # loss added when every value is 0.5 away from the optimum
    b0: float = 2.0                # typical initial excess loss
    c0: float = 0.6                # typical power-law exponent
    base_epoch_seconds: float = 60.0
    optimum: Mapping[str, Any] | None = None

    def __post_init__(self):
        self.names = space_names(self.space)
        if not self.names:
            raise CurveError("the search space has no tunable hyperparameters")
        if self.noise < 0 or self.base_epoch_seconds <= 0:
            raise CurveError(f"noise must be >= 0 and base_epoch_seconds > 0, got "
                             f"noise={self.noise}, base_epoch_seconds={self.base_epoch_seconds}")
        rng = np.random.default_rng(stable_seed("landscape", self.landscape_seed))
        n = len(self.names)
        if self.optimum is None:
            self.u_star = rng.uniform(0.15, 0.85, n)
        else:
            missing = sorted(set(self.names) - set(self.optimum))
            if missing:
                raise CurveError(f"optimum lacks hyperparameter(s) {', '.join(missing)}")
            self.u_star = normalised(self.space, self.optimum, self.names)
            rng.uniform(size=n)  # keep the later draws independent of how u* was set
        weights = rng.lognormal(0.0, 1.0, n)
        self.weights = weights / weights.sum()
        self.b_dir = rng.normal(0.0, 1.0, n) / math.sqrt(n)
        self.c_dir = rng.normal(0.0, 1.0, n) / math.sqrt(n)
        self.cost = np.array([_cost_slope(name) for name in self.names])
        self._noise_cache: dict[str, np.ndarray] = {}

    def normalise(self, values: Mapping[str, Any]) -> np.ndarray:
        return normalised(self.space, configuration(values), self.names)

    def params(self, values: Mapping[str, Any]) -> tuple[float, float, float]:
        """(a, b, c) of the configuration's noiseless curve."""
        u = self.normalise(values)
        d = u - self.u_star
        a = self.a_min + 4.0 * self.a_scale * float(np.sum(self.weights * d * d))
        b = self.b0 * math.exp(0.5 * float(self.b_dir @ (u - 0.5)))
        c = self.c0 * math.exp(0.4 * float(self.c_dir @ (u - 0.5)))
        return a, b, c

    def clean_losses(self, values: Mapping[str, Any], initial_epoch: int,
                     epochs: int) -> np.ndarray:
        """The noiseless curve after epochs ``initial_epoch + 1 .. epochs``."""
        _check_epochs(initial_epoch, epochs)
        a, b, c = self.params(values)
        e = np.arange(initial_epoch + 1, epochs + 1, dtype=float)
        return a + b * e ** (-c)

    def _noise(self, values: Mapping[str, Any], epochs: int) -> np.ndarray:
        key = config_key(values)
        cached = self._noise_cache.get(key)
        if cached is None or len(cached) < epochs:
            length = max(epochs, 128 if cached is None else 2 * len(cached))
            rng = np.random.default_rng(stable_seed("noise", self.noise_seed, key))
            cached = rng.standard_normal(length)
            self._noise_cache[key] = cached
        return cached

    def val_losses(self, values: Mapping[str, Any], initial_epoch: int,
                   epochs: int) -> list[float]:
        clean = self.clean_losses(values, initial_epoch, epochs)
        if self.noise == 0.0:
            return clean.tolist()
        z = self._noise(values, epochs)[initial_epoch:epochs]
        return (clean * (1.0 + self.noise * z)).tolist()

    def epoch_seconds(self, values: Mapping[str, Any]) -> float:
        u = self.normalise(values)
        return self.base_epoch_seconds * math.exp(float(self.cost @ (u - 0.5)))

    def best_configuration(self) -> dict[str, Any]:
        """The space's values closest to ``u*`` (the optimum of the asymptotic loss)."""
        hps = hp_by_name(self.space)
        return {name: hps[name].prob_to_value(float(p)) for name, p in zip(self.names, self.u_star)}


def _cost_slope(name: str) -> float:
    lowered = name.lower()
    if any(w in lowered for w in BATCH_WORDS):
        return -0.6
    if any(w in lowered for w in SIZE_WORDS):
        return 0.4
    return 0.0


# ---------------------------------------------------------------------------------------------
# Recorded table
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RecordedCurve:
    """One recorded configuration: its values, losses after epochs 1..n, seconds per epoch."""

    config_id: str
    values: dict[str, Any]
    losses: np.ndarray
    epoch_seconds: float
    tail: tuple[float, float, float] | None = None   # (a, b, c) of the fitted power law
    #: extrapolated losses stay at or above this curve's (the table's best; see CurveTable)
    floor: RecordedCurve | None = None
    setup_seconds: float = 0.0     # a new trial: build, data, trace before its first epoch
    restore_seconds: float = 0.0   # a promoted trial: rebuild, trace and checkpoint load

    def losses_until(self, epochs: int) -> np.ndarray:
        n = len(self.losses)
        if epochs <= n:
            return self.losses[:epochs]
        if self.tail is None:
            self.tail = fit_power_law(self.losses)
        a, b, c = self.tail
        extra = np.arange(n + 1, epochs + 1, dtype=float)
        fitted = a + b * extra ** (-c)
        # Join continuously: scale the fitted tail so it starts from the last recorded value
        # (a ratio, so a positive curve stays positive and keeps decreasing).
        at_last = a + b * float(n) ** (-c)
        scale = self.losses[-1] / at_last if at_last > 0 else 1.0
        tail = fitted * scale
        if self.floor is not None and self.floor is not self:
            bound = self.floor.losses_until(epochs)[n:]
            tail = np.maximum(tail, np.minimum(bound, float(self.losses[-1])))
        return np.concatenate([self.losses, tail])


def fit_power_law(losses: Sequence[float]) -> tuple[float, float, float]:
    """Least-squares ``a + b * epoch**-c`` (b >= 0, c in [0.05, 3]) over the recorded epochs.

    The fit uses the last two thirds of the epochs (at least 3), so a huge first-epoch loss
    does not dominate it. When every loss is positive the asymptote is kept at ``a >= 0`` (a
    steep drop could otherwise extrapolate below zero). With fewer than 3 epochs the curve is
    held flat (a = last loss, b = 0).
    """
    y = np.asarray(losses, dtype=float)
    if len(y) < 3:
        return float(y[-1]), 0.0, 1.0
    e = np.arange(1, len(y) + 1, dtype=float)
    # The first epochs of a recording can be orders of magnitude above the rest and would
    # dominate a least-squares fit: fit the last two thirds (at least 3 epochs).
    start = min(len(y) - 3, len(y) // 3)
    e, y = e[start:], y[start:]
    positive = bool(np.all(y > 0))
    best = None
    for c in np.geomspace(0.05, 3.0, 60):
        x = e ** (-c)
        design = np.stack([np.ones_like(x), x], axis=1)
        (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
        if a < 0 and positive:  # refit through a = 0
            a, b = 0.0, float(x @ y / (x @ x))
        if b < 0:  # a rising curve: hold the last value
            a, b = float(y[-1]), 0.0
        err = float(np.sum((a + b * x - y) ** 2))
        if best is None or err < best[0]:
            best = (err, float(a), float(b), float(c))
    return best[1], best[2], best[3]


class CurveTable:
    """Recorded learning curves (see the module docstring for the CSV format and lookup)."""

    def __init__(self, curves: list[RecordedCurve], hp_names: list[str], source: str = "table",
                 space=None, noise: float = 0.0, noise_seed: int = 0,
                 extrapolate: str | None = None, header: Mapping[str, Any] | None = None):
        if not curves:
            raise CurveError(f"{source}: no recorded configurations")
        if extrapolate not in (None, "", *EXTRAPOLATIONS):
            raise CurveError(f"extrapolate={extrapolate!r}: unknown method; known: "
                             f"{', '.join(EXTRAPOLATIONS)}")
        self.extrapolate = extrapolate or None
        self.header = dict(header or {})
        self.curves = curves
        # Beyond the recording no curve falls below the (extrapolated) curve of the
        # configuration with the lowest recorded loss, epoch by epoch.
        best = min(curves, key=lambda c: float(np.min(c.losses)))
        floor = best if np.all(best.losses > 0) else None
        for curve in curves:
            curve.floor = floor
        self.hp_names = hp_names
        self.source = source
        self.noise = float(noise)
        self.noise_seed = noise_seed
        self._lookup: dict[str, RecordedCurve] = {}
        self.bind(space)

    @property
    def max_recorded_epochs(self) -> int:
        return max(len(c.losses) for c in self.curves)

    @property
    def recorded_epochs(self) -> int:
        """Epochs recorded for every configuration (the shortest curve)."""
        return min(len(c.losses) for c in self.curves)

    def median_epoch_seconds(self) -> float:
        return float(np.median([c.epoch_seconds for c in self.curves]))

    def median_setup_seconds(self) -> float:
        return float(np.median([c.setup_seconds for c in self.curves]))

    def bind(self, space) -> CurveTable:
        """Use ``space`` (keras-tuner HyperParameters) for the distance; None = table ranges."""
        self.space = space
        self._lookup.clear()
        if space is not None:
            names = [n for n in space_names(space) if n in self.hp_names]
            if not names:
                raise CurveError(f"{self.source}: none of the search space's hyperparameters "
                                 f"({', '.join(space_names(space))}) is a column of the table "
                                 f"(columns: {', '.join(self.hp_names)})")
            self._names = names
        else:
            self._names = list(self.hp_names)
        self._points = np.stack([self._normalise(c.values) for c in self.curves])
        return self

    def _normalise(self, values: Mapping[str, Any]) -> np.ndarray:
        if self.space is not None:
            return normalised(self.space, values, self._names)
        out = np.empty(len(self._names))
        for i, name in enumerate(self._names):
            column = [c.values[name] for c in self.curves]
            value = values.get(name, column[0])
            if all(isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                   for v in column):
                lo, hi = min(column), max(column)
                out[i] = 0.5 if hi == lo else (float(value) - lo) / (hi - lo)
            else:
                out[i] = float(value != column[0])
        return out

    def nearest(self, values: Mapping[str, Any]) -> RecordedCurve:
        """The recorded configuration nearest to ``values`` (ties: the first recorded)."""
        key = config_key(values)
        hit = self._lookup.get(key)
        if hit is None:
            u = self._normalise(configuration(values))
            dist = np.sum((self._points - u) ** 2, axis=1)
            hit = self.curves[int(np.argmin(dist))]
            self._lookup[key] = hit
        return hit

    def val_losses(self, values: Mapping[str, Any], initial_epoch: int,
                   epochs: int) -> list[float]:
        _check_epochs(initial_epoch, epochs)
        curve = self.nearest(values)
        if epochs > len(curve.losses) and not self.extrapolate:
            raise CurveError(f"{self.source}: configuration {curve.config_id} is recorded for "
                             f"{len(curve.losses)} epochs, {epochs} asked; refusing to "
                             "extrapolate (give extrapolate='power_law' or fewer epochs)")
        losses = curve.losses_until(epochs)[initial_epoch:epochs]
        if self.noise:
            # noise around the RECORDED curve: seeded by (seed, recorded configuration), so
            # every sampled configuration that maps to one recorded curve sees the same draws
            rng = np.random.default_rng(stable_seed("table-noise", self.noise_seed,
                                                    curve.config_id))
            z = rng.standard_normal(epochs)[initial_epoch:epochs]
            losses = losses * (1.0 + self.noise * z)
        return [float(x) for x in losses]

    def epoch_seconds(self, values: Mapping[str, Any]) -> float:
        return self.nearest(values).epoch_seconds

    def setup_seconds(self, values: Mapping[str, Any]) -> float:
        return self.nearest(values).setup_seconds

    def restore_seconds(self, values: Mapping[str, Any]) -> float:
        return self.nearest(values).restore_seconds


def read_table_text(path: str) -> tuple[dict[str, Any], str]:
    """(header, CSV text) of a table file, gzip when the name ends in ``.gz``."""
    import gzip
    import json

    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                text = fh.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except FileNotFoundError:
        raise CurveError(f"{path}: no such curve table") from None
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise CurveError(f"{path}: not a readable curve table ({exc})") from None
    header: dict[str, Any] = {}
    if text.startswith(HEADER_PREFIX):
        first, _, text = text.partition("\n")
        try:
            header = json.loads(first[len(HEADER_PREFIX):])
        except json.JSONDecodeError as exc:
            raise CurveError(f"{path}: line 1: unreadable table header ({exc})") from None
        if not isinstance(header, dict):
            raise CurveError(f"{path}: line 1: the table header must be a JSON object")
    return header, text


def table_frame(path: str | os.PathLike):
    """(header, pandas frame) of a table file, as written by :func:`write_curves`."""
    import io

    import pandas as pd

    path = os.fspath(path)
    header, text = read_table_text(path)
    try:
        return header, pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise CurveError(f"{path}: not a readable CSV ({exc})") from None


def load_curves(path: str | os.PathLike, space=None, noise: float = 0.0,
                noise_seed: int = 0, extrapolate: str | None = None) -> CurveTable:
    """Read a learning-curve table (format in the module docstring); errors name file and row.

    ``extrapolate`` (None or one of :data:`EXTRAPOLATIONS`): how epochs beyond the recording
    are made up; None refuses them.
    """
    import pandas as pd

    path = os.fspath(path)
    header, frame = table_frame(path)
    skip = 1 if header else 0  # line numbers below count the header line too
    missing = [c for c in TABLE_COLUMNS if c not in frame.columns]
    if missing:
        raise CurveError(f"{path}: missing column(s) {', '.join(missing)}; a curve table has "
                         f"{', '.join(TABLE_COLUMNS)} and one column per hyperparameter")
    hp_names = [c for c in frame.columns if c not in TABLE_COLUMNS + CONFIG_COLUMNS]
    if not hp_names:
        raise CurveError(f"{path}: no hyperparameter columns besides {', '.join(TABLE_COLUMNS)}")
    extra = [c for c in CONFIG_COLUMNS if c in frame.columns]
    for column in ("epoch", "val_loss", "epoch_seconds", *extra):
        numeric = pd.to_numeric(frame[column], errors="coerce")
        bad = frame.index[~np.isfinite(numeric.astype(float))]
        if len(bad):
            row = int(bad[0]) + 2 + skip  # the CSV header is line 1 (2 after a table header)
            raise CurveError(f"{path}: line {row}: {column}={frame[column].iloc[bad[0]]!r} is "
                             "not a finite number")
        frame[column] = numeric
    curves = []
    for config_id, group in frame.groupby("config_id", sort=False):
        group = group.sort_values("epoch")
        epochs = group["epoch"].to_numpy()
        if not np.array_equal(epochs, np.arange(1, len(group) + 1)):
            raise CurveError(f"{path}: config_id {config_id!r}: epochs must run 1..n without "
                             f"gaps or repeats, got {epochs.tolist()[:12]}")
        values = {}
        for name in hp_names:
            column = group[name]
            if column.nunique(dropna=False) != 1:
                raise CurveError(f"{path}: config_id {config_id!r}: hyperparameter {name!r} "
                                 f"changes between rows ({sorted(map(str, column.unique()))})")
            values[name] = _python_scalar(column.iloc[0])
        seconds = group["epoch_seconds"].to_numpy(dtype=float)
        if np.any(seconds <= 0):
            raise CurveError(f"{path}: config_id {config_id!r}: epoch_seconds must be > 0")
        costs = {}
        for column in ("setup_seconds", "restore_seconds"):
            if column in group:
                value = float(group[column].iloc[0])
                if value < 0 or group[column].nunique() != 1:
                    raise CurveError(f"{path}: config_id {config_id!r}: {column} must be one "
                                     "value >= 0 for every row of the configuration")
                costs[column] = value
        curves.append(RecordedCurve(str(config_id), values,
                                    group["val_loss"].to_numpy(dtype=float),
                                    float(np.median(seconds)), **costs))
    return CurveTable(curves, hp_names, source=path, space=space, noise=noise,
                      noise_seed=noise_seed, extrapolate=extrapolate, header=header)


def _python_scalar(value: Any) -> Any:
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def write_curves(path: str | os.PathLike, rows: list[dict[str, Any]],
                 header: Mapping[str, Any] | None = None) -> None:
    """Write table rows (dicts with config_id, hyperparameters, epoch, val_loss, epoch_seconds
    and optionally :data:`CONFIG_COLUMNS`) as CSV atomically, the fixed columns first, floats
    to seven significant digits; gzip-compressed (reproducibly: no time stamp) when the name
    ends in ``.gz``; ``header`` (JSON) becomes the first line."""
    import json

    import pandas as pd

    if not rows:
        raise CurveError(f"{os.fspath(path)}: no rows to write")
    frame = pd.DataFrame(rows)
    missing = [c for c in TABLE_COLUMNS if c not in frame.columns]
    if missing:
        raise CurveError(f"{os.fspath(path)}: rows lack column(s) {', '.join(missing)}")
    extra = [c for c in CONFIG_COLUMNS if c in frame.columns]
    hp_names = [c for c in frame.columns if c not in TABLE_COLUMNS + CONFIG_COLUMNS]
    frame = frame[["config_id", *hp_names, "epoch", "val_loss", "epoch_seconds", *extra]]
    # seven significant digits: far finer than the noise of a loss or a timing, and the
    # table of a few hundred configurations stays small enough to ship
    text = frame.to_csv(index=False, float_format="%.7g")
    if header:
        text = HEADER_PREFIX + json.dumps(dict(header), sort_keys=True) + "\n" + text
    atomic_write_bytes(os.fspath(path), _encode(os.fspath(path), text))


def _encode(path: str, text: str) -> bytes:
    import gzip

    data = text.encode("utf-8")
    return gzip.compress(data, mtime=0) if path.endswith(".gz") else data


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it over ``path``."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---------------------------------------------------------------------------------------------
# Curves of a finished run (to replay its search)
# ---------------------------------------------------------------------------------------------


class RunCurves:
    """The losses a run directory's ``trials.jsonl`` recorded, by configuration and epoch.

    A continuation's epochs extend its parent's curve, so every (configuration, epoch) a search
    reached has one loss. Replaying the same oracle on these curves must repeat the run's
    decisions; asking for an epoch the run never trained is an error naming the run.
    """

    def __init__(self, run_dir: str | os.PathLike, objective: str = "val_loss"):
        from tuners.records import TRIALS_FILE, read_records

        self.source = os.path.join(os.fspath(run_dir), TRIALS_FILE)
        self.losses: dict[str, dict[int, float]] = {}
        seconds: dict[str, list[float]] = {}
        config_of: dict[str, str] = {}
        self.completed_trials = 0
        for record in read_records(self.source):
            trial_id = record["trial_id"]
            if record["event"] == "trial_start":
                config_of[trial_id] = config_key(record.get("hyperparameters") or {})
            elif record["event"] == "trial_end" and record.get("status") == "COMPLETED":
                self.completed_trials += 1
            elif record["event"] == "epoch" and trial_id in config_of:
                value = (record.get("metrics") or {}).get(objective)
                if value is None:
                    continue
                key = config_of[trial_id]
                self.losses.setdefault(key, {})[int(record["epoch"])] = float(value)
                seconds.setdefault(key, []).append(float(record.get("wall_seconds") or 1.0))
        if not self.losses:
            raise CurveError(f"{self.source}: no epoch records with {objective}")
        self.seconds = {k: float(np.median(v)) for k, v in seconds.items()}

    def val_losses(self, values: Mapping[str, Any], initial_epoch: int,
                   epochs: int) -> list[float]:
        _check_epochs(initial_epoch, epochs)
        key = config_key(values)
        curve = self.losses.get(key)
        if curve is None:
            raise CurveError(f"{self.source}: the run never trained configuration {key}")
        missing = [e for e in range(initial_epoch + 1, epochs + 1) if e not in curve]
        if missing:
            raise CurveError(f"{self.source}: configuration {key} has no loss for epoch(s) "
                             f"{missing[:5]}")
        return [curve[e] for e in range(initial_epoch + 1, epochs + 1)]

    def epoch_seconds(self, values: Mapping[str, Any]) -> float:
        return self.seconds.get(config_key(values), 1.0)
