"""tuners.mllog: exact line format, append-only writing, tolerant parsing, node-hours."""

import json
import math

import pytest

from tuners import mllog


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_line_format_is_mlperf_logging(tmp_path):
    clock = Clock(1700000000.25)
    log = mllog.MLLogger(tmp_path / "mllog.txt", clock=clock)
    log.start(mllog.RUN_START, metadata={"search_id": "s1"})
    log.event(mllog.NUMBER_OF_NODES, 4)
    lines = (tmp_path / "mllog.txt").read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(":::MLLOG {")
    body = json.loads(lines[0][len(":::MLLOG "):])
    assert body == {"namespace": "", "time_ms": 1700000000250, "event_type": "INTERVAL_START",
                    "key": "run_start", "value": None, "metadata": {"search_id": "s1"}}
    body = json.loads(lines[1].split(" ", 1)[1])
    assert (body["event_type"], body["key"], body["value"]) == ("POINT_IN_TIME",
                                                                "number_of_nodes", 4)


def test_round_trip_and_truncated_last_line(tmp_path):
    path = tmp_path / "mllog.txt"
    log = mllog.MLLogger(path, clock=Clock(10.0))
    log.event(mllog.EVAL_LOSS, 0.5, metadata={"trial_id": "t1", "epoch_num": 3})
    with open(path, "a") as fh:
        fh.write("some other output line\n")
        fh.write(':::MLLOG {"namespace": "", "time_ms": 11000, "event_ty')
    with pytest.warns(mllog.MLLogWarning, match=r"mllog\.txt: truncated last line skipped"):
        events = mllog.read_mllog(path)
    assert events == [mllog.MLLogEvent(key="eval_loss", value=0.5, time_ms=10000,
                                       metadata={"trial_id": "t1", "epoch_num": 3})]


def test_bare_json_lines_are_accepted():
    e = mllog.parse_line('{"time_ms": 5, "event_type": "INTERVAL_END", "key": "run_stop",'
                         ' "value": null}')
    assert (e.key, e.time_ms, e.event_type, e.metadata) == ("run_stop", 5, "INTERVAL_END", {})
    with pytest.raises(ValueError, match="unknown event_type 'X'"):
        mllog.parse_line(':::MLLOG {"time_ms": 5, "event_type": "X", "key": "a"}')


def _write(path, entries):
    log = mllog.MLLogger(path)
    for kind, key, value, t, meta in entries:
        getattr(log, kind)(key, value, metadata=meta, time_ms=int(t * 1000))


def test_segments_node_changes_and_trial_node_hours(tmp_path):
    path = tmp_path / "mllog.txt"
    _write(path, [
        ("event", mllog.NUMBER_OF_NODES, 2, 0, None),
        ("event", mllog.ACCELERATORS_PER_NODE, 4, 0, None),
        ("start", mllog.RUN_START, None, 0, None),
        ("start", mllog.TRIAL_START, None, 0, {"trial_id": "a", "nodes": 1}),
        ("end", mllog.TRIAL_STOP, None, 1800, {"trial_id": "a", "nodes": 1}),
        ("event", mllog.NUMBER_OF_NODES, 4, 3600, None),      # grew to 4 nodes after 1 h
        ("end", mllog.RUN_STOP, None, 7200, {"status": "success"}),
        ("start", mllog.RUN_START, None, 10800, None),        # resumed after a 1 h gap
        ("end", mllog.RUN_STOP, None, 12600, None),
    ])
    timing = mllog.run_timing(mllog.read_mllog(path), str(path))
    # 1 h x 2 nodes + 1 h x 4 nodes + 0.5 h x 4 nodes
    assert timing.allocated_node_hours == pytest.approx(8.0)
    assert timing.wall_seconds == pytest.approx(9000.0)
    assert timing.complete
    assert (timing.nodes, timing.accelerators_per_node) == (4.0, 4.0)
    assert timing.trial_node_hours == {"a": pytest.approx(0.5)}
    assert timing.allocated_node_hours_until(5400) == pytest.approx(1.0 * 2 + 0.5 * 4)
    assert timing.elapsed_seconds(11700) == pytest.approx(7200 + 900)


def test_unclosed_run_counts_until_last_event_and_warns(tmp_path):
    path = tmp_path / "mllog.txt"
    _write(path, [("start", mllog.RUN_START, None, 100, None),
                  ("event", mllog.NUMBER_OF_NODES, 3, 100, None),
                  ("event", mllog.EVAL_LOSS, 1.0, 100 + 1200, None)])
    with pytest.warns(mllog.MLLogWarning, match="no run_stop"):
        timing = mllog.run_timing(mllog.read_mllog(path), str(path))
    assert not timing.complete
    assert timing.allocated_node_hours == pytest.approx(1200 * 3 / 3600)


def test_missing_nodes_or_start_is_an_error_naming_the_file(tmp_path):
    path = tmp_path / "mllog.txt"
    _write(path, [("start", mllog.RUN_START, None, 0, None),
                  ("end", mllog.RUN_STOP, None, 10, None)])
    with pytest.raises(mllog.MLLogError, match=r"mllog\.txt: no number_of_nodes record"):
        mllog.run_timing(mllog.read_mllog(path), str(path))
    assert math.isclose(mllog.run_timing(mllog.read_mllog(path), str(path),
                                         default_nodes=2).allocated_node_hours, 20 / 3600)
    with pytest.raises(mllog.MLLogError, match="x.txt: no run_start record"):
        mllog.run_timing([], "x.txt")
    with pytest.raises(mllog.MLLogError, match="number_of_nodes must be a positive number"):
        mllog.run_timing([mllog.MLLogEvent("number_of_nodes", 0, 0)], "x.txt")
