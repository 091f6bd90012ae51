"""Checkpoints: exact round trip of weights and optimizer state, atomic layout, clear errors."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from mlpf_tf import checkpoint as ckpt
from mlpf_tf import distributed

try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # already initialised by another test module
    pass


def make_model(width: int = 4, seed: int = 0) -> tf.keras.Model:
    tf.keras.utils.set_random_seed(seed)
    model = tf.keras.Sequential([tf.keras.layers.Dense(width, activation="tanh"),
                                 tf.keras.layers.Dense(2)])
    model(tf.zeros([1, 3]))
    return model


def trained(steps: int = 3, seed: int = 0):
    """A model and an Adam optimizer after ``steps`` updates (non-trivial slots)."""
    model = make_model(seed=seed)
    opt = tf.keras.optimizers.Adam(0.01)
    x = tf.random.stateless_normal([8, 3], seed=[1, 2])
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x)))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                model.trainable_variables))
    return model, opt


def values(variables):
    return [v.numpy() for v in variables]


def test_round_trip_restores_weights_slots_and_step(tmp_path):
    model, opt = trained(steps=3)
    path = ckpt.save(str(tmp_path), model, opt, epoch=3, metadata={"trial": "t1"})
    assert path == str(tmp_path / "epoch-0003")
    assert (tmp_path / "latest").read_text() == "epoch-0003\n"
    assert sorted(os.listdir(tmp_path)) == ["epoch-0003", "latest"]  # no temporaries left
    assert json.loads((tmp_path / "epoch-0003" / "meta.json").read_text()) == {
        "epoch": 3, "trial": "t1"}

    other, other_opt = make_model(seed=9), tf.keras.optimizers.Adam(0.01)
    assert not np.allclose(values(other.variables)[0], values(model.variables)[0])
    assert ckpt.load(str(tmp_path), other, other_opt) == 3  # via the `latest` pointer
    for a, b in zip(values(model.variables), values(other.variables)):
        np.testing.assert_array_equal(a, b)
    assert int(other_opt.iterations.numpy()) == 3
    assert len(other_opt.variables) == 1 + 2 * len(model.trainable_variables)
    for a, b in zip(values(opt.variables), values(other_opt.variables)):
        np.testing.assert_array_equal(a, b)
    assert ckpt.read_metadata(path)["trial"] == "t1"


def test_keeps_newest_and_rewrites_an_epoch(tmp_path):
    model, opt = trained(steps=1)
    for epoch in (1, 2, 3):
        ckpt.save(str(tmp_path), model, opt, epoch, keep=2)
    assert sorted(os.listdir(tmp_path)) == ["epoch-0002", "epoch-0003", "latest"]
    model.variables[0].assign(tf.ones_like(model.variables[0]))
    ckpt.save(str(tmp_path), model, opt, 3, keep=2)  # the same epoch again replaces it
    assert sorted(os.listdir(tmp_path)) == ["epoch-0002", "epoch-0003", "latest"]
    fresh, fresh_opt = make_model(seed=4), tf.keras.optimizers.Adam(0.01)
    assert ckpt.load(str(tmp_path / "epoch-0003"), fresh, fresh_opt) == 3
    np.testing.assert_array_equal(fresh.variables[0].numpy(), 1.0)
    assert ckpt.latest(str(tmp_path)) == str(tmp_path / "epoch-0003")
    assert ckpt.latest(str(tmp_path / "epoch-0002")) is None


def test_only_rank_zero_writes(tmp_path):
    model, opt = trained(steps=1)
    rank1 = distributed.Context(rank=1, size=2)
    path = ckpt.save(str(tmp_path / "ck"), model, opt, 1, ctx=rank1)
    assert path == str(tmp_path / "ck" / "epoch-0001")
    assert not (tmp_path / "ck").exists()


def test_missing_checkpoint_errors_name_the_path(tmp_path):
    model, opt = trained(steps=1)
    missing = str(tmp_path / "nope")
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load(missing, model, opt)
    assert str(info.value) == f"no checkpoint at {missing}: the path does not exist"

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load(str(empty), model, opt)
    assert str(info.value) == (f"no checkpoint at {empty}: neither a 'latest' pointer nor a "
                               "'ckpt.index' file")

    (empty / "latest").write_text("epoch-0007\n")
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load(str(empty), model, opt)
    assert str(info.value) == f"{empty}/latest names {empty}/epoch-0007, which does not exist"

    (empty / "latest").write_text("../../etc\n")
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load(str(empty), model, opt)
    assert str(info.value) == (f"{empty}/latest: expected a checkpoint name like 'epoch-0004', "
                               "found '../../etc'")


def test_corrupt_checkpoint_error_names_the_path(tmp_path):
    model, opt = trained(steps=2)
    path = ckpt.save(str(tmp_path), model, opt, 2)
    data = [n for n in os.listdir(path) if n.startswith("ckpt.data")]
    assert len(data) == 1
    with open(os.path.join(path, data[0]), "r+b") as fh:
        fh.truncate(16)
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load(path, make_model(), tf.keras.optimizers.Adam(0.01))
    assert str(info.value).startswith(f"checkpoint {path} is corrupt or does not fit this "
                                      "model/optimizer: ")

    with open(os.path.join(path, "ckpt.index"), "wb") as fh:
        fh.write(b"garbage")
    with pytest.raises(ckpt.CheckpointError, match=f"^checkpoint {path} is corrupt"):
        ckpt.load(path, make_model(), tf.keras.optimizers.Adam(0.01))

    (tmp_path / "epoch-0002" / "meta.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match=f"^{path}/meta.json: unreadable checkpoint "
                                                   "metadata"):
        ckpt.read_metadata(path)


def test_checkpoint_of_another_architecture_is_rejected(tmp_path):
    model, opt = trained(steps=1)
    path = ckpt.save(str(tmp_path), model, opt, 1)
    wider = make_model(width=7)
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.load(path, wider, tf.keras.optimizers.Adam(0.01))
    assert str(info.value).startswith(f"checkpoint {path} is corrupt or does not fit this "
                                      "model/optimizer: ")
    unbuilt = tf.keras.Sequential([tf.keras.layers.Dense(4)])
    with pytest.raises(ckpt.CheckpointError, match=f"^cannot load {path}: build the model"):
        ckpt.load(path, unbuilt, tf.keras.optimizers.Adam(0.01))
