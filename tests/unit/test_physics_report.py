"""reports.physics on hand-made particles: efficiency, fake rate, resolution, jet and MET response."""

import json
import math
import os

import numpy as np
import pandas as pd
import pytest

from reports import physics, report

try:  # the shared run-directory builder lives in test_rundir.py
    from tests.unit.test_rundir import make_run
except ImportError:  # pytest run outside the repository root
    from test_rundir import make_run


def particle(cls, pt, eta, phi, charge=0.0):
    return [cls, charge, pt, eta, math.sin(phi), math.cos(phi), pt * math.cosh(eta)]


def scaled(event, factor):
    out = np.array(event, dtype=float)
    out[:, 2] *= factor
    out[:, 6] *= factor
    return out


# Two jets well apart (pT about 50 and 40 GeV) and a 3 GeV particle below the 5 GeV jet cut.
EVENT = np.array([particle(1, 30.0, 0.0, 0.0, 1), particle(2, 20.0, 0.1, 0.05),
                  particle(3, 40.0, -1.0, 2.5), particle(1, 3.0, 2.0, -2.0, -1),
                  [0, 0, 0, 0, 0, 0, 0]])


def vector_pt(rows):
    rows = np.asarray(rows)
    return math.hypot((rows[:, 2] * rows[:, 5]).sum(), (rows[:, 2] * rows[:, 4]).sum())


def test_jets_are_clustered_and_scaled_response_is_exact():
    jets = physics.cluster_jets(EVENT)
    assert jets.shape == (2, 3)
    assert jets[0, 0] == pytest.approx(vector_pt(EVENT[:2]))
    assert jets[1, 0] == pytest.approx(40.0)
    assert jets[1, 2] == pytest.approx(2.5)
    resp = physics.jet_response([EVENT, EVENT], [scaled(EVENT, 1.1), scaled(EVENT, 1.1)])
    assert (resp.median, resp.iqr, resp.n) == (pytest.approx(1.1), pytest.approx(0.0), 4)


def test_jet_response_with_a_lost_particle_and_unmatched_jets():
    reco = EVENT.copy()
    reco[1, 0] = 0  # the 20 GeV neutral hadron is not reconstructed
    resp = physics.jet_response([EVENT], [reco])
    lost = 30.0 / vector_pt(EVENT[:2])
    assert sorted(resp.values) == pytest.approx(sorted([lost, 1.0]))
    assert resp.median == pytest.approx((lost + 1.0) / 2)
    assert resp.iqr == pytest.approx((1.0 - lost) / 2)
    moved = EVENT.copy()
    moved[:, 3] += 0.3  # every reco jet 0.3 away in eta: dR >= 0.2, nothing matches
    assert physics.jet_response([EVENT], [moved]).n == 0


def test_match_jets_is_greedy_by_true_pt_and_unique():
    true = np.array([[50.0, 0.0, 0.0], [40.0, 0.05, 0.0]])
    reco = np.array([[45.0, 0.02, 0.0]])
    assert physics.match_jets(true, reco) == [(0, 0)]
    assert physics.match_jets(true, np.zeros((0, 3))) == []
    # phi wraps around: 3.1 and -3.1 are 0.083 apart
    assert physics.match_jets(np.array([[10.0, 0.0, 3.1]]), np.array([[9.0, 0.0, -3.1]])) == [
        (0, 0)]


def test_met_and_met_response():
    event = np.array([particle(1, 10.0, 0.0, 0.0), particle(2, 4.0, 1.0, math.pi)])
    assert physics.met(event) == pytest.approx(6.0)
    assert physics.met_response([event], [scaled(event, 1.1)]).median == pytest.approx(1.1)
    assert physics.met_response([event], [event[:1]]).median == pytest.approx(10.0 / 6.0)
    balanced = np.array([particle(1, 5.0, 0.0, 0.0), particle(1, 5.0, 0.0, math.pi)])
    assert physics.met_response([balanced], [event]).n == 0  # MET_true below 1 GeV: skipped


def test_efficiency_fake_rate_and_resolution_on_hand_made_classes():
    true = np.zeros((8, 7))
    reco = np.zeros((8, 7))
    true[:, 0] = [1, 1, 1, 2, 2, 3, 0, 0]
    reco[:, 0] = [1, 1, 2, 2, 0, 3, 3, 1]
    true[:2, 2], reco[:2, 2] = [10.0, 20.0], [11.0, 18.0]
    true[:2, 6], reco[:2, 6] = [10.0, 20.0], [12.0, 20.0]
    t = physics.efficiency_fake_rate(true, reco)
    assert t.loc["charged_hadron", ["n_true", "n_reco"]].tolist() == [3, 3]
    assert t.loc["charged_hadron", "efficiency"] == pytest.approx(2 / 3)
    assert t.loc["charged_hadron", "fake_rate"] == pytest.approx(1 / 3)
    assert t.loc["neutral_hadron", ["efficiency", "fake_rate"]].tolist() == [0.5, 0.5]
    assert t.loc["photon", ["efficiency", "fake_rate"]].tolist() == [1.0, 0.5]
    assert math.isnan(t.loc["muon", "efficiency"]) and math.isnan(t.loc["muon", "fake_rate"])
    pt = physics.resolution(true, reco, 2).loc["charged_hadron"]
    assert (pt["n"], pt["mean"], pt["std"]) == (2, pytest.approx(0.0), pytest.approx(0.1))
    energy = physics.resolution(true, reco, 6).loc["charged_hadron"]
    assert (energy["mean"], energy["median"]) == (pytest.approx(0.1), pytest.approx(0.1))


