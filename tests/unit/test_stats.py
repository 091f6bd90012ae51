"""event_statistics: ycand efficiency / fake rate per class, and the comparison table."""

from __future__ import annotations

import numpy as np

from mlpf_tf.data import schema as S
from mlpf_tf.data.stats import comparison_table, event_statistics


def _event(gen_classes, cand_classes):
    n = len(gen_classes)
    X = np.zeros((n, 12), np.float32)
    X[:, 0] = S.ELEM_TOWER
    ygen = np.zeros((n, 7), np.float32)
    ycand = np.zeros((n, 7), np.float32)
    ygen[:, 0], ycand[:, 0] = gen_classes, cand_classes
    return S.Event(X, ygen, ycand)


def test_ycand_efficiency_and_fake_rate_per_class():
    # photons: 4 true, 3 found as photons; 1 extra photon candidate on a neutral hadron
    ev = _event([3, 3, 3, 3, 2, 2, 1, 0], [3, 3, 3, 0, 3, 2, 1, 1])
    st = event_statistics([ev])
    assert st["ycand_efficiency"]["photon"] == 0.75
    assert st["ycand_fake_rate"]["photon"] == 0.25          # 1 of 4 photon candidates
    assert st["ycand_efficiency"]["neutral_hadron"] == 0.5
    assert st["ycand_fake_rate"]["neutral_hadron"] == 0.0
    assert st["ycand_efficiency"]["charged_hadron"] == 1.0
    assert st["ycand_fake_rate"]["charged_hadron"] == 0.5   # one candidate on a class-0 row
    assert st["ycand_efficiency"]["muon"] == 0.0 and "none" not in st["ycand_efficiency"]


def test_comparison_table_has_one_column_per_name():
    a = event_statistics([_event([3, 2], [3, 0])])
    b = event_statistics([_event([1, 1, 0], [1, 1, 1])])
    table = comparison_table({"delphes_cms": a, "optimistic": b}).splitlines()
    assert table[0] == "| quantity | delphes_cms | optimistic |"
    assert "| elements per event (mean) | 2.0 | 3.0 |" in table
    assert "| ycand efficiency photon | 1.000 | 0.000 |" in table
    assert "| ycand fake rate charged_hadron | 0.000 | 0.333 |" in table
