"""trials.jsonl: append-only writes, truncated-line tolerance, argument checks."""

import json

import pytest

from tuners.records import RecordWarning, TrialRecorder, node_hours, read_records


def test_append_and_read_back(tmp_path):
    clock = iter([10.0, 20.0, 30.0]).__next__
    rec = TrialRecorder(tmp_path, search_id="s1", worker_id="w0", clock=clock)
    rec.append("trial_start", "t1", parent_id=None, hyperparameters={"lr": 1e-3}, rung=0,
               initial_epoch=0, target_epochs=2, nodes=1, ranks=2)
    rec.append("epoch", "t1", epoch=1, metrics={"val_loss": 0.5}, wall_seconds=36.0,
               nodes=0.5, ranks=2, node_hours=node_hours(36.0, 0.5))
    rec.append("trial_end", "t1", status="COMPLETED", metrics={"val_loss": 0.4})
    records = list(read_records(tmp_path / "trials.jsonl"))
    assert [r["event"] for r in records] == ["trial_start", "epoch", "trial_end"]
    assert [r["time"] for r in records] == [10.0, 20.0, 30.0]
    assert records[1]["node_hours"] == pytest.approx(0.005)
    assert all(r["search_id"] == "s1" and r["v"] == 1 for r in records)


def test_truncated_last_line_is_skipped_with_warning(tmp_path):
    rec = TrialRecorder(tmp_path, search_id="s")
    rec.append("trial_end", "t1", status="FAILED", error="boom")
    path = tmp_path / "trials.jsonl"
    with open(path, "a") as fh:
        fh.write(json.dumps({"event": "epoch", "trial_id": "t2"})[:15])
    with pytest.warns(RecordWarning, match=r"trials.jsonl: truncated last line skipped"):
        records = list(read_records(path))
    assert [r["trial_id"] for r in records] == ["t1"]


def test_bad_middle_line_named(tmp_path):
    path = tmp_path / "trials.jsonl"
    path.write_text('{"event": "epoch", "trial_id": "1"}\nnot json\n'
                    '{"event": "trial_end", "trial_id": "1", "status": "COMPLETED"}\n')
    with pytest.warns(RecordWarning, match=r"unreadable line 2 skipped"):
        records = list(read_records(path))
    assert len(records) == 2


def test_bad_event_and_status_rejected(tmp_path):
    rec = TrialRecorder(tmp_path, search_id="s")
    with pytest.raises(ValueError, match="unknown record event 'start'"):
        rec.append("start", "t1")
    with pytest.raises(ValueError, match="trial_end needs status"):
        rec.append("trial_end", "t1", status="DONE")
