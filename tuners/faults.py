"""Named fault points: crash at the k-th write of a kind (crash tests only).

Every write of search state calls :func:`fault_point` twice, just before the write
(``<kind>``) and just after it (``<kind>+``), so both crash windows around each write can be
hit deterministically. Two ways to plan a crash:

- ``MLPF_FAULT=<point>:<k>`` (several separated by commas) in the environment: the k-th pass
  sends SIGKILL to the process -- no handler, no flush, no cleanup, exactly as a node that
  dies (the subprocess suite, ``tests/integration/test_fault_points.py``);
- :func:`plan` ``({"<point>": k})`` in-process: the k-th pass raises :class:`FaultInjected`
  (a ``BaseException``, so no ``except Exception`` on the way swallows it); the caller then
  drops the objects that crashed and rebuilds them from disk, as a restart would (the fast
  suite, ``tests/integration/test_fault_suite.py``).

Unset (the normal case) a pass costs one dict lookup.

Points (see :data:`POINTS`): the chief's appends to the search state log (``log.append``,
:mod:`tuners.distributed.statelog`), the oracle's state writes (``oracle.save``:
keras-tuner's files or the ASHA journal line), and a stand-in worker's ``trial_end`` record
(``worker.record_end``) and end call (``worker.end_call``).
"""

from __future__ import annotations

import os
import signal

FAULT_ENV = "MLPF_FAULT"
POINTS = ("log.append", "oracle.save", "worker.record_end", "worker.end_call")

_plan: dict[str, int] | None = None
_counts: dict[str, int] = {}
_raise = False


class FaultInjected(BaseException):
    """A planned in-process crash at a fault point (see :func:`plan`)."""

    def __init__(self, point: str, count: int):
        super().__init__(f"fault injected at {point} (pass {count})")
        self.point = point


def parse(text: str) -> dict[str, int]:
    """``"a:2,b+:1"`` -> {"a": 2, "b+": 1}; ValueError naming a bad entry."""
    result: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.rpartition(":")
        if not sep or name.rstrip("+") not in POINTS or not count.isdigit() or int(count) < 1:
            raise ValueError(f"{FAULT_ENV}: {item!r} is not <point>[+]:<k> with k >= 1 and a "
                             f"point in {', '.join(POINTS)}")
        result[name] = int(count)
    return result


def plan(points: dict[str, int] | None) -> None:
    """In-process plan: the k-th pass through each named point raises :class:`FaultInjected`
    (counts start from zero). ``None`` or ``{}`` clears it (and the environment is read again
    at the next pass)."""
    global _plan, _raise
    _counts.clear()
    if not points:
        _plan, _raise = None, False
        return
    _plan = parse(",".join(f"{name}:{k}" for name, k in points.items()))
    _raise = True


def passes(name: str) -> int:
    """How many times ``name`` was passed since the plan was made (planned points only)."""
    return _counts.get(name, 0)


def fault_point(name: str) -> None:
    """Count a pass through ``name``; crash if it is the planned one (SIGKILL, or
    :class:`FaultInjected` under an in-process :func:`plan`)."""
    global _plan
    if _plan is None:
        _plan = parse(os.environ.get(FAULT_ENV, ""))
    if not _plan or name not in _plan:
        return
    _counts[name] = _counts.get(name, 0) + 1
    if _counts[name] == _plan[name]:
        if _raise:
            raise FaultInjected(name, _counts[name])
        os.kill(os.getpid(), signal.SIGKILL)
