"""ReferenceLoss: the reference objective, checked against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mlpf_tf.model import ModelConfig
from mlpf_tf.model.config import DELPHES_REFERENCE
from mlpf_tf.model.losses import MLPFLoss, ReferenceLoss


def two_events():
    """2 events padded to N=4: event 0 has 3 real elements (classes 1, 0, 3), event 1 has 2
    (classes 2, 5); 4 true particles. Padding and the class-0 element carry garbage
    predictions that must not count."""
    y = np.zeros((2, 4, 7), np.float32)
    w = np.zeros((2, 4), np.float32)
    w[0, :3] = 1
    w[1, :2] = 1
    y[0, :3, 0] = [1, 0, 3]
    y[1, :2, 0] = [2, 5]
    y[0, 0, 1:] = [1, 10, 0.5, 0.3, 0.9, 12]
    y[0, 2, 1:] = [0, 3, -1.0, 0.6, 0.8, 4]
    y[1, 0, 1:] = [0, 2, 1.5, -0.5, 0.7, 5]
    y[1, 1, 1:] = [-1, 50, 0.0, 0.1, -0.9, 60]
    logits = np.zeros((2, 4, 6), np.float32)
    logits[0, 0, 1] = math.log(5.0)  # p(true) = 5 / (5 + 5) = 0.5
    logits[:, 3] = 100.0  # padding
    logits[1, 2] = -50.0  # padding
    pred = {"cls": logits}
    # per true particle (e0 el0, e0 el2, e1 el0, e1 el1): prediction - target
    errors = {"charge": [-0.5, 0.0, 2.0, 0.0], "pt": [0.5, 3.0, 0.0, -2.0],
              "eta": [0.05, 0.3, 0.0, -0.1], "sin_phi": [0.1, 0.1, 0.1, 0.1],
              "cos_phi": [0.0, 0.0, 0.0, 0.0], "energy": [0.2, -1.0, 0.0, 10.0]}
    col = {"charge": 1, "pt": 2, "eta": 3, "sin_phi": 4, "cos_phi": 5, "energy": 6}
    where = [(0, 0), (0, 2), (1, 0), (1, 1)]
    for key, errs in errors.items():
        p = np.full((2, 4, 1), 7.0, np.float32)  # garbage on class-0 and padded elements
        for (e, i), err in zip(where, errs):
            p[e, i, 0] = y[e, i, col[key]] + err
        pred[key] = p
    return y, pred, w


# Hand-computed components, each a sum over elements divided by B x N = 2 x 4 = 8.
CLS = (math.log(2.0) + 4 * math.log(6.0)) / 8  # 5 real elements, one with p = 0.5
CHARGE = (0.25 + 4.0) / 8  # squared errors 0.5^2 and 2^2 on true particles
PT = (0.125 + 2.5 + 0.0 + 1.5) / 8  # Huber(1): 0.5*0.5^2, 3-0.5, 0, 2-0.5
ENERGY = (0.02 + 0.5 + 0.0 + 9.5) / 8  # Huber(1): 0.5*0.2^2, 0.5*1^2, 0, 10-0.5
ETA = (0.00125 + 0.025 + 0.0 + 0.005) / 8  # Huber(0.1): 0.5*0.05^2, 0.1*(0.3-0.05), 0.5*0.1^2
SIN_PHI = 4 * 0.005 / 8
COS_PHI = 0.0


def test_reference_loss_hand_computed():
    y, pred, w = two_events()
    logs = ReferenceLoss()(y, pred, w)
    want = {"cls": CLS, "charge": CHARGE, "pt": PT, "eta": ETA, "sin_phi": SIN_PHI,
            "cos_phi": COS_PHI, "energy": ENERGY}
    for key, value in want.items():
        assert float(logs[f"{key}_loss"]) == pytest.approx(value, rel=1e-5, abs=1e-7), key
    total = CLS + CHARGE + 100 * (PT + ETA + SIN_PHI + COS_PHI + ENERGY)
    assert float(logs["loss"]) == pytest.approx(total, rel=1e-5)


def test_reference_loss_normalises_by_the_padded_size():
    """Appending 4 padded elements per event (N 4 -> 8) halves every component."""
    y, pred, w = two_events()
    pad = ((0, 0), (0, 4), (0, 0))
    y8, w8 = np.pad(y, pad), np.pad(w, ((0, 0), (0, 4)))
    pred8 = {k: np.pad(v, pad, constant_values=3.0) for k, v in pred.items()}
    a, b = ReferenceLoss()(y, pred, w), ReferenceLoss()(y8, pred8, w8)
    for key in a:
        assert float(b[key]) == pytest.approx(float(a[key]) / 2, rel=1e-5), key


def test_reference_loss_differs_from_the_per_event_log_loss():
    """Same batch, the improved objective: per-event means and log1p pT -- another number."""
    y, pred, w = two_events()
    improved = MLPFLoss()(y, pred, w)
    # per-event mean of charge errors over real elements: event 0 (0.25 + 7^2) / 3, event 1
    # (4 + 0) / 2 -> mean over events
    charge = ((0.25 + 49.0) / 3 + 4.0 / 2) / 2
    assert float(improved["charge_loss"]) == pytest.approx(charge, rel=1e-5)
    assert float(improved["pt_loss"]) != pytest.approx(PT, rel=1e-2)


def test_config_picks_the_variant_loss():
    ref = MLPFLoss.from_config(ModelConfig(**DELPHES_REFERENCE))
    assert isinstance(ref, ReferenceLoss)
    assert ref.weights == {"cls": 1.0, "charge": 1.0, "pt": 100.0, "eta": 100.0,
                           "sin_phi": 100.0, "cos_phi": 100.0, "energy": 100.0}
    assert type(MLPFLoss.from_config(ModelConfig())) is MLPFLoss
