"""The tf.data input pipeline: events -> padded batches (X, y, w) for training and evaluation.

Per event: X (elements x 12) and y, the configured target set (``data.target``: ygen or
ycand), and w = 1 per real element. Batches are padded with zeros: padded X rows have element
type 0, padded y rows class 0, and w = 0, so losses and metrics mask padding with w.

Order of operations, and why:
  each rank reads only its own events (TFDS split slicing: the other ranks' records are not
  read): blocks of ``batch_size`` consecutive events dealt to the ranks in turn
  (:func:`rank_event_ranges`), k = floor(events / size) events per rank, so ranks hold
  disjoint events whatever the seed, every rank has exactly k events in training and in
  validation (the < size remaining events are not used), and without shuffling one step of
  all ranks together sees the same events as one rank with ``size`` times the batch;
  global event index in the split (for error messages) -> with
  drop_remainder the incomplete last batch is dropped; either way all ranks take the same
  number of steps (Horovod's collective ops would hang otherwise) -> length check
  or truncation -> optional cache -> shuffle with ``seed`` (reshuffled every epoch, the
  sequence of epoch orders fixed by the seed) -> optional repeat -> padded batch -> prefetch.

Padding: ``fixed`` gives N = data.max_elements; ``bucket`` pads each batch to the next multiple
of ``data.pad_multiple`` above its longest event (capped at max_elements), so N varies between
batches. An event longer than max_elements fails the iteration with an InvalidArgumentError
naming the split, the event and the flag, unless ``data.truncate`` keeps its first elements.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from mlpf_tf.data import datasets, schema
from mlpf_tf.data.config import DataConfig


def steps_for(num_events: int, batch_size: int, size: int = 1,
              drop_remainder: bool = True) -> int:
    """Steps per epoch on each rank for ``num_events`` events split over ``size`` ranks.

    Every rank keeps floor(num_events / size) events; with ``drop_remainder`` full batches
    only, otherwise the last batch may be partial. The count is the same on every rank.
    """
    if batch_size < 1 or size < 1:
        raise ValueError(f"batch_size ({batch_size}) and size ({size}) must be >= 1")
    if drop_remainder:
        return (num_events // size) // batch_size
    return math.ceil((num_events // size) / batch_size)


#: At most this many slices per rank; beyond it the blocks grow by whole batches.
MAX_SLICES_PER_RANK = 1000


def rank_event_ranges(num_events: int, size: int, rank: int,
                      block: int) -> list[tuple[int, int]]:
    """The event ranges [start, stop) one rank reads: blocks of ``block`` events in turn.

    Round j gives rank r the events [j*size*block + r*block, ... + block); a last, shorter
    round splits what is left equally. Every rank gets floor(num_events / size) events, the
    ranks' events are disjoint, and round j of all ranks is the contiguous range
    [j*size*block, (j+1)*size*block). With more than :data:`MAX_SLICES_PER_RANK` rounds the
    block grows by whole multiples of ``block``.
    """
    if size < 1 or not 0 <= rank < size or block < 1:
        raise ValueError(f"size={size}, rank={rank}, block={block}: need size >= 1, "
                         "0 <= rank < size and block >= 1")
    per_rank = num_events // size
    block *= max(1, math.ceil(math.ceil(per_rank / block) / MAX_SLICES_PER_RANK))
    ranges, done, base = [], 0, 0
    while done < per_rank:
        m = min(block, per_rank - done)
        ranges.append((base + rank * m, base + rank * m + m))
        base += size * m
        done += m
    return ranges


def steps_per_epoch(data_cfg: DataConfig, split: str, batch_size: int, size: int = 1,
                    drop_remainder: bool | None = None) -> int:
    """Steps per epoch of :func:`build_pipeline` for a prepared dataset split."""
    if drop_remainder is None:
        drop_remainder = split == "train"
    return steps_for(datasets.num_examples(data_cfg, split), batch_size, size, drop_remainder)


def _check_args(split: str, batch_size: int, rank: int, size: int) -> None:
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: must be an integer >= 1")
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank={rank}, size={size}: need size >= 1 and 0 <= rank < size")


def _event_fn(cfg: DataConfig, split: str):
    """Map one stored example to (X, y, w), checking or truncating its length."""
    limit = cfg.max_elements

    def fn(index, example):
        X = example["X"]
        y = example[cfg.target]
        n = tf.shape(X)[0]
        if cfg.truncate:
            X, y = X[:limit], y[:limit]
        else:
            message = tf.strings.format(
                f"--data.max_elements={limit} is too small: event {{}} of the {split} split has "
                "{} elements; raise --data.max_elements or set --data.truncate=true",
                (index, n))
            with tf.control_dependencies([tf.debugging.Assert(n <= limit, [message])]):
                X = tf.identity(X)
        w = tf.ones(tf.shape(X)[:1], tf.float32)
        return X, y, w

    return fn


def _pad_to_multiple(multiple: int, limit: int):
    def fn(X, y, w):
        n = tf.shape(X)[1]
        target = tf.minimum((n + multiple - 1) // multiple * multiple, tf.maximum(limit, n))
        pad = target - n
        X = tf.pad(X, [[0, 0], [0, pad], [0, 0]])
        y = tf.pad(y, [[0, 0], [0, pad], [0, 0]])
        w = tf.pad(w, [[0, 0], [0, pad]])
        return X, y, w

    return fn


def build_pipeline(data_cfg: DataConfig, split: str, batch_size: int, *, rank: int = 0,
                   size: int = 1, seed: int = 0, shuffle: bool = True, repeat: bool = False,
                   drop_remainder: bool | None = None, prepare: bool | None = None
                   ) -> tf.data.Dataset:
    """Batches (X [B,N,12], y [B,N,7], w [B,N]) float32 of one split for one Horovod rank.

    ``drop_remainder`` defaults to True for the train split (equal steps on every rank) and
    False otherwise. ``prepare`` (default: ``rank == 0``) builds the dataset if it is missing;
    other ranks expect it built (call them after a barrier).
    """
    data_cfg.validate()
    _check_args(split, batch_size, rank, size)
    if drop_remainder is None:
        drop_remainder = split == "train"
    if prepare is None:
        prepare = rank == 0
    if prepare:
        datasets.prepare_dataset(data_cfg)
    total = datasets.num_examples(data_cfg, split)
    if steps_for(total, batch_size, size, drop_remainder) == 0:
        raise ValueError(
            f"split '{split}' of {data_cfg.dataset}/{data_cfg.config} has {total} events: "
            f"{size} rank(s) x batch_size {batch_size} leaves no complete batch; lower the "
            "batch size or use more events")

    if size > 1:
        # Each rank reads only its own events; equal counts give equal steps on every rank.
        ranges = rank_event_ranges(total, size, rank, batch_size)
        index = tf.constant(np.concatenate([np.arange(a, b) for a, b in ranges]), tf.int64)
        ds = datasets.load_split(data_cfg, split, prepare=False, ranges=ranges).enumerate()
        ds = ds.map(lambda i, ex: (tf.gather(index, i), ex))
    else:
        ds = datasets.load_split(data_cfg, split, prepare=False).enumerate()
    ds = ds.map(_event_fn(data_cfg, split), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    if data_cfg.cache:
        ds = ds.cache()
    if shuffle and data_cfg.shuffle_buffer > 0:
        ds = ds.shuffle(data_cfg.shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    n = data_cfg.max_elements if data_cfg.padding == "fixed" else None
    ds = ds.padded_batch(
        batch_size,
        padded_shapes=([n, schema.NUM_FEATURES], [n, schema.NUM_TARGETS], [n]),
        drop_remainder=drop_remainder)
    if data_cfg.padding == "bucket":
        ds = ds.map(_pad_to_multiple(data_cfg.pad_multiple, data_cfg.max_elements),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if data_cfg.prefetch:
        ds = ds.prefetch(data_cfg.prefetch)
    options = tf.data.Options()
    options.deterministic = True
    return ds.with_options(options)


def class_counts(data_cfg: DataConfig, split: str, target: str | None = None, *,
                 prepare: bool = True) -> np.ndarray:
    """Real elements per class (length NUM_CLASSES, int64) of a split's target set.

    One pass over the split; ``prepare=False`` on ranks other than 0 (see build_pipeline).
    """
    key = target or data_cfg.target
    if key not in ("ygen", "ycand"):
        raise ValueError(f"target={key!r}: must be ygen or ycand")
    ds = datasets.load_split(data_cfg, split, prepare=prepare)

    def count(example):
        cls = tf.cast(example[key][:, schema.T_CLS], tf.int32)
        return tf.math.bincount(cls, minlength=schema.NUM_CLASSES,
                                maxlength=schema.NUM_CLASSES, dtype=tf.int64)

    total = ds.map(count).reduce(tf.zeros(schema.NUM_CLASSES, tf.int64), lambda a, b: a + b)
    return total.numpy()


def class_weights(counts: np.ndarray) -> np.ndarray:
    """Inverse-frequency class weights, normalised so the element-weighted mean is 1.

    Classes without elements get weight 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    present = counts > 0
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights
