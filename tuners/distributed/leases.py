"""Leases on running trials: which worker holds which trial, and since when it was last heard.

A distributed search must notice a worker that died mid-trial, or its trial stays RUNNING in the
oracle forever and the search never ends. Every trial handed to a worker is leased to it; the
worker renews its leases by heartbeats (and by any other call); a lease not renewed within
``timeout`` seconds expires, and the chief then fails the trial and re-issues its values.

A lease disappears when the trial is ended (:meth:`LeaseTable.release`). There is no
"ending" state: a worker's ``trial_end`` goes to the chief's state log while it holds the
lease, so a lease that expires after that is ended with the logged end (never a second,
FAILED end and a re-run).

Liveness by progress: heartbeats carry the worker's progress counter (batches or epochs
done); a lease whose counter has not moved for ``stall_timeout`` seconds is a hung trial
(:meth:`LeaseTable.pop_stalled`), whether or not its heartbeats still come.

Pure Python, no I/O, no threads: the chief serialises access with its own lock. The clock is
injectable so tests drive time by hand.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable


class LeaseError(RuntimeError):
    """A worker acted on a trial it does not hold (expired, ended, or leased to another)."""


@dataclasses.dataclass
class Lease:
    """One running trial held by one worker."""

    trial_id: str
    worker: str
    values: dict
    granted: float  # clock time the lease was granted
    renewed: float  # clock time of the last heartbeat or call from the worker
    wall_start: float  # unix time the lease was granted (for records)
    metrics: dict = dataclasses.field(default_factory=dict)  # last reported by the worker
    step: int | None = None  # epoch of the last report
    progress: int = 0  # the worker's progress counter (batches/epochs done), from heartbeats
    progressed: float = 0.0  # clock time the counter last moved (or the lease was granted)

    def age(self, now: float) -> float:
        return now - self.granted


class LeaseTable:
    """Leases by trial id; expiry after ``timeout`` seconds without renewal.

    Args:
        timeout: seconds a lease lives without a heartbeat (> 0).
        clock: monotonic time source (``time.monotonic``); tests pass a fake.
        wall_clock: unix time source for the lease's start time in records.
    """

    def __init__(self, timeout: float, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise ValueError(f"lease timeout must be a finite number of seconds > 0, "
                             f"got {timeout!r}")
        self.timeout = float(timeout)
        self.clock = clock
        self.wall_clock = wall_clock
        self._leases: dict[str, Lease] = {}
        self._by_worker: dict[str, set[str]] = {}  # worker -> its trial ids (O(1) lookups)

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, trial_id: str) -> bool:
        return trial_id in self._leases

    def get(self, trial_id: str) -> Lease | None:
        return self._leases.get(trial_id)

    def leases(self) -> list[Lease]:
        """All current leases, oldest first."""
        return sorted(self._leases.values(), key=lambda lease: lease.granted)

    def held_by(self, worker: str) -> list[Lease]:
        """The leases ``worker`` holds, oldest first."""
        held = [self._leases[t] for t in self._by_worker.get(worker, ())]
        return sorted(held, key=lambda lease: lease.granted)

    def _drop(self, trial_id: str) -> Lease | None:
        lease = self._leases.pop(trial_id, None)
        if lease is not None:
            mine = self._by_worker.get(lease.worker)
            if mine is not None:
                mine.discard(trial_id)
                if not mine:
                    del self._by_worker[lease.worker]
        return lease

    def grant(self, trial_id: str, worker: str, values: dict) -> Lease:
        """Lease ``trial_id`` to ``worker``; LeaseError if another worker holds it."""
        now = self.clock()
        current = self._leases.get(trial_id)
        if current is not None and current.worker != worker:
            raise LeaseError(f"trial {trial_id} is leased to {current.worker}, not {worker}")
        lease = Lease(trial_id=str(trial_id), worker=worker, values=dict(values), granted=now,
                      renewed=now, wall_start=self.wall_clock(), progressed=now)
        self._leases[lease.trial_id] = lease
        self._by_worker.setdefault(worker, set()).add(lease.trial_id)
        return lease

    def renew(self, worker: str) -> list[str]:
        """A heartbeat from ``worker``: renew every lease it holds; their trial ids."""
        now = self.clock()
        renewed = sorted(self._by_worker.get(worker, ()))
        for trial_id in renewed:
            self._leases[trial_id].renewed = now
        return renewed

    def check(self, trial_id: str, worker: str) -> Lease:
        """The lease of ``trial_id`` if ``worker`` holds it (renewed), else LeaseError."""
        lease = self._leases.get(trial_id)
        if lease is None:
            raise LeaseError(f"trial {trial_id} is not leased (it expired or has ended)")
        if lease.worker != worker:
            raise LeaseError(f"trial {trial_id} is leased to {lease.worker}, not {worker}")
        lease.renewed = self.clock()
        return lease

    def advance(self, trial_id: str, progress: int) -> bool:
        """The holder reports its progress counter; True if it moved since the last report."""
        lease = self._leases.get(trial_id)
        if lease is None or int(progress) == lease.progress:
            return False
        lease.progress = int(progress)
        lease.progressed = self.clock()
        return True

    def pop_stalled(self, stall_timeout: float) -> list[Lease]:
        """Remove and return the leases whose progress has not moved for ``stall_timeout``
        seconds (renewed or not), oldest first."""
        now = self.clock()
        stalled = [lease for lease in self._leases.values()
                   if now - lease.progressed > stall_timeout]
        for lease in stalled:
            self._drop(lease.trial_id)
        return sorted(stalled, key=lambda lease: lease.granted)

    def release(self, trial_id: str) -> Lease | None:
        """The trial ended: drop its lease (None if there was none)."""
        return self._drop(str(trial_id))

    def pop_expired(self) -> list[Lease]:
        """Remove and return the leases not renewed for ``timeout`` seconds, oldest first."""
        now = self.clock()
        expired = [lease for lease in self._leases.values()
                   if now - lease.renewed > self.timeout]
        for lease in expired:
            self._drop(lease.trial_id)
        return sorted(expired, key=lambda lease: lease.granted)

    def next_expiry(self) -> float | None:
        """Seconds until the next lease would expire without renewal (None if no lease)."""
        if not self._leases:
            return None
        now = self.clock()
        return max(0.0, min(lease.renewed for lease in self._leases.values())
                   + self.timeout - now)
