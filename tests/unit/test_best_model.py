"""tuners.best_model: the best trial's checkpoint evaluated on the test split into best/."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from benchmark.config import Config, write_params  # noqa: E402
from mlpf_tf.data import schema  # noqa: E402
from reports import physics  # noqa: E402
from tuners import best_model  # noqa: E402
from tuners.records import TrialRecorder  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)

HP = {"lr": 3e-3, "batch_size": 4, "bin_size": 16}


def _config(data_dir: str) -> Config:
    return Config(experiment="test").override({
        "data": {"dataset": "synthetic_pf", "config": "gun", "data_dir": data_dir,
                 "n_train": 16, "n_validation": 4, "n_test": 6, "padding": "fixed",
                 "max_elements": 32, "truncate": True, "shuffle_buffer": 16},
        "model": {"hidden_dim": 8, "distance_dim": 8, "ffn_dist_hidden_dim": 8,
                  "ffn_dist_num_layers": 0, "output_dim": 8, "head_hidden_dim": 8,
                  "head_num_layers": 1, "num_graph_layers_common": 1,
                  "num_graph_layers_energy": 1, "bin_size": 32},
        "train": {"epochs": 1, "batch_size": 8, "checkpoint_every_epochs": 0, "seed": 3},
        "search": {"tuner": "random", "space": "reduced", "max_trials": 3, "max_epochs": 1,
                   "min_epochs": 1},
    })


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A run directory with three trial_end records; trial '01' is the best completed one
    and the only one trained (one epoch, its checkpoint under trials/01/checkpoints)."""
    from mlpf_tf.train import train
    from tuners import hypermodel

    root = tmp_path_factory.mktemp("best")
    run_dir = str(root / "run")
    cfg = _config(str(root / "tfds"))
    os.makedirs(run_dir)
    write_params(cfg, run_dir, search_id="s-test")
    model_cfg, train_cfg = hypermodel.apply_values(HP, cfg.model, cfg.train)
    result = train(cfg.data, model_cfg, train_cfg,
                   run_dir=os.path.join(run_dir, "trials", "01"))
    recorder = TrialRecorder(run_dir, "s-test")
    common = {"initial_epoch": 0, "epochs": 1, "nodes": 1, "ranks": 1, "node_hours": 1e-4}
    recorder.append("trial_end", "00", status="COMPLETED", hyperparameters=HP,
                    metrics={"val_loss": 1e9}, **common)
    recorder.append("trial_end", "01", status="COMPLETED", hyperparameters=HP,
                    metrics={"val_loss": result.final_metrics["val_loss"]}, **common)
    recorder.append("trial_end", "02", status="FAILED", hyperparameters=HP,
                    metrics={"val_loss": -1.0}, error="boom", **common)
    recorder.append("trial_end", "03", status="COMPLETED", hyperparameters=HP,
                    metrics={"val_loss": float("nan")}, **common)
    return run_dir, cfg, result


def test_best_trial_is_the_best_completed_finite_one(trained_run):
    run_dir, _, result = trained_run
    record = best_model.best_trial(run_dir)
    assert record["trial_id"] == "01"
    assert record["metrics"]["val_loss"] == pytest.approx(result.final_metrics["val_loss"])
    assert best_model.best_trial(run_dir, direction="max")["trial_id"] == "00"


