"""The tf.data pipeline: shapes, padding masks, rank sharding, seeded order, length checks."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from mlpf_tf.data import datasets, schema
from mlpf_tf.data.config import DataConfig
from mlpf_tf.data.delphes_reader import complete_ycand, strip_ycand, write_delphes_file
from mlpf_tf.data.pipeline import (
    MAX_SLICES_PER_RANK,
    build_pipeline,
    class_counts,
    class_weights,
    rank_event_ranges,
    steps_for,
    steps_per_epoch,
)

try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # already initialised by another test module
    pass

N_TRAIN = 21  # odd on purpose: two ranks cannot split it evenly
LENGTHS_MAX = 40


def _event(rng, n, tag):
    X = np.zeros((n, schema.NUM_FEATURES), np.float32)
    X[:, schema.F_TYPE] = rng.integers(1, 3, n)
    X[:, 1:6] = rng.uniform(0.1, 5, (n, 5))
    X[0, 11] = tag  # unique per event
    y = np.zeros((n, schema.NUM_TARGETS), np.float32)
    y[:, schema.T_CLS] = rng.integers(1, schema.NUM_CLASSES, n)
    y[:, schema.T_PT] = rng.uniform(1, 10, n)
    y[:, schema.T_ETA] = rng.uniform(-2, 2, n)
    y[:, schema.T_E] = y[:, schema.T_PT] * np.cosh(y[:, schema.T_ETA])
    ycand = y.copy()
    ycand[:, schema.T_CLS] = 1
    return schema.Event(X, y, ycand)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """A delphes_pf dataset: 21 train, 7 validation, 6 test events of 3..40 elements."""
    root = tmp_path_factory.mktemp("pipe")
    rng = np.random.default_rng(11)
    events = {}
    tag = 1
    for name, count in (("tev14_pythia8_ttbar_0.pkl.bz2", N_TRAIN),
                        ("tev14_pythia8_ttbar_1.pkl.bz2", 7),
                        ("tev14_pythia8_qcd_0.pkl.bz2", 6)):
        evs = []
        for _ in range(count):
            evs.append(_event(rng, int(rng.integers(3, LENGTHS_MAX + 1)), tag))
            tag += 1
        write_delphes_file(root / "manual" / name, evs)
        events[name] = evs
    cfg = DataConfig(dataset="delphes_pf", config="default", data_dir=str(root / "tfds"),
                     manual_dir=str(root / "manual"), max_elements=64, padding="fixed",
                     shuffle_buffer=100)
    datasets.prepare_dataset(cfg)
    by_tag = {int(e.X[0, 11]): e for evs in events.values() for e in evs}
    return cfg, by_tag


def _tags(X, w):
    """Unique tag of every real event in a batch."""
    return [int(x[0, 11]) for x, m in zip(X, w) if m.sum() > 0]


def _epoch(ds):
    return [t for X, _, w in ds.as_numpy_iterator() for t in _tags(X, w)]


def test_fixed_padding_shapes_and_masks(prepared):
    cfg, by_tag = prepared
    ds = build_pipeline(cfg, "validation", 3, shuffle=False)
    batches = list(ds.as_numpy_iterator())
    assert [b[0].shape[0] for b in batches] == [3, 3, 1]  # no drop_remainder off the train split
    seen = 0
    for X, y, w in batches:
        assert X.shape[1:] == (64, 12) and y.shape[1:] == (64, 7) and w.shape[1:] == (64,)
        assert X.dtype == y.dtype == w.dtype == np.float32
        for x_i, y_i, w_i in zip(X, y, w):
            event = by_tag[int(x_i[0, 11])]
            n = event.X.shape[0]
            assert w_i.sum() == n and (w_i[:n] == 1).all()
            np.testing.assert_array_equal(x_i[:n], event.X)
            np.testing.assert_array_equal(y_i[:n], event.ygen)
            assert not y_i[n:].any() and not x_i[n:].any()
            seen += 1
    assert seen == 7


def test_target_ycand_and_bucket_padding(prepared):
    cfg, by_tag = prepared
    cfg = cfg.replace(target="ycand", padding="bucket", pad_multiple=16)
    for X, y, w in build_pipeline(cfg, "test", 2, shuffle=False).as_numpy_iterator():
        longest = int(w.sum(axis=1).max())
        assert X.shape[1] % 16 == 0 and longest <= X.shape[1] < longest + 16
        assert y.shape[1] == w.shape[1] == X.shape[1]
        for x_i, y_i, w_i in zip(X, y, w):
            event = by_tag[int(x_i[0, 11])]
            n = int(w_i.sum())
            np.testing.assert_array_equal(
                y_i[:n], complete_ycand(strip_ycand(event.ycand)))
            assert not y_i[n:].any()


def test_two_ranks_read_disjoint_equal_slices(prepared):
    cfg, _ = prepared
    stored = [int(ex["X"][0, 11]) for ex in
              datasets.load_split(cfg, "train", prepare=False).as_numpy_iterator()]
    per_rank = [_epoch(build_pipeline(cfg, "train", 2, rank=r, size=2, seed=3,
                                      drop_remainder=False)) for r in (0, 1)]
    # blocks of 2 stored events in turn: rank 0 holds 0-1, 4-5, ...; 21 // 2 each, one unused
    assert [sorted(p) for p in per_rank] == [
        sorted(stored[i] for i in range(20) if (i // 2) % 2 == r) for r in (0, 1)]
    # unshuffled, step j of both ranks together = batch j of one rank with twice the batch
    one = [b[0][:, 0, 11].tolist() for b in build_pipeline(
        cfg, "train", 4, shuffle=False).as_numpy_iterator()]
    two = [[b[0][:, 0, 11].tolist() for b in build_pipeline(
        cfg, "train", 2, rank=r, size=2, shuffle=False).as_numpy_iterator()] for r in (0, 1)]
    assert [a + b for a, b in zip(*two)] == one
    # Default on the train split: drop_remainder, 10 events per rank -> 5 equal steps.
    steps = [len(list(build_pipeline(cfg, "train", 2, rank=r, size=2, seed=3)))
             for r in (0, 1)]
    assert steps == [5, 5] == [steps_per_epoch(cfg, "train", 2, size=2)] * 2
    # Validation (7 events, remainder kept within a rank): 3 events and 2 steps on each rank.
    val = [list(build_pipeline(cfg, "validation", 2, rank=r, size=2,
                               shuffle=False).as_numpy_iterator()) for r in (0, 1)]
    assert [len(v) for v in val] == [2, 2] == [steps_per_epoch(cfg, "validation", 2, size=2)] * 2
    assert [sum(int(b[2][:, 0].sum()) for b in v) for v in val] == [3, 3]


def test_same_seed_same_order_different_seed_different_order(prepared):
    cfg, _ = prepared
    a = _epoch(build_pipeline(cfg, "train", 3, seed=7))
    b = _epoch(build_pipeline(cfg, "train", 3, seed=7))
    c = _epoch(build_pipeline(cfg, "train", 3, seed=8))
    assert len(a) == N_TRAIN and a == b and a != c and sorted(a) == sorted(c)
    # Each epoch reshuffles, and the sequence of epochs is fixed by the seed.
    two = _epoch(build_pipeline(cfg, "train", 3, seed=7, repeat=True).take(14))
    again = _epoch(build_pipeline(cfg, "train", 3, seed=7, repeat=True).take(14))
    assert two == again and two[:N_TRAIN] == a and two[N_TRAIN:] != a
    assert _epoch(build_pipeline(cfg, "train", 3, shuffle=False)) == _epoch(
        build_pipeline(cfg, "train", 3, shuffle=False, seed=99))


def test_event_longer_than_max_elements_fails_or_truncates(prepared):
    cfg, by_tag = prepared
    small = cfg.replace(max_elements=8, padding="fixed")
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"--data\.max_elements=8 is too small: event \d+ of the test split "
                             r"has \d+ elements; raise --data\.max_elements or set "
                             r"--data\.truncate=true"):
        list(build_pipeline(small, "test", 2, shuffle=False))
    for X, _, w in build_pipeline(small.replace(truncate=True), "test", 2,
                                  shuffle=False).as_numpy_iterator():
        assert X.shape[1] == 8
        for x_i, w_i in zip(X, w):
            event = by_tag[int(x_i[0, 11])]
            assert w_i.sum() == min(8, event.X.shape[0])
            np.testing.assert_array_equal(x_i[: int(w_i.sum())], event.X[:8])


def test_bad_arguments_are_named(prepared):
    cfg, _ = prepared
    with pytest.raises(ValueError, match=r"^batch_size=0: must be an integer >= 1$"):
        build_pipeline(cfg, "train", 0)
    with pytest.raises(ValueError, match=r"^rank=2, size=2: need size >= 1 and 0 <= rank < size"):
        build_pipeline(cfg, "train", 2, rank=2, size=2)
    with pytest.raises(ValueError, match=r"split 'train' of delphes_pf/default has 21 events: "
                                         r"2 rank\(s\) x batch_size 11 leaves no complete batch"):
        build_pipeline(cfg, "train", 11, size=2)


def test_unprepared_dataset_on_other_ranks_is_named(tmp_path):
    cfg = DataConfig(config="gun", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"synthetic_pf/gun is not prepared in "
                                                rf"{tmp_path} \(--data\.data_dir\)"):
        build_pipeline(cfg, "train", 2, rank=1, size=2)


def test_rank_event_ranges_deal_blocks_in_turn():
    assert rank_event_ranges(21, 2, 0, 4) == [(0, 4), (8, 12), (16, 18)]
    assert rank_event_ranges(21, 2, 1, 4) == [(4, 8), (12, 16), (18, 20)]
    assert rank_event_ranges(10, 1, 0, 3) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    for total, size, block in ((100, 4, 5), (37, 3, 4), (10_000, 2, 1)):
        got = [rank_event_ranges(total, size, r, block) for r in range(size)]
        events = [[e for a, b in rr for e in range(a, b)] for rr in got]
        assert all(len(ev) == total // size for ev in events)
        flat = [e for ev in events for e in ev]
        assert len(set(flat)) == len(flat) and max(flat) < total
        assert max(len(rr) for rr in got) <= MAX_SLICES_PER_RANK


def test_steps_for():
    assert steps_for(21, 2, 2) == 5
    assert steps_for(21, 2, 2, drop_remainder=False) == 5  # 10 events per rank, equal steps
    assert steps_for(21, 4, 2, drop_remainder=False) == 3
    assert steps_for(100, 5) == 20
    assert steps_for(4, 5) == 0
    assert steps_for(4, 5, drop_remainder=False) == 1


def test_class_counts_and_weights(prepared):
    cfg, by_tag = prepared
    expected = np.zeros(schema.NUM_CLASSES, np.int64)
    for tag in range(1, N_TRAIN + 1):
        expected += np.bincount(by_tag[tag].ygen[:, 0].astype(int), minlength=6)
    counts = class_counts(cfg, "train")
    np.testing.assert_array_equal(counts, expected)
    assert class_counts(cfg, "train", "ycand")[1] == expected.sum()
    w = class_weights(np.array([0, 10, 30, 60, 0, 0]))
    np.testing.assert_allclose(w, [0, 100 / 30, 100 / 90, 100 / 180, 0, 0])
    assert np.isclose((w * [0, 10, 30, 60, 0, 0]).sum() / 100, 1.0)


def test_no_files_written_outside_data_dir(prepared):
    cfg, _ = prepared
    assert os.path.isdir(os.path.join(cfg.resolved_data_dir(), "delphes_pf", "default"))
