"""Hyperband on the same rung ladder as ASHA, scored by the last epoch.

keras-tuner's ``HyperbandOracle`` fixes its smallest rung at one epoch (``min_epochs = 1`` is
set in its constructor) and derives the rungs from ``max_epochs / factor**k``, so a comparison
with ASHA at ``--search.min_epochs=5`` would hand Hyperband rungs ASHA never uses. This subclass
keeps keras-tuner's bracket logic (semi-synchronous promotions, IDLE while a round waits) and
changes only the ladder:

- rungs are :func:`tuners.rungs.rung_budgets` ``(min_epochs, max_epochs, eta)`` =
  ``[r_0 = min_epochs, ..., r_K = max_epochs]``, exactly ASHA's;
- there are ``K + 1`` brackets; bracket ``b`` (``b = K .. 0``, keras-tuner's order, ``b``
  halvings) trains round ``r`` (``0..b``) for ``r_{K - b + r}`` epochs, so the most aggressive
  bracket starts at ``min_epochs`` and every bracket ends at ``max_epochs``;
- round sizes are Hyperband's ``ceil((K + 1) / (b + 1) * eta**(b - r))``.

``hyperband_iterations=None`` (or 0) repeats the brackets until a budget outside the oracle
stops the search, so a node-hour budget, not an iteration count, ends a comparison.
With ``min_epochs=1`` and ``max_epochs`` a power of ``eta`` the ladder equals keras-tuner's.
"""

from __future__ import annotations

import keras_tuner

from tuners.rungs import rung_budgets
from tuners.scoring import LastEpochScore


class LadderHyperbandOracle(LastEpochScore, keras_tuner.oracles.HyperbandOracle):
    """keras-tuner's Hyperband with ASHA's rungs and last-epoch scores (see module doc)."""

    def __init__(self, objective=None, max_epochs: int = 100, *, min_epochs: int = 1,
                 factor: int = 3, hyperband_iterations: int | None = None, **kwargs):
        self._budgets = rung_budgets(min_epochs, max_epochs, factor)  # validates the ladder
        super().__init__(objective=objective, max_epochs=max_epochs, factor=factor,
                         hyperband_iterations=hyperband_iterations or None, **kwargs)
        self.min_epochs = min_epochs

    @property
    def rung_epochs(self) -> list[int]:
        """Epoch budgets of the rungs, smallest first (the same list as ASHA's)."""
        return list(self._budgets)

    def _get_num_brackets(self):
        return len(self._budgets)

    def _get_epochs(self, bracket_num, round_num):
        top = len(self._budgets) - 1
        return self._budgets[top - bracket_num + round_num]

    def _get_size(self, bracket_num, round_num):
        brackets = len(self._budgets)
        # ceil without float error: (brackets * factor**halvings) / (bracket_num + 1)
        numerator = brackets * self.factor ** (bracket_num - round_num)
        return -(-numerator // (bracket_num + 1))

    def set_state(self, state):
        super().set_state(state)
        self._budgets = rung_budgets(int(self.min_epochs), int(self.max_epochs),
                                     int(self.factor))
