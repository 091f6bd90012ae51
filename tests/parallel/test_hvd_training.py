"""Data-parallel training under ``horovodrun -np 2 -H localhost:2 --gloo``.

Run: ``horovodrun -np 2 -H localhost:2 --gloo .venv/bin/python -m pytest -q -p no:cacheprovider
tests/parallel``. Every test runs on both ranks; results of the ranks are compared with
``allgather_object``. References "1 rank x 2b events" are computed on each rank alone
(``context=distributed.LOCAL``: no collectives).
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from mlpf_tf import distributed
from mlpf_tf.checkpoint import CheckpointError
from mlpf_tf.train import NonFiniteLossError, train
from mlpf_tf.train_config import TrainConfig
from tests.tinymodel import N_EL, TinyModel, arrays, tiny_builder  # noqa: E402

B = 4  # events per rank per step


def sharded(n_train: int, n_val: int, batch: int):
    """Dataset factory: each rank reads its shard (rank r: events r, r + size, ...)."""

    def factory(c: distributed.Context):
        tr = tf.data.Dataset.from_tensor_slices(arrays(n_train, 0)).shard(c.size, c.rank)
        va = tf.data.Dataset.from_tensor_slices(arrays(n_val, 1)).shard(c.size, c.rank)
        return tr.batch(batch, drop_remainder=True), va.batch(batch)

    return factory


def weights(model):
    """Trainable weights (model.variables also holds the ranks' own metric accumulators)."""
    return [v.numpy() for v in model.trainable_variables]


def max_diff(a, b):
    assert len(a) == len(b)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def sgd_one_step(**changes) -> TrainConfig:
    values = dict(epochs=1, batch_size=B, optimizer="sgd", lr=0.1, lr_scaling="none",
                  steps_per_epoch=1)
    return TrainConfig(**(values | changes))


@pytest.mark.timeout(300)
def test_broadcast_makes_initial_weights_identical(ctx):
    # Each rank initialises with its own seed: the weights differ before the broadcast.
    tf.keras.utils.set_random_seed(10 + ctx.rank)
    own = TinyModel()
    own(tf.zeros([1, N_EL, 12]))
    before = distributed.allgather_object(weights(own))
    assert max_diff(before[0], before[1]) > 1e-2

    snapshots = []

    class Snapshot(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            snapshots.append(weights(self.model)
                             + [v.numpy() for v in self.model.optimizer.variables])

    result = train(None, None, sgd_one_step(seed=10 + ctx.rank, optimizer="adam", lr=0.01),
                   datasets=sharded(4 * B, 2 * B, B), model_builder=tiny_builder,
                   callbacks=[Snapshot()])
    start = distributed.allgather_object(snapshots[0])
    assert max_diff(start[0], start[1]) == 0.0  # model and optimizer state identical
    assert max_diff(start[1][:len(before[0])], before[0]) == 0.0  # rank 0's initialisation
    after = distributed.allgather_object(weights(result.model))
    assert max_diff(after[0], after[1]) == 0.0  # and they stay identical after a step
    assert result.ranks == 2 and result.global_batch_size == 2 * B


@pytest.mark.timeout(300)
def test_one_sgd_step_on_two_ranks_equals_double_batch_on_one(ctx):
    dist = train(None, None, sgd_one_step(seed=3), datasets=sharded(4 * B, 4 * B, B),
                 model_builder=tiny_builder)
    ref = train(None, None, sgd_one_step(seed=3, batch_size=2 * B),
                datasets=sharded(4 * B, 4 * B, 2 * B), model_builder=tiny_builder,
                context=distributed.LOCAL)
    assert ref.ranks == 1 and dist.ranks == 2
    diff = max_diff(weights(dist.model), weights(ref.model))
    assert diff <= 1e-5, diff
    # the step moved the weights far more than the tolerance
    init = train(None, None, sgd_one_step(seed=3, steps_per_epoch=1, lr=1e-12),
                 datasets=sharded(4 * B, 4 * B, 2 * B), model_builder=tiny_builder,
                 context=distributed.LOCAL)
    assert max_diff(weights(init.model), weights(ref.model)) > 1e-3
    # the averaged training loss is the loss of the 2b-event batch, the same on both ranks
    losses = distributed.allgather_object(dist.history[0]["loss"])
    assert losses[0] == losses[1]
    assert losses[0] == pytest.approx(ref.history[0]["loss"], abs=1e-5)


@pytest.mark.timeout(300)
def test_validation_metrics_are_averaged_over_ranks(ctx):
    # rank r validates on its own shard; the logged val_loss is the mean of the ranks' values
    result = train(None, None, TrainConfig(epochs=2, batch_size=B, lr=0.01, seed=1),
                   datasets=sharded(8 * B, 4 * B, B), model_builder=tiny_builder)
    logged = distributed.allgather_object([h["val_loss"] for h in result.history])
    assert logged[0] == logged[1]
    _, val = sharded(8 * B, 4 * B, B)(ctx)
    local = result.model.evaluate(val, verbose=0, return_dict=True)["loss"]
    per_rank = distributed.allgather_object(local)
    assert abs(per_rank[0] - per_rank[1]) > 1e-4  # different shards, different losses
    assert logged[0][-1] == pytest.approx(np.mean(per_rank), abs=1e-6)


@pytest.mark.timeout(300)
def test_nan_on_one_rank_stops_both_ranks(ctx, shared_dir):
    # rank 1's 10th event is NaN: batch 1 of epoch 2 (2 streaming steps per epoch)
    def factory(c):
        data = arrays(8 * B, c.rank, nan_events=(9,) if c.rank == 1 else ())
        return tf.data.Dataset.from_tensor_slices(data).batch(B, drop_remainder=True), None

    cfg = TrainConfig(epochs=3, batch_size=B, lr=0.01, steps_per_epoch=2)
    with pytest.raises(NonFiniteLossError) as info:
        train(None, None, cfg, run_dir=shared_dir, datasets=factory, model_builder=tiny_builder)
    pattern = (r"non-finite training loss at epoch 2/3 \(epoch index 1\), batch 1/2: on "
               rf"rank\(s\) 1 \(this rank {ctx.rank}: loss=(\S+)\)")
    match = re.fullmatch(pattern, str(info.value))
    assert match, str(info.value)
    assert (match.group(1) == "nan") == (ctx.rank == 1)
    assert (info.value.epoch, info.value.batch, info.value.ranks) == (1, 0, [1])
    # both ranks are still in step: a collective after the failure completes
    assert distributed.allgather_object(ctx.rank) == [0, 1]
    # rank 0 wrote the checkpoint of epoch 1 and nothing for the failed epoch
    assert sorted(os.listdir(os.path.join(shared_dir, "checkpoints"))) == ["epoch-0001",
                                                                          "latest"]


class _BatchCounter(tf.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_end(self, batch, logs=None):
        self.batches += 1


@pytest.mark.timeout(300)
def test_nan_is_reported_at_the_next_agreement_with_its_first_batch(ctx):
    # rank 1's event 4*B+1 is NaN: batch index 4 of 8. With checks every 3 batches the ranks
    # agree after batch indices 2 and 5, so both stop after batch index 5 (the counter, which
    # runs after the guard, saw 5 batches) and name batch 5/8 and rank 1.
    def factory(c):
        data = arrays(8 * B, c.rank, nan_events=(4 * B + 1,) if c.rank == 1 else ())
        return tf.data.Dataset.from_tensor_slices(data).batch(B, drop_remainder=True), None

    counter = _BatchCounter()
    cfg = TrainConfig(epochs=1, batch_size=B, lr=0.01, steps_per_epoch=8,
                      nonfinite_check_every=3)
    with pytest.raises(NonFiniteLossError) as info:
        train(None, None, cfg, datasets=factory, model_builder=tiny_builder,
              callbacks=[counter])
    assert (info.value.epoch, info.value.batch, info.value.ranks) == (0, 4, [1])
    assert "epoch 1/1 (epoch index 0), batch 5/8: on rank(s) 1 " in str(info.value)
    assert np.isfinite(info.value.value) == (ctx.rank == 0)
    assert counter.batches == 5
    assert distributed.allgather_object(counter.batches) == [5, 5]


@pytest.mark.timeout(300)
def test_resume_on_two_ranks_equals_straight_run(ctx, shared_dir):
    cfg = TrainConfig(epochs=3, batch_size=B, lr=0.01, seed=4, lr_schedule="exponential",
                      decay_steps=3, decay_rate=0.5)
    data = sharded(8 * B, 2 * B, B)
    straight = train(None, None, cfg, datasets=data, model_builder=tiny_builder)
    train(None, None, cfg, epochs=1, run_dir=shared_dir, datasets=data,
          model_builder=tiny_builder)
    resumed = train(None, None, cfg, datasets=data, model_builder=tiny_builder,
                    resume_from=os.path.join(shared_dir, "checkpoints"))
    assert resumed.initial_epoch == 1 and resumed.epochs_done == 3
    assert max_diff(weights(straight.model), weights(resumed.model)) <= 1e-6
    assert int(resumed.model.optimizer.iterations.numpy()) == 3 * 4
    both = distributed.allgather_object(weights(resumed.model))
    assert max_diff(both[0], both[1]) == 0.0


@pytest.mark.timeout(300)
def test_mixed_precision_steps_stay_identical_on_both_ranks(ctx):
    # loss scaling wraps the averaging optimizer: both ranks apply (or skip) the same steps
    result = train(None, None, sgd_one_step(mixed_precision=True, steps_per_epoch=3,
                                            optimizer="adam", lr=0.01),
                   datasets=sharded(4 * B, 2 * B, B), model_builder=tiny_builder)
    assert isinstance(result.model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    assert result.model.d1.compute_dtype == "float16"
    both = distributed.allgather_object(weights(result.model))
    assert max_diff(both[0], both[1]) == 0.0
    assert int(result.model.optimizer.iterations.numpy()) == 3


@pytest.mark.timeout(300)
def test_bad_checkpoint_fails_on_both_ranks(ctx, shared_dir):
    missing = os.path.join(shared_dir, "nope")
    with pytest.raises(CheckpointError) as info:
        train(None, None, sgd_one_step(), datasets=sharded(4 * B, 2 * B, B),
              model_builder=tiny_builder, resume_from=missing)
    assert str(info.value) == f"no checkpoint at {missing}: the path does not exist"
    # a checkpoint that rank 0 cannot restore (another architecture) fails on both ranks too
    train(None, None, sgd_one_step(), run_dir=shared_dir, datasets=sharded(4 * B, 2 * B, B),
          model_builder=tiny_builder)
    with pytest.raises(CheckpointError, match="is corrupt or does not fit this model"):
        train(None, None, sgd_one_step(epochs=2), datasets=sharded(4 * B, 2 * B, B),
              model_builder=lambda _cfg: TinyModel(hidden=5),
              resume_from=os.path.join(shared_dir, "checkpoints"))
    assert distributed.allgather_object(ctx.rank) == [0, 1]


def _real_modules_available() -> bool:
    try:
        import mlpf_tf.data.generate  # noqa: F401
        import mlpf_tf.data.pipeline  # noqa: F401
        import mlpf_tf.model.network  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.timeout(600)
@pytest.mark.skipif(not _real_modules_available(), reason="model or data modules missing")
def test_real_model_one_step_two_ranks_equals_double_batch(ctx, shared_dir):
    """MLPF model + gun pipeline: 2 ranks x 2 events == 1 rank x 4 events (weights 1e-5)."""
    from mlpf_tf.data.config import DataConfig
    from mlpf_tf.model.config import ModelConfig

    data_cfg = DataConfig(config="gun", n_train=8, n_validation=2, n_test=2,
                          data_dir=os.path.join(shared_dir, "tfds"), padding="fixed",
                          max_elements=128, truncate=True, shuffle_buffer=0)
    model_cfg = ModelConfig(hidden_dim=16, output_dim=16, distance_dim=8, bin_size=16,
                            ffn_dist_hidden_dim=16, head_hidden_dim=16, head_num_layers=1,
                            num_graph_layers_common=1, num_graph_layers_energy=1)
    cfg = sgd_one_step(seed=2, batch_size=2, lr=0.05, validation_steps=1)
    dist = train(data_cfg, model_cfg, cfg)
    ref = train(data_cfg, model_cfg, cfg.replace(batch_size=4), context=distributed.LOCAL)
    diff = max_diff(weights(dist.model), weights(ref.model))
    assert diff <= 1e-5, diff
    both = distributed.allgather_object(weights(dist.model))
    assert max_diff(both[0], both[1]) == 0.0
    losses = distributed.allgather_object(dist.history[0]["loss"])
    assert losses[0] == losses[1] == pytest.approx(ref.history[0]["loss"], rel=1e-5)


@pytest.mark.timeout(120)
def test_gradient_allreduce_timing_is_one_positive_time_per_call_on_each_rank(ctx):
    """``benchmark.weak_scaling``'s allreduce figure: the flat per-dtype average of tensors
    shaped like the variables, timed per call; no collective (no figure) with one rank."""
    variables = [tf.Variable(tf.ones([30, 40])), tf.Variable(tf.ones([50]))]
    seconds = distributed.time_gradient_allreduce(variables, 5, ctx)
    assert len(seconds) == 5 and all(0.0 < s < 10.0 for s in seconds), seconds
    assert distributed.allgather_object(len(seconds), ctx) == [5] * ctx.size
    assert distributed.time_gradient_allreduce(variables, 5, distributed.LOCAL) == []
