"""The search state log: one ordered, durable, append-only file written by the chief alone.

``<run_dir>/search.log.jsonl`` holds every decision of a distributed search in the order the
chief made it: the trials it leased (``create``: trial id, holder, values) and the records
workers sent over RPC (``record``: ``trial_start`` / ``epoch`` / ``trial_end``, the
:mod:`tuners.records` schema), including the ``trial_end`` the chief writes for a lost worker.
The oracle's state, the leases, the re-issue queue and ``trials.jsonl`` all follow from it;
on resume the chief replays the log, and the oracle's own files are a cache the log wins
against.

Format: one entry per line, ``<crc32 of the JSON, 8 hex digits> <JSON object>``, each entry
with a ``seq`` one higher than the previous one. An append writes its lines with one
``write``, in order, as the chief decides; :meth:`StateLog.sync` then forces everything
written so far to disk, once per call before the chief answers it (group commit: the entries
of one call, e.g. a trial's end and the next trial in ``EndAndCreate``, share one ``fsync``,
and calls that wait for the disk at the same time share one too), so what a worker was told
is on disk, together with everything logged before it. A crash mid-append can only leave the
last line torn: the reader drops a torn or corrupt *last* line (and the writer cuts it off
before appending again); a corrupt line anywhere else, or a ``seq`` out of order, is damage
no crash explains and is an error naming the file and the line.

Why a single-writer append log and not a database: the run directory usually lives on a
network file system shared by the nodes (NFS, Lustre, GPFS). SQLite's WAL mode needs a
shared-memory index (``-shm``, mmap) that only works when every process is on one host, and
its rollback journal relies on POSIX byte-range locks that many network file systems
implement badly or not at all; ``O_APPEND`` from several nodes is not atomic on NFS either.
One process (the chief) appending to one file needs none of that: no locks between nodes, no
shared memory, just ``write`` + ``fsync`` on a file that only it opens for writing. An
exclusive ``flock`` on the log keeps a second chief off the same run directory (on file systems
without working locks it is advisory only).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import warnings
import zlib
from typing import Any

from tuners.faults import fault_point
from tuners.records import json_default

LOG_FILE = "search.log.jsonl"


class StateLogError(RuntimeError):
    """The state log is damaged (not at its tail), or another process is writing it."""


class StateLogWarning(UserWarning):
    """A torn last line of the state log was dropped (the writer crashed mid-append)."""


def encode(entry: dict[str, Any]) -> bytes:
    """One log line: ``<crc32 hex> <JSON>\\n``."""
    text = json.dumps(entry, separators=(",", ":"), default=json_default).encode()
    return b"%08x %s\n" % (zlib.crc32(text), text)


def _decode(raw: bytes) -> dict[str, Any]:
    crc, sep, text = raw.partition(b" ")
    if not sep or len(crc) != 8:
        raise ValueError("no checksum")
    if int(crc, 16) != zlib.crc32(text):
        raise ValueError("checksum mismatch")
    entry = json.loads(text)
    if not isinstance(entry, dict) or not isinstance(entry.get("seq"), int):
        raise ValueError("not a log entry with a seq")
    return entry


def read_log(path: str) -> tuple[list[dict[str, Any]], int]:
    """The entries of the log at ``path`` and the byte length of its good part.

    A torn or corrupt last line is dropped with a :class:`StateLogWarning`; a bad line
    before it, or a ``seq`` that does not increase, raises :class:`StateLogError` naming the
    file and the line.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    entries: list[dict[str, Any]] = []
    good = 0
    lines = data.split(b"\n")
    last_seq = 0
    for lineno, raw in enumerate(lines, start=1):
        if lineno == len(lines):  # what follows the last newline: empty, or a torn line
            if raw:
                warnings.warn(f"{path}: torn last line {lineno} dropped (the writer stopped "
                              "mid-append)", StateLogWarning, stacklevel=2)
            break
        try:
            entry = _decode(raw)
        except ValueError as exc:
            if lineno == len(lines) - 1 and not lines[-1]:
                warnings.warn(f"{path}: corrupt last line {lineno} dropped ({exc})",
                              StateLogWarning, stacklevel=2)
                break
            raise StateLogError(f"{path}: line {lineno} is corrupt ({exc}); the log is "
                                "damaged before its end, which no crash of its writer "
                                "explains") from None
        if entry["seq"] <= last_seq:
            raise StateLogError(f"{path}: line {lineno}: seq {entry['seq']} does not follow "
                                f"seq {last_seq}")
        last_seq = entry["seq"]
        entries.append(entry)
        good += len(raw) + 1
    return entries, good


class StateLog:
    """The chief's handle on ``<run_dir>/search.log.jsonl`` (the only writer).

    Opening reads what is there (:attr:`entries`, for replay), cuts off a torn last line and
    takes an exclusive lock. :meth:`append` writes a batch of entries with one ``write`` (and
    one ``fsync`` unless ``sync=False``); :meth:`sync` forces what was written to disk, shared
    by the threads that wait for it together. ``fsync=False``: never forced (handed to the
    operating system only, which survives a killed process but not a lost machine; tests).
    """

    def __init__(self, run_dir: str, fsync: bool = True):
        self.path = os.path.join(run_dir, LOG_FILE)
        self.fsync = bool(fsync)
        created = not os.path.exists(self.path)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            raise StateLogError(f"{self.path}: another process is writing this search's log "
                                "(is a chief already running on this run directory?)") from None
        try:
            self.entries, self.size = read_log(self.path)
            if os.fstat(self._fd).st_size > self.size:  # a torn tail: cut it off
                os.ftruncate(self._fd, self.size)
                os.fsync(self._fd)
            if created:  # the new file's name must survive a power loss too
                dir_fd = os.open(run_dir, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except BaseException:
            os.close(self._fd)
            raise
        self.seq = self.entries[-1]["seq"] if self.entries else 0
        self.synced = self.seq  # the last seq known to be on disk
        self.appends = 0  # calls of append
        self.fsyncs = 0
        self._sync_lock = threading.Lock()

    def append(self, *entries: dict[str, Any], sync: bool = True) -> list[dict[str, Any]]:
        """Append ``entries`` (each gets the next ``seq``) in one write, then :meth:`sync`
        unless ``sync=False``; returns them stamped. Appends must be serialised by the caller
        (the chief's lock). On a failed write the file is cut back, so no torn line stays."""
        stamped = [{"seq": self.seq + i, **entry} for i, entry in enumerate(entries, start=1)]
        data = b"".join(encode(entry) for entry in stamped)
        fault_point("log.append")
        try:
            view = memoryview(data)
            os.lseek(self._fd, self.size, os.SEEK_SET)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            os.ftruncate(self._fd, self.size)
            raise
        self.size += len(data)
        self.seq += len(stamped)
        self.appends += 1
        if sync:
            self.sync()
        fault_point("log.append+")
        return stamped

    def sync(self) -> None:
        """Force every entry written so far to disk (no-op if already done, or ``fsync``
        is off). Threads may call it without the writer's lock: one ``fsync`` covers all
        that were written before it started, so concurrent callers share it."""
        if not self.fsync or self.synced >= self.seq or self._fd < 0:
            return
        with self._sync_lock:
            target = self.seq  # everything written by now
            if self.synced >= target:
                return  # another thread's fsync covered it
            os.fsync(self._fd)
            self.fsyncs += 1
            self.synced = target

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases the lock
            self._fd = -1

    def __enter__(self) -> StateLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