def test_writes_predictions_and_physics_in_the_report_format(trained_run):
    from mlpf_tf.data import datasets
    from mlpf_tf.model.evaluate import predict_particles

    run_dir, cfg, result = trained_run
    out = best_model.write_best_physics(run_dir)
    assert best_model.has_best_physics(run_dir)
    assert out["trial_id"] == "01" and out["events"] == 6 and out["checkpoint_epochs"] == 1

    # the events of the test split, in order, truncated to max_elements = 32
    raw = list(datasets.load_split(cfg.data, "test").as_numpy_iterator())
    lengths = [min(len(e["X"]), 32) for e in raw]
    preds = physics.load_predictions(os.path.join(run_dir, "best", "predictions.npz"))
    assert preds.offsets.tolist() == np.concatenate([[0], np.cumsum(lengths)]).tolist()
    with np.load(os.path.join(run_dir, "best", "predictions.npz")) as npz:
        ygen, ycand, pred = npz["ygen"], npz["ycand"], npz["pred"]
    np.testing.assert_array_equal(ygen, np.concatenate([e["ygen"][:32] for e in raw]))
    np.testing.assert_array_equal(ycand, np.concatenate([e["ycand"][:32] for e in raw]))

    # the checkpoint holds the trained weights: same particles as the in-memory model
    X = np.zeros((len(raw), 32, schema.NUM_FEATURES), np.float32)
    for k, e in enumerate(raw):
        X[k, :lengths[k]] = e["X"][:32]
    direct = predict_particles(result.model, X)
    expected = np.concatenate([direct[k, :n] for k, n in enumerate(lengths)])
    np.testing.assert_allclose(pred, expected, rtol=1e-5, atol=1e-5)

    # physics.json holds the numbers the report computes from predictions.npz
    with open(os.path.join(run_dir, "best", "physics.json")) as fh:
        data = json.load(fh)
    tables = physics.physics_tables(preds)
    classes = tables["classes"].set_index(["reco", "class"])
    for reco in ("model", "ycand"):
        for cls, value in data[reco]["efficiency"].items():
            assert value == pytest.approx(classes.loc[(reco, cls), "efficiency"])
        response = tables["response"].set_index(["reco", "observable"])
        assert data[reco]["met_response"]["n"] == response.loc[(reco, "met"), "n"]
        jet = data[reco]["jet_response"]
        assert jet["n"] == response.loc[(reco, "jet_pt"), "n"]
        if jet["n"]:
            assert jet["median"] == pytest.approx(response.loc[(reco, "jet_pt"), "median"])
    # the baseline reconstructs charged hadrons of particle-gun events well
    assert data["ycand"]["efficiency"]["charged_hadron"] > 0.9
    table = physics.physics_json_table(physics.read_physics_json(
        os.path.join(run_dir, "best", "physics.json")))
    assert set(table["reco"]) == {"model", "ycand"}

    # a cap on the events
    capped = best_model.write_best_physics(run_dir, max_events=2)
    assert capped["events"] == 2
    assert physics.load_predictions(
        os.path.join(run_dir, "best", "predictions.npz")).offsets.tolist() == [
        0, lengths[0], lengths[0] + lengths[1]]


def test_predict_events_drops_padding_and_keeps_order():
    """Two events of 3 and 5 elements padded to 8: offsets [0, 3, 8], one row per element."""

    def model(X, training=False):
        b, n = X.shape[0], X.shape[1]
        cls = np.zeros((b, n, schema.NUM_CLASSES), np.float32)
        cls[..., 1] = 1.0  # every element a charged hadron
        ones = np.ones((b, n, 1), np.float32)
        return {"cls": tf.constant(cls), "charge": tf.constant(ones),
                "pt": tf.constant(X[..., 1:2] * 2), "eta": tf.constant(ones),
                "sin_phi": tf.constant(0 * ones), "cos_phi": tf.constant(ones),
                "energy": tf.constant(3 * ones)}

    def event(n, pt):
        X = np.zeros((n, schema.NUM_FEATURES), np.float32)
        X[:, schema.F_TYPE] = 1
        X[:, 1] = pt
        y = np.full((n, schema.NUM_TARGETS), pt, np.float32)
        return X, y, -y

    arrays = best_model.predict_events(model, [event(3, 1.0), event(5, 2.0)], pad_to=8,
                                       batch_size=1)
    assert arrays["offsets"].tolist() == [0, 3, 8]
    assert arrays["pred"].shape == arrays["ygen"].shape == arrays["ycand"].shape == (8, 7)
    assert arrays["pred"][:, schema.T_PT].tolist() == [2.0] * 3 + [4.0] * 5
    assert arrays["ycand"][:, 0].tolist() == [-1.0] * 3 + [-2.0] * 5
    with pytest.raises(best_model.BestModelError, match="no events"):
        best_model.predict_events(model, [], pad_to=8)


def test_errors_name_the_file(tmp_path):
    run_dir = str(tmp_path)
    with pytest.raises(best_model.BestModelError, match="trials.jsonl: no such file"):
        best_model.best_trial(run_dir)
    TrialRecorder(run_dir, "s").append("trial_end", "00", status="FAILED", metrics={})
    with pytest.raises(best_model.BestModelError,
                       match=r"trials.jsonl: no completed trial with a finite val_loss"):
        best_model.best_trial(run_dir)
    with pytest.raises(best_model.BestModelError, match=r"params.yaml: no such file"):
        best_model.write_best_physics(run_dir)
    assert not best_model.has_best_physics(run_dir)
    assert best_model.main(["--run_dir", run_dir]) == 1


def test_physics_metrics_nan_responses_become_null():
    """No particles at all: no jets, no MET entries -> null medians, n = 0, valid JSON."""
    rows = np.zeros((4, schema.NUM_TARGETS))
    out = best_model.physics_metrics({"pred": rows, "ygen": rows, "ycand": rows,
                                      "offsets": np.array([0, 2, 4])})
    assert out["events"] == 2
    assert out["model"]["jet_response"] == {"median": None, "iqr": None, "n": 0}
    assert out["model"]["efficiency"] == {}
    json.dumps(out, allow_nan=False)
    assert not math.isnan(out["jet_ptmin"])
