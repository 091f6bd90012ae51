"""Recording a curve table: shards, resuming, merging with checks, manifest, measured costs."""

import json

import numpy as np
import pytest

from benchmark import experiments
from benchmark.sim import record
from benchmark.sim.curves import CurveError, load_curves, table_frame


class FakeResult:
    def __init__(self, losses, seconds):
        self.history = [{"epoch": i, "val_loss": v} for i, v in enumerate(losses)]
        self.epoch_seconds = seconds


def fake_train(data_cfg, model_cfg, train_cfg, *, run_dir, initial_epoch, epochs, context,
               on_epoch_end):
    # epoch 1 ranks the configurations by lr, the later epochs in the reverse order
    lr = train_cfg.lr
    losses = [1e3 * lr if e == 1 else 1e-3 / lr + 1.0 / e for e in range(1, epochs + 1)]
    return FakeResult(losses, [5.0] + [1.0] * (epochs - 1))  # epoch 1 traces: +4 s


def test_record_a_sharded_table_resume_it_merge_it_and_read_the_manifest(tmp_path):
    shard_files = [str(tmp_path / f"s{i}.csv") for i in range(2)]
    logs = []
    for i, path in enumerate(shard_files):
        record.record("smoke", "reduced", 5, 3, 7, path, train_fn=fake_train, log=logs.append,
                      shard=(i, 2), command=f"record --shard={i}/2")
    ids = [sorted(set(table_frame(p)[1].config_id)) for p in shard_files]
    assert ids == [["c000", "c002", "c004"], ["c001", "c003"]]
    header, frame = table_frame(shard_files[0])
    assert header["shard"] == "0/2" and header["configs"] == 5 and header["epochs"] == 3
    assert header["model"]["hidden_dim"] == experiments.get("smoke").overrides["model"][
        "hidden_dim"] and "data_dir" not in header["data"]
    # tracing moved out of epoch 1 into the setup: epoch seconds 1, setup >= 4
    assert frame.epoch_seconds.tolist() == [1.0] * 9
    assert (frame.setup_seconds >= 4.0).all() and (frame.setup_seconds < 5.0).all()
    assert (frame.restore_seconds == frame.setup_seconds).all()  # no model: no load time
    # resuming a shard skips what is done; another shard's settings are refused
    logs.clear()
    record.record("smoke", "reduced", 5, 3, 7, shard_files[1], train_fn=fake_train,
                  log=logs.append, shard=(1, 2))
    assert logs == ["c001: already recorded", "c003: already recorded"]
    with pytest.raises(CurveError, match=r"s1.csv: recorded with another epochs \(3, now 4\)"):
        record.record("smoke", "reduced", 5, 4, 7, shard_files[1], train_fn=fake_train,
                      shard=(1, 2))
    # merge: compressed table + manifest
    out = str(tmp_path / "table.csv.gz")
    manifest = record.merge(shard_files, out, log=logs.append)
    table = load_curves(out)
    assert [c.config_id for c in table.curves] == [f"c00{i}" for i in range(5)]
    assert table.header["shard"] == "0/1" and table.recorded_epochs == 3
    on_disk = json.loads(open(tmp_path / "table.manifest.json").read())
    assert on_disk == manifest
    assert manifest["configurations"] == 5 and manifest["epochs"] == 3
    assert manifest["command"] == "record --shard=0/2 ; record --shard=1/2"
    assert manifest["size_bytes"] == (tmp_path / "table.csv.gz").stat().st_size
    assert manifest["median_epoch_seconds"] == 1.0
    assert 4.0 <= manifest["median_setup_seconds"] < 5.0
    assert manifest["code_version"] == header["code_version"]
    # epoch 1 ranks the configurations exactly in reverse of the final epoch's ranks
    losses = np.array([c.losses for c in table.curves])
    assert np.array_equal(np.argsort(losses[:, 0]), np.argsort(-losses[:, 2]))
    assert manifest["spearman_vs_final"] == {"1": -1.0}  # k < 3 epochs only


def test_merge_refuses_shards_that_do_not_belong_together(tmp_path):
    a, b = str(tmp_path / "a.csv"), str(tmp_path / "b.csv")
    record.record("smoke", "reduced", 4, 2, 7, a, train_fn=fake_train, shard=(0, 2),
                  log=lambda _: None)
    record.record("smoke", "reduced", 4, 2, 8, b, train_fn=fake_train, shard=(1, 2),
                  log=lambda _: None)
    with pytest.raises(CurveError, match=r"b.csv disagrees with .*a.csv on seed \(8 vs 7\)"):
        record.merge([a, b], str(tmp_path / "m.csv"))
    with pytest.raises(CurveError, match=r"shards 0/2 do not cover 0/2 .. 1/2 exactly once"):
        record.merge([a], str(tmp_path / "m.csv"))
    with pytest.raises(CurveError, match=r"--shard=2/2: need 0 <= i < n"):
        record.parse_shard("2/2")


@pytest.mark.slow
def test_a_tiny_real_recording_measures_costs_memory_and_parameters(tmp_path):
    """Two configurations x two epochs of the tiny model, in this process (about a minute)."""
    out = str(tmp_path / "tiny.csv.gz")
    overrides = experiments.tiny_overrides(str(tmp_path / "data"))
    rows = record.record("smoke", "reduced", 2, 2, 1, out, threads=1, overrides=overrides,
                         log=lambda _: None)
    table = load_curves(out)
    assert len(table.curves) == 2 and table.recorded_epochs == 2
    first = {r["config_id"]: r for r in rows}
    for row in first.values():
        assert row["setup_seconds"] > 0 and row["restore_seconds"] > row["setup_seconds"]
        assert row["params"] > 100 and row["peak_memory_mb"] > 50
    manifest = json.loads(open(record.manifest_path(out)).read())
    assert manifest["configurations"] == 2 and manifest["median_setup_seconds"] > 0


def test_the_curves_experiment_is_the_reference_model_scaled_on_local_ttbar_events():
    """What the shipped table is recorded on: the reference model with its widths divided by
    CURVES_WIDTH_DIVISOR (depths, activation and loss weights kept), ttbar events padded to the
    reduced space's LOCAL_PADDING, the reference's Delphes training for the preset's epochs."""
    from mlpf_tf.model.config import DELPHES_REFERENCE
    from tuners.space import LOCAL_PADDING, scaled_bin_size

    over = experiments.get("curves").overrides
    div = experiments.CURVES_WIDTH_DIVISOR
    assert div > 1
    model = over["model"]
    for width in ("distance_dim", "output_dim", "head_hidden_dim", "ffn_dist_hidden_dim"):
        assert model[width] * div == DELPHES_REFERENCE[width]
    for kept in ("variant", "num_graph_layers_common", "num_graph_layers_energy",
                 "activation", "pt_loss_weight", "max_num_bins"):
        assert model[kept] == DELPHES_REFERENCE[kept]
    assert model["bin_size"] == scaled_bin_size(160)
    data = over["data"]
    assert (data["config"], data["max_elements"]) == ("ttbar", LOCAL_PADDING)
    assert over["train"]["lr_schedule"] == "exponential"
    assert over["search"]["max_epochs"] == experiments.DELPHES_SETTINGS.max_epochs == 100
    assert over["search"]["space"] == "reduced"
