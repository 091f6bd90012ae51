"""Per-rank reading under ``horovodrun -np 2 -H localhost:2 --gloo``: each rank reads half.

A delphes_pf dataset of 21 train and 11 validation events (odd on purpose), each event tagged
with a unique number, is built by rank 0; both ranks then build their pipelines. Counted:
the events each rank reads (its input slice and the events in its batches), that the two
ranks' events are disjoint, and the training and validation steps each rank takes.
"""

from __future__ import annotations

import os

import numpy as np

from mlpf_tf import distributed
from mlpf_tf.data import datasets, schema
from mlpf_tf.data.config import DataConfig
from mlpf_tf.data.delphes_reader import write_delphes_file
from mlpf_tf.data.pipeline import build_pipeline, rank_event_ranges, steps_per_epoch

N_TRAIN, N_VAL, BATCH = 21, 11, 2


def _events(rng, count, first_tag):
    out = []
    for tag in range(first_tag, first_tag + count):
        n = int(rng.integers(3, 20))
        X = np.zeros((n, schema.NUM_FEATURES), np.float32)
        X[:, schema.F_TYPE] = schema.ELEM_TOWER
        X[:, 1] = rng.uniform(1, 5, n)
        X[0, 11] = tag
        y = np.zeros((n, schema.NUM_TARGETS), np.float32)
        out.append(schema.Event(X, y, y.copy()))
    return out


def test_each_rank_reads_half_and_takes_equal_steps(ctx, shared_dir):
    manual = os.path.join(shared_dir, "manual")
    cfg = DataConfig(dataset="delphes_pf", config="default",
                     data_dir=os.path.join(shared_dir, "tfds"), manual_dir=manual,
                     max_elements=32, padding="fixed", shuffle_buffer=50)
    if ctx.is_root:
        rng = np.random.default_rng(0)
        write_delphes_file(os.path.join(manual, "tev14_pythia8_ttbar_0_0.pkl.bz2"),
                           _events(rng, N_TRAIN, 1))
        write_delphes_file(os.path.join(manual, "tev14_pythia8_ttbar_1_0.pkl.bz2"),
                           _events(rng, N_VAL, 1000))
        datasets.prepare_dataset(cfg)
    distributed.barrier()

    counts = {}
    for split, drop in (("train", True), ("validation", False)):
        ds = build_pipeline(cfg, split, BATCH, rank=ctx.rank, size=ctx.size, seed=1,
                            shuffle=split == "train", prepare=False)
        steps, tags = 0, []
        for X, _, w in ds.as_numpy_iterator():
            steps += 1
            real = w.any(axis=1)
            tags += [int(t) for t in X[real, 0, 11]]
        counts[split] = (steps, tags, steps_per_epoch(cfg, split, BATCH, size=ctx.size,
                                                      drop_remainder=drop))
    # The rank's input slices alone (what it reads from disk before batching).
    ranges = rank_event_ranges(N_TRAIN, ctx.size, ctx.rank, BATCH)
    read = len(list(datasets.load_split(cfg, "train", prepare=False, ranges=ranges)))
    gathered = distributed.allgather_object((read, counts))
    reads = [g[0] for g in gathered]
    train = [g[1]["train"] for g in gathered]
    val = [g[1]["validation"] for g in gathered]
    if ctx.is_root:
        print(f"events read per rank: {reads}; train steps {[t[0] for t in train]}, "
              f"events {[len(t[1]) for t in train]}; validation steps {[v[0] for v in val]}, "
              f"events {[len(v[1]) for v in val]}")
    assert reads == [10, 10]                      # half of 21 each (the odd one unused)
    assert [t[0] for t in train] == [5, 5] == [t[2] for t in train]
    assert [len(t[1]) for t in train] == [10, 10]
    assert [v[0] for v in val] == [3, 3] == [v[2] for v in val]
    assert [len(v[1]) for v in val] == [5, 5]     # half of 11 each
    for split_counts in (train, val):
        a, b = (set(c[1]) for c in split_counts)
        assert not a & b and len(a) == len(b)