def write_predictions(path, events_true, events_pred, events_cand):
    offsets = np.cumsum([0] + [len(e) for e in events_true])
    np.savez(path, ygen=np.concatenate(events_true), pred=np.concatenate(events_pred),
             ycand=np.concatenate(events_cand), offsets=offsets)


def test_load_predictions_fills_kinematics_and_names_bad_files(tmp_path):
    cand = EVENT.copy()
    cand[2, 2] = 0.0  # Delphes neutral candidate: only E given
    path = tmp_path / "predictions.npz"
    write_predictions(path, [EVENT, EVENT[:3]], [EVENT, EVENT[:3]], [cand, EVENT[:3]])
    preds = physics.load_predictions(path)
    assert preds.events == 2 and preds.event("ygen", 1).shape == (3, 7)
    assert preds.ycand[2, 2] == pytest.approx(40.0)
    bad = tmp_path / "bad.npz"
    np.savez(bad, ygen=EVENT, pred=EVENT, ycand=EVENT, offsets=np.array([0, 3]))
    with pytest.raises(physics.PhysicsError, match=r"bad.npz: offsets must rise from 0 to 5"):
        physics.load_predictions(bad)
    np.savez(bad, ygen=EVENT, pred=EVENT[:, :6], ycand=EVENT, offsets=np.array([0, 5]))
    with pytest.raises(physics.PhysicsError, match=r"bad.npz: pred has shape \(5, 6\)"):
        physics.load_predictions(bad)


def test_physics_tables_model_next_to_ycand():
    preds = physics.Predictions(pred=scaled(EVENT, 1.1), ygen=EVENT, ycand=EVENT.copy(),
                                offsets=np.array([0, len(EVENT)]))
    out = physics.physics_tables(preds)
    resp = out["response"].set_index(["reco", "observable"])
    assert resp.loc[("model", "jet_pt"), "median"] == pytest.approx(1.1)
    assert resp.loc[("ycand", "jet_pt"), "median"] == pytest.approx(1.0)
    assert resp.loc[("model", "met"), "median"] == pytest.approx(1.1)
    cls = out["classes"].set_index(["reco", "class"])
    assert cls.loc[("ycand", "photon"), "efficiency"] == 1.0
    res = out["resolution"].set_index(["reco", "quantity", "class"])
    assert res.loc[("model", "pt", "charged_hadron"), "mean"] == pytest.approx(0.1)


def test_report_includes_the_best_runs_physics(tmp_path):
    root = tmp_path / "runs"
    make_run(root, "worse", seed=1, epochs=[("a", 3600, 3600, 1, 0.9)])
    best = make_run(root, "best", seed=2, epochs=[("a", 3600, 3600, 1, 0.5)])
    os.makedirs(os.path.join(best, "best"))
    write_predictions(os.path.join(best, "best", "predictions.npz"), [EVENT], [scaled(EVENT, 1.1)],
                      [EVENT])
    with open(os.path.join(best, "best", "physics.json"), "w") as fh:
        json.dump({"events": 1000, "model": {"efficiency": {"photon": 0.93},
                                             "jet_response": {"median": 1.02, "iqr": 0.1}},
                   "ycand": {"efficiency": {"photon": 0.9}}}, fh)
    out = tmp_path / "out"
    assert report.run(["--runs", str(root), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert f"Best run: `{best}`" in md
    resp = pd.read_csv(out / "physics_response.csv").set_index(["reco", "observable"])
    assert resp.loc[("model", "jet_pt"), "median"] == pytest.approx(1.1)
    js = pd.read_csv(out / "physics_json.csv")
    assert js[(js["reco"] == "model") & (js["metric"] == "efficiency")]["value"].tolist() == [0.93]
    assert "| efficiency | photon | 0.93 | 0.9 |" in md


def test_report_names_a_corrupt_predictions_file(tmp_path, capsys):
    root = tmp_path / "runs"
    best = make_run(root, "best", epochs=[("a", 3600, 3600, 1, 0.5)])
    os.makedirs(os.path.join(best, "best"))
    with open(os.path.join(best, "best", "predictions.npz"), "wb") as fh:
        fh.write(b"not a zip")
    assert report.run(["--runs", str(root), "--out", str(tmp_path / "out")]) == 0
    expected = f"{best}/best/predictions.npz: not a readable npz file"
    assert f"warning: {expected}" in capsys.readouterr().err
    assert expected in (tmp_path / "out" / "report.md").read_text()
