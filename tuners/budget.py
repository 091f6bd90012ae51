"""The node-hour budget of a search, charged on allocated node-hours.

Allocated node-hours are every node the search holds (worker nodes, and the chief's when it has
one of its own) times the wall time it holds them, idle or not: model building, tracing,
checkpoint restores, workers waiting for a Hyperband round and the chief are all paid for. The
reports use the same quantity as their headline axis (from the run log's ``run_start`` /
``run_stop`` segments, :mod:`tuners.mllog`), so a budget and the axis it is judged on agree.

The issuer of trials (the Horovod tuner of a one-group search, the chief of a distributed one)
asks :meth:`AllocationBudget.spent` before each new trial; trials already running finish, so a
search overruns its budget by at most one trial per worker. A resumed search starts with the
node-hours of its earlier segments (``earlier_node_hours``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class AllocationBudget:
    """Allocated node-hours so far against a budget (0 = none).

    Args:
        budget_node_hours: the budget (0 or None: none; :meth:`spent` is then always False).
        nodes: nodes held by the whole search.
        start: clock value when this segment of the search started (default: now).
        earlier_node_hours: node-hours of earlier segments of a resumed search.
        clock: seconds (``time.time``; a simulated clock in tests and replays).
    """

    def __init__(self, budget_node_hours: float | None, nodes: float, *,
                 start: float | None = None, earlier_node_hours: float = 0.0,
                 clock: Callable[[], float] = time.time):
        budget = float(budget_node_hours or 0.0)
        if not (math.isfinite(budget) and budget >= 0.0):
            raise ValueError(f"node-hour budget must be a finite number >= 0, got "
                             f"{budget_node_hours!r}")
        if not (nodes > 0):
            raise ValueError(f"nodes must be > 0, got {nodes!r}")
        self.budget = budget
        self.nodes = float(nodes)
        self.clock = clock
        self.start = clock() if start is None else float(start)
        self.earlier = float(earlier_node_hours)

    def used(self) -> float:
        """Allocated node-hours from the search's start until now (earlier segments included)."""
        return self.earlier + max(0.0, self.clock() - self.start) * self.nodes / 3600.0

    def left(self) -> float:
        return max(0.0, self.budget - self.used()) if self.budget else math.inf

    def spent(self) -> bool:
        """True once a budget is set and the allocated node-hours reached it."""
        return bool(self.budget) and self.used() >= self.budget


def earlier_node_hours(mllog_path: str | None) -> float:
    """Allocated node-hours of the closed segments of an existing run log (0 if none)."""
    import os
    import warnings

    from tuners import mllog

    if not mllog_path or not os.path.exists(mllog_path):
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            timing = mllog.run_timing(mllog.read_mllog(mllog_path), mllog_path)
        except (OSError, mllog.MLLogError):
            return 0.0
    return float(timing.allocated_node_hours)
