"""benchmark.variants: configs of the two variants and the table built from run records."""

from __future__ import annotations

import pytest

from benchmark import variants


def _run(variant, seed, loss_imp, loss_ref, eff):
    block = {"efficiency": {"charged_hadron": eff}, "fake_rate": {"charged_hadron": 0.1},
             "pt_resolution": {"photon": {"mean": 0.0, "std": 0.5, "n": 3}},
             "energy_resolution": {}, "jet_response": {"median": 0.9, "iqr": None, "n": 4}}
    base = {"efficiency": {"charged_hadron": 1.0}, "fake_rate": {}, "pt_resolution": {},
            "energy_resolution": {}, "jet_response": {"median": 1.02, "iqr": 0.2, "n": 4}}
    return {"variant": variant, "seed": seed, "steps": 10 + seed, "train_seconds": 5.0,
            "train_wall_seconds": 6.0, "first_step_seconds": 2.0, "params": 100,
            "val_loss_improved_def": loss_imp, "val_loss_reference_def": loss_ref,
            "physics": {"model": block, "ycand": base}}


def test_table_means_and_stds_over_seeds_and_the_ycand_row():
    runs = [_run("reference", 0, 1.0, 10.0, 0.5), _run("reference", 1, 3.0, 14.0, 0.7),
            _run("improved", 0, 2.0, 20.0, 0.9)]
    rows = {r["reco"]: r for r in variants.table(runs)}
    ref = rows["reference (n=2)"]
    assert ref["val loss (improved def)"] == (pytest.approx(2.0), pytest.approx(2 ** 0.5))
    assert ref["val loss (reference def)"][0] == pytest.approx(12.0)
    assert ref["eff ch.had"][0] == pytest.approx(0.6)
    assert ref["pT res std photon"][0] == pytest.approx(0.5)
    assert "jet resp iqr" not in ref  # None (no entries) is left out, not averaged
    assert rows["improved (n=1)"]["steps"] == (10.0, 0.0)
    base = rows["ycand (rule-based PF)"]
    assert base["eff ch.had"] == (1.0, 0.0) and base["jet resp median"] == (1.02, 0.0)
    text = variants.format_table(list(rows.values()))
    line = next(t for t in text.splitlines() if t.startswith("val loss (reference def)"))
    assert line.split()[4:] == ["12", "+-", "2.8", "20", "+-", "0", "-"]


def test_both_variants_share_widths_and_depths():
    ref, imp = variants.model_config("reference", 32), variants.model_config("improved", 32)
    for field in ("output_dim", "head_hidden_dim", "distance_dim", "bin_size",
                  "num_graph_layers_common", "num_graph_layers_energy"):
        assert getattr(ref, field) == getattr(imp, field), field
    assert (ref.variant, imp.variant, ref.output_dim, ref.distance_dim) == \
        ("reference", "improved", 32, 16)
