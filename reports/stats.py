"""Statistics over seeds: medians and quantiles that allow +inf, bootstrap intervals, paired ratios.

A search that never reaches a target has an infinite time to it. Such a value is kept as
+inf (never averaged as 0 or dropped): a median is finite only when more than half of the seeds
reached the target, and an interval's upper end is inf when enough resamples are dominated by
seeds that did not.

Bootstrap: the percentile interval of the median over ``resamples`` resamples of the seeds
(with replacement), from a generator seeded with ``seed``, so the same data give the same
interval. With few seeds (3-5) the interval is wide and coarse (it can only take values of the
data); the report prints ``n`` beside every interval so it is read as what it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: bootstrap resamples of every interval
RESAMPLES = 4000
#: two-sided coverage of every interval
LEVEL = 0.95


def _clean(values: Sequence[float]) -> np.ndarray:
    return np.asarray([float(x) for x in values if not math.isnan(float(x))], dtype=float)


def quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile that allows +inf (inf beyond it stays inf); NaN if empty."""
    v = np.sort(_clean(values))
    if v.size == 0:
        return math.nan
    pos = q * (v.size - 1)
    lo, hi = int(math.floor(pos)), int(math.ceil(pos))
    frac = pos - lo
    if frac == 0.0 or v[lo] == v[hi]:
        return float(v[lo])
    if math.isinf(v[hi]) or math.isinf(v[lo]):
        return math.inf
    return float(v[lo] + (v[hi] - v[lo]) * frac)


def median(values: Sequence[float]) -> float:
    return quantile(values, 0.5)


def _row_medians(samples: np.ndarray) -> np.ndarray:
    """Median of every row of ``samples`` (rows sorted here); inf if a middle value is inf."""
    s = np.sort(samples, axis=1)
    n = s.shape[1]
    if n % 2:
        return s[:, n // 2]
    a, b = s[:, n // 2 - 1], s[:, n // 2]
    with np.errstate(invalid="ignore"):
        mid = 0.5 * (a + b)
    return np.where(np.isinf(b) | np.isinf(a), np.inf, mid)


def bootstrap_median(values: Sequence[float], *, resamples: int = RESAMPLES,
                     level: float = LEVEL, seed: int = 0) -> tuple[float, float, float]:
    """(median, low, high): the median over seeds and its bootstrap percentile interval.

    NaN values are dropped first; all-NaN or empty input gives (nan, nan, nan). One value gives
    a zero-width interval at it.
    """
    v = _clean(values)
    if v.size == 0:
        return math.nan, math.nan, math.nan
    point = median(v)
    if v.size == 1:
        return point, point, point
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(resamples, v.size))
    meds = _row_medians(v[idx])
    alpha = (1.0 - level) / 2.0
    return point, quantile(meds, alpha), quantile(meds, 1.0 - alpha)


def paired_ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator for times to target of one seed; NaN when neither reached it.

    inf / finite = inf (only the denominator's tuner reached the target); finite / inf = 0.
    """
    if math.isinf(numerator) and math.isinf(denominator):
        return math.nan
    if math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    if denominator == 0:
        return math.inf if numerator > 0 else math.nan
    return numerator / denominator


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether the intervals [a0, a1] and [b0, b1] share a point (NaN ends: True)."""
    if any(math.isnan(x) for x in (*a, *b)):
        return True
    return not (a[1] < b[0] or b[1] < a[0])
