"""Append-only JSON-lines journal of oracle state changes, and atomic snapshot files.

Why: keras-tuner rewrites the whole ``oracle.json`` on every ``create_trial`` / ``end_trial``,
which costs O(number of trials) per call. A journal line per state change costs O(1); a
snapshot written now and then (atomically, by rename) keeps reloading fast.

File format (``oracle.journal.jsonl``): one JSON object per line, each ending in ``"\\n"``.
The first line is a header ``{"op": "header", "journal_id": ..., ...}``; every later line
carries ``"n"``, the running number of the state change (1, 2, ...). Lines are written with
one ``write`` call and flushed to the operating system at once (a killed process loses
nothing already returned to a caller); with ``fsync=True`` each line is also forced to disk
(survives a power loss, at a few milliseconds per line).

Reading tolerates exactly one kind of damage, the one a crash during a write leaves: a last
line that is incomplete (no newline, or not valid JSON). It is dropped and the file truncated
to its last complete line before new lines are appended. Damage anywhere else is an error
naming the file and line.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from mlpf_tf.configbase import atomic_write_text
from tuners.faults import fault_point

FORMAT = 1


def plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays (metrics reported by Keras)."""
    if hasattr(value, "item") and callable(value.item):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"value {value!r} of type {type(value).__name__} is not JSON serialisable")


def dumps(obj: Any) -> str:
    """Compact JSON text (numpy scalars become Python numbers)."""
    return json.dumps(obj, separators=(",", ":"), default=plain)


class JournalError(ValueError):
    """A journal or snapshot that cannot be replayed (damaged, or from another search)."""


class JournalWriter:
    """Appends records to a journal file, one flushed line per record.

    Args:
        path: the journal file.
        header: fields of the header line (settings checked on reload); used when the file
            is created.
        fsync: force every line to disk (``os.fsync``) as well as flushing it.
        fresh: start a new journal even if ``path`` exists (a new search in the same
            directory); otherwise append to it, first cutting an incomplete last line.
    """

    def __init__(self, path: str, header: dict[str, Any] | None = None, *,
                 fsync: bool = False, fresh: bool = False, valid_size: int | None = None,
                 journal_id: str | None = None) -> None:
        self.path = path
        self.fsync = fsync
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        if fresh or not os.path.exists(path):
            self.journal_id = journal_id or uuid.uuid4().hex
            line = dumps({"op": "header", "format": FORMAT, "journal_id": self.journal_id,
                          **(header or {})}) + "\n"
            self._fh = open(path, "w", encoding="utf-8")  # noqa: SIM115 (kept open)
            self._fh.write(line)
            self._sync()
            self.size = len(line.encode("utf-8"))
        else:
            if journal_id is None:
                raise ValueError("appending to an existing journal needs its journal_id")
            self.journal_id = journal_id
            self._fh = open(path, "r+", encoding="utf-8")  # noqa: SIM115 (kept open)
            if valid_size is not None:
                self._fh.truncate(valid_size)
            self._fh.seek(0, os.SEEK_END)
            self.size = self._fh.tell()

    def _sync(self) -> None:
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())

    def append(self, record: dict[str, Any]) -> None:
        """Write one record as one line, flushed (and fsynced when asked) before returning."""
        line = dumps(record) + "\n"
        fault_point("oracle.save")
        self._fh.write(line)
        self._sync()
        fault_point("oracle.save+")
        self.size += len(line) if line.isascii() else len(line.encode("utf-8"))

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()


def read_journal(path: str, offset: int = 0) -> tuple[dict[str, Any] | None,
                                                      list[dict[str, Any]], int]:
    """Header, records from byte ``offset`` on, and the size of the valid prefix of the file.

    The header is read from the start of the file whatever ``offset`` is. An incomplete last
    line is left out (the returned size ends before it). Raises :class:`JournalError` naming
    the file and line for any other damage.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    header = None
    first_end = data.find(b"\n")
    if first_end >= 0:
        header = _parse(path, data[:first_end], 1, last=False)
        if header.get("op") != "header":
            raise JournalError(f"{path}: line 1 is not a journal header: {header!r:.200}")
    start = max(offset, first_end + 1 if first_end >= 0 else 0)
    if start > len(data):
        raise JournalError(f"{path}: the snapshot refers to byte {offset}, but the journal has "
                           f"only {len(data)} bytes")
    records: list[dict[str, Any]] = []
    pos = start
    line_no = data.count(b"\n", 0, start) + 1
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:  # no newline: a write cut short by a crash
            break
        last = end + 1 == len(data)
        record = _parse(path, data[pos:end], line_no, last=last)
        if record is None:  # a complete but unreadable last line: also a torn write
            break
        records.append(record)
        pos = end + 1
        line_no += 1
    return header, records, pos if first_end >= 0 else 0


def _parse(path: str, raw: bytes, line_no: int, last: bool) -> dict[str, Any] | None:
    try:
        record = json.loads(raw)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
        return record
    except ValueError as err:
        if last:
            return None
        raise JournalError(f"{path}: line {line_no} is damaged ({err}); only an incomplete "
                           "last line can be dropped") from None


def write_atomic(path: str, text: str, fsync: bool = False) -> None:
    """Write ``text`` to a temporary file next to ``path`` and rename it over ``path``."""
    atomic_write_text(path, text, fsync=fsync)
