"""Asynchronous successive halving (ASHA) bookkeeping: rung budgets, results and promotions.

Pure Python with no TensorFlow or keras-tuner import, so the promotion logic is testable and
fast on its own; :mod:`tuners.asha` wraps it in a keras-tuner ``Oracle``.

Terms (Li et al., MLSys 2020, "A System for Massively Parallel Hyperparameter Tuning"):

- Rung ``k = 0..K`` trains a configuration up to ``r_k = min_epochs * eta**k`` epochs, where
  ``eta`` is the reduction factor; the top rung is capped at ``max_epochs`` (so
  ``r_K = max_epochs`` and ``r_{K-1} < max_epochs``).
- Bracket ``s = 0..brackets-1`` is an independent successive-halving ladder whose bottom rung
  is rung ``s`` (its configurations start with ``r_s`` epochs). Each bracket keeps its own
  rung results. New configurations are dealt to brackets round-robin.
- A result is a loss (smaller is better; callers fold a maximised objective into the sign).
  Ties are broken by recording order: the earlier result ranks first.
- Promotion rule: with ``n_k`` results recorded at a rung, a configuration may leave it for
  rung ``k + 1`` if it is among the best ``floor(n_k / eta)`` and has not been promoted from
  that rung before. :meth:`AshaLadder.next_promotion` scans rungs from ``K - 1`` down to the
  bottom (for one rung, brackets in increasing order) and returns the best such candidate.

Each rung keeps a sorted list of ``(loss, seq)`` of all its results and a heap of the results
not yet promoted, so a decision costs ``O(K * brackets * log n)``: the best unpromoted result
is the heap top and its rank is one bisection in the sorted list; nothing rescans all results.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import math
from typing import Any


def rung_budgets(min_epochs: int, max_epochs: int, reduction_factor: int) -> list[int]:
    """Epoch budgets ``[r_0, ..., r_K]``: ``min_epochs * eta**k`` below ``max_epochs``, then it.

    >>> rung_budgets(1, 27, 3)
    [1, 3, 9, 27]
    >>> rung_budgets(5, 100, 3)
    [5, 15, 45, 100]
    """
    check_ladder_args(min_epochs, max_epochs, reduction_factor, 1)
    budgets = []
    budget = min_epochs
    while budget < max_epochs:
        budgets.append(budget)
        budget *= reduction_factor
    budgets.append(max_epochs)
    return budgets


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_ladder_args(min_epochs: Any, max_epochs: Any, reduction_factor: Any,
                      brackets: Any) -> None:
    """Raise ValueError with a message naming the argument when the ladder is ill-defined."""
    if not _is_int(min_epochs) or min_epochs < 1:
        raise ValueError(f"min_epochs must be an integer >= 1, got {min_epochs!r}")
    if not _is_int(max_epochs) or max_epochs < 1:
        raise ValueError(f"max_epochs must be an integer >= 1, got {max_epochs!r}")
    if min_epochs > max_epochs:
        raise ValueError(
            f"min_epochs ({min_epochs}) must be <= max_epochs ({max_epochs})")
    if not _is_int(reduction_factor) or reduction_factor < 2:
        raise ValueError(
            f"reduction_factor must be an integer >= 2, got {reduction_factor!r}")
    if not _is_int(brackets) or brackets < 1:
        raise ValueError(f"brackets must be an integer >= 1, got {brackets!r}")


@dataclasses.dataclass(frozen=True)
class Promotion:
    """A configuration allowed to continue: its result ``key`` at ``rung`` of ``bracket``."""

    key: str
    bracket: int
    rung: int
    loss: float
    from_epochs: int
    to_epochs: int


class Rung:
    """Results of one rung of one bracket: sorted ranks plus a heap of unpromoted results.

    Results are stored column-wise (keys, losses, seqs, promoted flags in recording order), so
    the saved state is four flat lists, copied without building an object per result.
    """

    __slots__ = ("_order", "_unpromoted", "_keys", "_losses", "_seqs", "_promoted", "_index",
                 "_index_of_seq")

    def __init__(self) -> None:
        self._order: list[tuple[float, int]] = []  # (loss, seq) of every result, sorted
        self._unpromoted: list[tuple[float, int, str]] = []  # heap of (loss, seq, key)
        self._keys: list[str] = []
        self._losses: list[float] = []
        self._seqs: list[int] = []
        self._promoted: list[bool] = []
        self._index: dict[str, int] = {}  # key -> position in the columns
        self._index_of_seq: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def _append(self, key: str, loss: float, seq: int, promoted: bool) -> None:
        self._index[key] = self._index_of_seq[seq] = len(self._keys)
        self._keys.append(key)
        self._losses.append(loss)
        self._seqs.append(seq)
        self._promoted.append(promoted)

    def record(self, key: str, loss: float, seq: int) -> None:
        loss = float(loss)
        self._append(key, loss, seq, False)
        bisect.insort(self._order, (loss, seq))
        heapq.heappush(self._unpromoted, (loss, seq, key))

    def promotable(self, reduction_factor: int) -> tuple[str, float] | None:
        """The best unpromoted result if it ranks within the top ``floor(n / eta)``."""
        if not self._unpromoted:
            return None
        loss, seq, key = self._unpromoted[0]
        rank = bisect.bisect_left(self._order, (loss, seq))
        if rank < len(self._order) // reduction_factor:
            return key, loss
        return None

    def mark_promoted(self, key: str) -> None:
        """Mark ``key`` promoted; it must be the current best unpromoted result."""
        if not self._unpromoted or self._unpromoted[0][2] != key:
            raise ValueError(f"result {key!r} is not the best unpromoted result of this rung")
        heapq.heappop(self._unpromoted)
        self._promoted[self._index[key]] = True

    def is_promoted(self, key: str) -> bool:
        return self._promoted[self._index[key]]

    def best(self, count: int) -> list[tuple[str, float, int]]:
        """Up to ``count`` best results as (key, loss, seq), best first (ties: earliest first)."""
        return [(self._keys[self._index_of_seq[seq]], loss, seq)
                for loss, seq in self._order[:max(count, 0)]]

    def latest(self, count: int) -> list[tuple[str, float, int]]:
        """Up to ``count`` most recently recorded results as (key, loss, seq), oldest first."""
        if count <= 0:
            return []
        return list(zip(self._keys[-count:], self._losses[-count:], self._seqs[-count:]))

    def entries(self) -> list[tuple[str, float, int, bool]]:
        """All results as (key, loss, seq, promoted) in recording order."""
        return list(zip(self._keys, self._losses, self._seqs, self._promoted))

    def get_state(self) -> dict[str, list]:
        return {"keys": list(self._keys), "losses": list(self._losses),
                "seqs": list(self._seqs), "promoted": list(self._promoted)}

    @classmethod
    def from_state(cls, state: dict[str, list]) -> Rung:
        rung = cls()
        for key, loss, seq, promoted in zip(state["keys"], state["losses"], state["seqs"],
                                            state["promoted"]):
            rung._append(str(key), float(loss), int(seq), bool(promoted))
            rung._order.append((float(loss), int(seq)))
            if not promoted:
                rung._unpromoted.append((float(loss), int(seq), str(key)))
        rung._order.sort()
        heapq.heapify(rung._unpromoted)
        return rung


class AshaLadder:
    """Rungs of every bracket, results recorded into them, and the promotion decision.

    Args:
        min_epochs: budget of rung 0 (the paper's minimum resource r).
        max_epochs: budget of the top rung (the paper's maximum resource R).
        reduction_factor: eta; the top ``1/eta`` of a rung may be promoted.
        brackets: number of brackets; bracket s starts at rung s (at most K + 1 brackets).
    """

    def __init__(self, min_epochs: int, max_epochs: int, reduction_factor: int,
                 brackets: int = 1) -> None:
        check_ladder_args(min_epochs, max_epochs, reduction_factor, brackets)
        self.min_epochs = min_epochs
        self.max_epochs = max_epochs
        self.reduction_factor = reduction_factor
        self.budgets = rung_budgets(min_epochs, max_epochs, reduction_factor)
        self.top_rung = len(self.budgets) - 1
        if brackets > len(self.budgets):
            raise ValueError(
                f"brackets ({brackets}) must be <= the number of rungs ({len(self.budgets)}) "
                f"for min_epochs={min_epochs}, max_epochs={max_epochs}, "
                f"reduction_factor={reduction_factor}")
        self.brackets = brackets
        self._rungs: dict[tuple[int, int], Rung] = {
            (s, k): Rung() for s in range(brackets) for k in range(s, len(self.budgets))}
        self._seq = 0  # results recorded so far: the tie-break order
        self._configs_started = 0  # new configurations dealt to brackets so far
        # Scan order of a decision: rungs from top-1 down, brackets in increasing order.
        self._scan = [(s, k) for k in range(self.top_rung - 1, -1, -1)
                      for s in range(min(k, brackets - 1) + 1)]

    def settings(self) -> dict[str, int]:
        return {"min_epochs": self.min_epochs, "max_epochs": self.max_epochs,
                "reduction_factor": self.reduction_factor, "brackets": self.brackets}

    def rung(self, bracket: int, rung: int) -> Rung:
        try:
            return self._rungs[(bracket, rung)]
        except KeyError:
            raise ValueError(
                f"no rung {rung} in bracket {bracket} (rungs {bracket}..{self.top_rung})"
            ) from None

    def rung_size(self, rung: int, bracket: int | None = None) -> int:
        """Results recorded at ``rung`` (of one bracket, or summed over brackets)."""
        if bracket is not None:
            return len(self.rung(bracket, rung))
        return sum(len(self._rungs[(s, rung)]) for s in range(min(rung, self.brackets - 1) + 1))

    @property
    def results_recorded(self) -> int:
        return self._seq

    @property
    def configs_started(self) -> int:
        return self._configs_started

    def start_config(self) -> tuple[int, int, int]:
        """Deal a new configuration to a bracket: returns (bracket, rung, epochs)."""
        bracket = self._configs_started % self.brackets
        self._configs_started += 1
        return bracket, bracket, self.budgets[bracket]

    def record(self, bracket: int, rung: int, key: str, loss: float) -> bool:
        """Record a finished result; returns False (and ignores it) if ``key`` is known there."""
        if math.isnan(loss):
            raise ValueError(f"cannot record a NaN loss for result {key!r}")
        target = self.rung(bracket, rung)
        if key in target:
            return False
        target.record(key, loss, self._seq)
        self._seq += 1
        return True

    def next_promotion(self) -> Promotion | None:
        """The promotion the next free worker should run, or None (start a new config)."""
        eta = self.reduction_factor
        for bracket, k in self._scan:
            found = self._rungs[(bracket, k)].promotable(eta)
            if found is not None:
                key, loss = found
                return Promotion(key=key, bracket=bracket, rung=k, loss=loss,
                                 from_epochs=self.budgets[k], to_epochs=self.budgets[k + 1])
        return None

    def promote(self, promotion: Promotion) -> None:
        """Commit a promotion returned by :meth:`next_promotion`."""
        self.rung(promotion.bracket, promotion.rung).mark_promoted(promotion.key)

    def observations(self, rung: int, limit: int | None = None) -> list[tuple[str, float, int]]:
        """Results at ``rung`` over all brackets as (key, loss, seq), in recording order.

        With more than ``limit`` results, keeps the best ``limit // 2`` and fills up with the
        most recent others, so a model fitted on them sees the good region and the newest
        evidence at a bounded cost.
        """
        rungs = [self._rungs[(s, rung)] for s in range(min(rung, self.brackets - 1) + 1)]
        total = sum(len(r) for r in rungs)
        if limit is None or total <= limit:
            chosen = [e[:3] for r in rungs for e in r.entries()]
        else:
            n_best = limit // 2
            best = sorted((x for r in rungs for x in r.best(n_best)), key=lambda x: (x[1], x[2]))
            chosen = best[:n_best]
            taken = {x[2] for x in chosen}
            recent = sorted((x for r in rungs for x in r.latest(limit)), key=lambda x: -x[2])
            for x in recent:
                if len(chosen) >= limit:
                    break
                if x[2] not in taken:
                    chosen.append(x)
                    taken.add(x[2])
        return sorted(chosen, key=lambda x: x[2])

    def get_state(self) -> dict[str, Any]:
        return {"settings": self.settings(), "seq": self._seq,
                "configs_started": self._configs_started,
                "rungs": [[s, k, rung.get_state()] for (s, k), rung in self._rungs.items()]}

    def set_state(self, state: dict[str, Any]) -> None:
        if state["settings"] != self.settings():
            raise ValueError(
                f"saved ASHA state has settings {state['settings']}, "
                f"but this ladder was built with {self.settings()}")
        self._seq = int(state["seq"])
        self._configs_started = int(state["configs_started"])
        for s, k, rung_state in state["rungs"]:
            self._rungs[(int(s), int(k))] = Rung.from_state(rung_state)
