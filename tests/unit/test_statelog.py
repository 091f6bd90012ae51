"""The search state log: checksummed ordered lines, torn tail dropped, damage named."""

from __future__ import annotations

import os

import pytest

from tuners import faults
from tuners.distributed.statelog import (
    LOG_FILE,
    StateLog,
    StateLogError,
    StateLogWarning,
    read_log,
)


def test_appends_are_ordered_and_read_back(tmp_path):
    with StateLog(str(tmp_path)) as log:
        first = log.append({"kind": "create", "trial_id": "00"})
        batch = log.append({"kind": "record", "n": 1}, {"kind": "record", "n": 2})
        assert log.appends == 2
    assert [e["seq"] for e in first + batch] == [1, 2, 3]
    entries, size = read_log(str(tmp_path / LOG_FILE))
    assert [(e["seq"], e.get("n")) for e in entries] == [(1, None), (2, 1), (3, 2)]
    assert size == os.path.getsize(tmp_path / LOG_FILE)
    with StateLog(str(tmp_path)) as again:  # reopened: seq goes on
        assert again.append({"kind": "x"})[0]["seq"] == 4


def test_a_torn_last_line_is_dropped_and_cut_off(tmp_path):
    with StateLog(str(tmp_path)) as log:
        log.append({"kind": "a"}, {"kind": "b"})
    path = tmp_path / LOG_FILE
    good = path.read_bytes()
    path.write_bytes(good + b'1234abcd {"seq":3,"ki')  # the writer died mid-line
    with pytest.warns(StateLogWarning, match="torn last line 3"):
        with StateLog(str(tmp_path)) as log:
            assert [e["kind"] for e in log.entries] == ["a", "b"]
            log.append({"kind": "c"})
    assert path.read_bytes().startswith(good)
    assert [e["kind"] for e in read_log(str(path))[0]] == ["a", "b", "c"]


def test_a_corrupt_last_line_is_dropped_but_a_corrupt_middle_line_is_an_error(tmp_path):
    with StateLog(str(tmp_path)) as log:
        log.append({"kind": "a"}, {"kind": "b"}, {"kind": "c"})
    path = tmp_path / LOG_FILE
    lines = path.read_bytes().split(b"\n")
    last = lines[2].replace(b'"c"', b'"x"')  # checksum no longer matches
    path.write_bytes(b"\n".join([lines[0], lines[1], last, b""]))
    with pytest.warns(StateLogWarning, match="corrupt last line 3"):
        assert len(read_log(str(path))[0]) == 2
    middle = lines[1].replace(b'"b"', b'"y"')
    path.write_bytes(b"\n".join([lines[0], middle, lines[2], b""]))
    with pytest.raises(StateLogError, match=rf"{LOG_FILE}: line 2 is corrupt \(checksum"):
        read_log(str(path))


def test_seq_out_of_order_is_an_error(tmp_path):
    with StateLog(str(tmp_path)) as log:
        log.append({"kind": "a"}, {"kind": "b"})
    path = tmp_path / LOG_FILE
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join([lines[1], lines[0], b""]))
    with pytest.raises(StateLogError, match="line 2: seq 1 does not follow seq 2"):
        read_log(str(path))


def test_one_writer_at_a_time(tmp_path):
    with StateLog(str(tmp_path)):
        with pytest.raises(StateLogError, match="another process is writing"):
            StateLog(str(tmp_path))


@pytest.mark.parametrize("window", ["log.append", "log.append+"])
def test_fault_points_around_an_append(tmp_path, window):
    faults.plan({window: 2})
    try:
        log = StateLog(str(tmp_path))
        log.append({"kind": "a"})
        with pytest.raises(faults.FaultInjected):
            log.append({"kind": "b"})
        log.close()
    finally:
        faults.plan(None)
    kinds = [e["kind"] for e in read_log(str(tmp_path / LOG_FILE))[0]]
    assert kinds == (["a"] if window == "log.append" else ["a", "b"])


def test_group_commit_one_fsync_covers_everything_written_before_it(tmp_path):
    with StateLog(str(tmp_path)) as log:
        log.append({"kind": "a"}, sync=False)
        log.append({"kind": "b"}, sync=False)
        assert (log.seq, log.synced, log.fsyncs) == (2, 0, 0)
        log.sync()
        log.sync()  # nothing new: no second fsync
        assert (log.synced, log.fsyncs) == (2, 1)
        log.append({"kind": "c"})  # sync=True: forced at once
        assert (log.synced, log.fsyncs, log.appends) == (3, 2, 3)
