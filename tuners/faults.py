"""Named fault points: kill this process at the k-th write of a kind (crash tests only).

``MLPF_FAULT=<point>:<k>`` (several separated by commas) makes the k-th pass through
:func:`fault_point` ``(<point>)`` send SIGKILL to the process: no handler, no flush, no
cleanup, exactly as a node that dies. Every write of search state calls it twice, just before
the write (``<kind>``) and just after it (``<kind>+``), so both crash windows around each write
can be hit deterministically. Unset (the normal case) it costs one dict lookup.

Points (see :data:`POINTS`): the chief's ``trial_end`` records for lost workers
(``chief.record_end``), its re-issue state (``chief.state``), the oracle's state writes
(``oracle.save``: keras-tuner's files or the ASHA journal line), and a stand-in worker's own
``trial_end`` record (``worker.record_end``) and end call (``worker.end_call``).
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "MLPF_FAULT"
POINTS = ("chief.record_end", "chief.state", "oracle.save", "worker.record_end",
          "worker.end_call")

_plan: dict[str, int] | None = None
_counts: dict[str, int] = {}


def parse(text: str) -> dict[str, int]:
    """``"a:2,b+:1"`` -> {"a": 2, "b+": 1}; ValueError naming a bad entry."""
    plan: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.rpartition(":")
        if not sep or name.rstrip("+") not in POINTS or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{FAULT_ENV}: {item!r} is not <point>[+]:<k> with k >= 1 and a "
                             f"point in {', '.join(POINTS)}")
        plan[name] = int(count)
    return plan


def fault_point(name: str) -> None:
    """Count a pass through ``name``; SIGKILL this process if it is the planned one."""
    global _plan
    if _plan is None:
        _plan = parse(os.environ.get(FAULT_ENV, ""))
    if not _plan or name not in _plan:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == _plan[name]:
        os.kill(os.getpid(), signal.SIGKILL)
