"""train.train on one process: exact resume, non-finite losses, schedules, config errors.

Most tests use a tiny stand-in model with the MLPF training contract (batches (X, y, w), its own
GradientTape, ``optimizer.apply_gradients``, a loss normalised per event); one test trains the
real MLPF model on the real pipeline's synthetic gun events.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import tensorflow as tf

from mlpf_tf import checkpoint as ckpt
from mlpf_tf import distributed
from mlpf_tf.configbase import ConfigError
from mlpf_tf.train import NonFiniteLossError, configure_threads, make_optimizer, train
from mlpf_tf.train_config import TrainConfig

configure_threads(1, 1)

from tests.tinymodel import N_EL, arrays, tiny_builder  # noqa: E402


def make_datasets(n_train=32, n_val=8, batch=4, shuffle_seed=None, nan_train=(), nan_val=()):
    """A factory train() calls after seeding (so seeded shuffles repeat exactly)."""

    def factory(ctx):
        train_ds = tf.data.Dataset.from_tensor_slices(arrays(n_train, 0, nan_train))
        if shuffle_seed is not None:
            train_ds = train_ds.shuffle(n_train, seed=shuffle_seed, reshuffle_each_iteration=True)
        val_ds = tf.data.Dataset.from_tensor_slices(arrays(n_val, 1, nan_val))
        return train_ds.batch(batch, drop_remainder=True), val_ds.batch(batch)

    return factory


def weights(model):
    return [v.numpy() for v in model.variables]


def max_diff(a, b):
    assert len(a) == len(b)
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


# -- resume ------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["exponential", "cosine"])
def test_two_plus_two_epochs_equal_four_straight(tmp_path, schedule):
    """Weights, Adam slots, step counter and logs: 2 epochs + resume 2 == 4 straight.

    Deterministic setup: fixed seeds, seeded reshuffling every epoch, one thread. Tolerance:
    1e-6 absolute (the same float32 operations run in the same order; observed 0).
    """
    cfg = TrainConfig(epochs=4, batch_size=4, lr=0.01, lr_schedule=schedule, decay_steps=5,
                      decay_rate=0.5, cosine_alpha=0.1, seed=3)
    data = make_datasets(shuffle_seed=7)
    straight = train(None, None, cfg, run_dir=str(tmp_path / "a"), datasets=data,
                     model_builder=tiny_builder)
    first = train(None, None, cfg, epochs=2, run_dir=str(tmp_path / "b"), datasets=data,
                  model_builder=tiny_builder)
    assert first.checkpoint == str(tmp_path / "b" / "checkpoints" / "epoch-0002")
    resumed = train(None, None, cfg, run_dir=str(tmp_path / "b"), datasets=data,
                    model_builder=tiny_builder, resume_from=str(tmp_path / "b" / "checkpoints"))

    assert (straight.steps_per_epoch, resumed.initial_epoch, resumed.epochs_done) == (8, 2, 4)
    assert [h["epoch"] for h in resumed.history] == [2, 3]
    assert max_diff(weights(straight.model), weights(resumed.model)) <= 1e-6
    opt_a, opt_b = straight.model.optimizer, resumed.model.optimizer
    assert int(opt_a.iterations.numpy()) == int(opt_b.iterations.numpy()) == 32
    slots_a, slots_b = weights(opt_a), weights(opt_b)
    assert len(slots_a) == 1 + 2 * len(straight.model.trainable_variables)  # step + m, v
    assert max_diff(slots_a, slots_b) <= 1e-6
    for a, b in zip(straight.history[2:], resumed.history):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], abs=1e-6)
    # Without the optimizer state the continuation differs: the check above is not vacuous.
    fresh = train(None, None, cfg, initial_epoch=2, datasets=data, model_builder=tiny_builder)
    assert max_diff(weights(straight.model), weights(fresh.model)) > 1e-3


def test_resume_checks_initial_epoch_and_keeps_checkpoints(tmp_path):
    cfg = TrainConfig(epochs=3, batch_size=4, lr=0.01, keep_checkpoints=2)
    run = str(tmp_path / "run")
    train(None, None, cfg, run_dir=run, datasets=make_datasets(), model_builder=tiny_builder)
    names = sorted(os.listdir(os.path.join(run, "checkpoints")))
    assert names == ["epoch-0002", "epoch-0003", "latest"]
    assert ckpt.read_metadata(os.path.join(run, "checkpoints"))["steps_per_epoch"] == 8
    with pytest.raises(ValueError, match=r"^initial_epoch=1 but checkpoint .*epoch-0003 holds 3 "
                                         r"epochs$"):
        train(None, None, cfg, initial_epoch=1, datasets=make_datasets(),
              model_builder=tiny_builder, resume_from=os.path.join(run, "checkpoints"))
    done = train(None, None, cfg, datasets=make_datasets(), model_builder=tiny_builder,
                 resume_from=os.path.join(run, "checkpoints"))
    assert (done.history, done.epochs_done) == ([], 3)


def test_an_early_stop_is_checkpointed_between_checkpoint_epochs(tmp_path):
    """A trial stopped after epoch 2 (the wall-time signal, an oracle stop) keeps a checkpoint
    of epoch 2 even when --train.checkpoint_every_epochs=0 saves only the last epoch, so it can
    continue from there; a run that is not stopped still saves only at the end."""

    class StopAfter(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == 2:
                self.model.stop_training = True

    cfg = TrainConfig(epochs=4, batch_size=4, lr=0.01, checkpoint_every_epochs=0)
    run = str(tmp_path / "run")
    stopped = train(None, None, cfg, run_dir=run, datasets=make_datasets(),
                    model_builder=tiny_builder, callbacks=[StopAfter()])
    assert stopped.checkpoint == os.path.join(run, "checkpoints", "epoch-0002")
    assert ckpt.read_metadata(os.path.join(run, "checkpoints"))["epoch"] == 2
    resumed = train(None, None, cfg, run_dir=run, datasets=make_datasets(),
                    model_builder=tiny_builder, resume_from=os.path.join(run, "checkpoints"))
    assert (resumed.initial_epoch, resumed.epochs_done) == (2, 4)
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == [
        "epoch-0002", "epoch-0004", "latest"]


def test_same_seed_same_trial_twice_in_one_process():
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.05, optimizer="sgd", momentum=0.9, seed=11)
    a = train(None, None, cfg, datasets=make_datasets(shuffle_seed=1), model_builder=tiny_builder)
    b = train(None, None, cfg, datasets=make_datasets(shuffle_seed=1), model_builder=tiny_builder)
    assert max_diff(weights(a.model), weights(b.model)) == 0.0
    assert [h["val_loss"] for h in a.history] == [h["val_loss"] for h in b.history]
    c = train(None, None, cfg.replace(seed=12), datasets=make_datasets(shuffle_seed=1),
              model_builder=tiny_builder)
    assert max_diff(weights(a.model), weights(c.model)) > 1e-3


# -- non-finite losses -------------------------------------------------------------------------


def test_nan_training_loss_names_epoch_and_batch(tmp_path):
    # streaming epochs of 2 steps: the 3rd batch (events 8..11) is batch 1 of epoch 2
    cfg = TrainConfig(epochs=3, batch_size=4, lr=0.01, steps_per_epoch=2)
    run = str(tmp_path / "run")
    with pytest.raises(NonFiniteLossError) as info:
        train(None, None, cfg, run_dir=run, datasets=make_datasets(nan_train=(9,)),
              model_builder=tiny_builder)
    assert str(info.value) == ("non-finite training loss at epoch 2/3 (epoch index 1), batch "
                               "1/2: on rank(s) 0 (this rank 0: loss=nan)")
    assert (info.value.epoch, info.value.batch, info.value.ranks) == (1, 0, [0])
    assert math.isnan(info.value.value)
    # epoch 1 was checkpointed, the failed epoch 2 was not
    assert sorted(os.listdir(os.path.join(run, "checkpoints"))) == ["epoch-0001", "latest"]


def test_nan_validation_loss_names_epoch():
    cfg = TrainConfig(epochs=2, batch_size=4, lr=0.01)
    with pytest.raises(NonFiniteLossError, match=r"^non-finite validation loss at epoch 1/2 "
                                                 r"\(epoch index 0\): val_loss=nan \(mean over "
                                                 r"ranks\)$") as info:
        train(None, None, cfg, datasets=make_datasets(nan_val=(2,)), model_builder=tiny_builder)
    assert (info.value.epoch, info.value.batch) == (0, None)


# -- optimizer, schedules, hooks ---------------------------------------------------------------


def schedule_of(optimizer):
    return tf.keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])


def test_lr_scaling_and_schedules():
    base = TrainConfig(lr=0.01)
    assert make_optimizer(base, 4).learning_rate.numpy() == pytest.approx(0.04)
    assert make_optimizer(base.replace(lr_scaling="sqrt"), 4).learning_rate.numpy() == \
        pytest.approx(0.02)
    assert make_optimizer(base.replace(lr_scaling="none"), 4).learning_rate.numpy() == \
        pytest.approx(0.01)
    exp = schedule_of(make_optimizer(base.replace(lr_schedule="exponential", decay_steps=10,
                                                  decay_rate=0.5), 2))
    assert float(exp(20)) == pytest.approx(0.02 * 0.25)
    cos = schedule_of(make_optimizer(base.replace(lr_schedule="cosine", decay_steps=500,
                                                  cosine_alpha=0.1), 1, total_steps=10))
    assert float(cos(0)) == pytest.approx(0.01)
    assert float(cos(10)) == pytest.approx(0.001)
    sgd = make_optimizer(base.replace(optimizer="sgd", momentum=0.5), 1)
    assert isinstance(sgd, tf.keras.optimizers.SGD) and sgd.momentum == 0.5


def test_hook_and_callbacks_see_epoch_logs_in_order():
    seen, cb_seen = [], []

    class Spy(tf.keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            cb_seen.append((epoch, round(float(logs["val_loss"]), 6)))

    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.01, validation_steps=1)
    result = train(None, None, cfg, datasets=make_datasets(batch=8), model_builder=tiny_builder,
                   callbacks=[Spy()], on_epoch_end=lambda e, logs: seen.append((e, logs)))
    assert [e for e, _ in seen] == [0, 1, 2]
    assert set(seen[0][1]) == {"epoch", "loss", "val_loss", "epoch_seconds"}
    assert [round(logs["val_loss"], 6) for _, logs in seen] == [v for _, v in cb_seen]
    assert result.steps_per_epoch == 4 and len(result.epoch_seconds) == 3
    assert all(s > 0 for s in result.epoch_seconds)
    assert result.final_metrics["val_loss"] == seen[-1][1]["val_loss"]
    assert (result.ranks, result.global_batch_size, result.lr) == (1, 8, 0.01)


def test_mixed_precision_policy_is_scoped_to_the_trial():
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.01, mixed_precision=True)
    result = train(None, None, cfg, datasets=make_datasets(), model_builder=tiny_builder)
    assert result.model.d1.compute_dtype == "float16"
    assert result.model.d1.kernel.dtype == tf.float32
    assert isinstance(result.model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    assert math.isfinite(result.history[0]["loss"])
    assert tf.keras.mixed_precision.global_policy().name == "float32"


def test_jit_compile_trains_like_the_plain_step():
    cfg = TrainConfig(epochs=1, batch_size=4, lr=0.01, steps_per_epoch=3)
    plain = train(None, None, cfg, datasets=make_datasets(), model_builder=tiny_builder)
    jit = train(None, None, cfg.replace(jit_compile=True), datasets=make_datasets(),
                model_builder=tiny_builder)
    assert max_diff(weights(plain.model), weights(jit.model)) <= 1e-5


def test_bad_arguments_fail_before_compute():
    with pytest.raises(ValueError, match=r"^initial_epoch=5 must lie in \[0, epochs=3\]$"):
        train(None, None, TrainConfig(epochs=3), initial_epoch=5, datasets=make_datasets(),
              model_builder=tiny_builder)
    with pytest.raises(ValueError, match="no full batch of --train.batch_size=64 events"):
        train(None, None, TrainConfig(epochs=1, batch_size=64), datasets=make_datasets(batch=64),
              model_builder=tiny_builder)
    with pytest.raises(ckpt.CheckpointError, match=r"^no checkpoint at /nonexistent/ckpt: the "
                                                   r"path does not exist$"):
        train(None, None, TrainConfig(), resume_from="/nonexistent/ckpt",
              datasets=make_datasets(), model_builder=tiny_builder)
    with pytest.raises(ValueError, match=r"jit_compile=True with 2 Horovod ranks"):
        train(None, None, TrainConfig(jit_compile=True), datasets=make_datasets(),
              model_builder=tiny_builder, context=distributed.Context(size=2, enabled=True))


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("changes, message", [
    (dict(lr=0.0), "--train.lr=0.0: must be > 0"),
    (dict(lr=20.0), "--train.lr=20.0: must be <= 10.0"),
    (dict(optimizer="rmsprop"), "--train.optimizer='rmsprop': must be one of adam, sgd"),
    (dict(lr_schedule="step"),
     "--train.lr_schedule='step': must be one of constant, exponential, cosine"),
    (dict(lr_scaling="cubic"), "--train.lr_scaling='cubic': must be one of linear, sqrt, none"),
    (dict(batch_size=0), "--train.batch_size=0: must be >= 1"),
    (dict(epochs=2.5), "--train.epochs=2.5: expected an integer"),
    (dict(jit_compile="yes"), "--train.jit_compile='yes': expected true or false"),
    (dict(decay_rate=1.5), "--train.decay_rate=1.5: must be <= 1.0"),
    (dict(lr_schedule="exponential", decay_rate=0.0),
     "--train.decay_rate=0.0: must be > 0 for --train.lr_schedule=exponential"),
    (dict(momentum=0.9), "--train.momentum=0.9: applies to --train.optimizer=sgd only, not "
                         "'adam'; leave it 0"),
    (dict(optimizer="sgd", momentum=1.0), "--train.momentum=1.0: must be < 1"),
    (dict(verbose=3), "--train.verbose=3: must be <= 2"),
    (dict(checkpoint_every_epochs=-1), "--train.checkpoint_every_epochs=-1: must be >= 0"),
])
def test_config_errors_name_flag_and_value(changes, message):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**changes).validate()
    assert str(info.value) == message


def test_config_round_trip():
    cfg = TrainConfig(epochs=7, lr=3e-4, lr_schedule="cosine", optimizer="sgd", momentum=0.5)
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg
    again.validate()
    with pytest.raises(ConfigError, match="unknown train field"):
        TrainConfig.from_dict({"epochz": 3})


# -- the real model on the real pipeline -------------------------------------------------------


def _real_modules_available() -> bool:
    try:
        import mlpf_tf.data.generate  # noqa: F401
        import mlpf_tf.data.pipeline  # noqa: F401
        import mlpf_tf.model.network  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _real_modules_available(), reason="model or data modules missing")
def test_real_model_on_gun_events_resumes_exactly(tmp_path):
    """MLPF model + synthetic_pf/gun pipeline: 1 epoch + resume 1 == 2 epochs (1e-5)."""
    from mlpf_tf.data.config import DataConfig
    from mlpf_tf.model.config import ModelConfig

    data_cfg = DataConfig(config="gun", n_train=16, n_validation=4, n_test=4,
                          data_dir=str(tmp_path / "tfds"), padding="fixed", max_elements=128,
                          truncate=True, shuffle_buffer=16)
    model_cfg = ModelConfig(hidden_dim=16, output_dim=16, distance_dim=8, bin_size=16,
                            ffn_dist_hidden_dim=16, head_hidden_dim=16, head_num_layers=1,
                            num_graph_layers_common=1, num_graph_layers_energy=1)
    cfg = TrainConfig(epochs=2, batch_size=4, lr=1e-3, seed=5, lr_schedule="exponential",
                      decay_steps=2, decay_rate=0.9)
    run = str(tmp_path / "run")
    straight = train(data_cfg, model_cfg, cfg, run_dir=run)
    assert straight.steps_per_epoch == 4
    assert {"loss", "cls_loss", "accuracy", "val_loss", "val_accuracy"} <= set(
        straight.history[0])
    assert all(math.isfinite(h["loss"]) and math.isfinite(h["val_loss"])
               for h in straight.history)
    resumed = train(data_cfg, model_cfg, cfg,
                    resume_from=os.path.join(run, "checkpoints", "epoch-0001"))
    assert resumed.initial_epoch == 1
    assert max_diff(weights(straight.model), weights(resumed.model)) <= 1e-5
    assert int(resumed.model.optimizer.iterations.numpy()) == 8
    assert resumed.history[0]["val_loss"] == pytest.approx(straight.history[1]["val_loss"],
                                                           abs=1e-5)
    assert os.path.isdir(os.path.join(run, "tensorboard"))


# -- validation every epoch --------------------------------------------------------------------


def test_every_epoch_has_validation_logs_when_a_later_pass_is_shorter():
    """A validation pass shorter than the first (unknown cardinality) must not drop val_*.

    Keras keeps one evaluation handler per fit(); without a fixed validation step count it
    takes the count from the first pass and, when a later pass ends early, logs "ran out of
    data" and returns no validation logs for every following epoch.
    """
    X, y, w = arrays(12, 1)
    calls = []

    def batches():
        calls.append(1)
        n = 3 if len(calls) <= 2 else 2  # later passes end one batch early
        for i in range(n):
            yield X[4 * i:4 * i + 4], y[4 * i:4 * i + 4], w[4 * i:4 * i + 4]

    spec = (tf.TensorSpec((None, N_EL, 12), tf.float32),
            tf.TensorSpec((None, N_EL, 7), tf.float32), tf.TensorSpec((None, N_EL), tf.float32))

    def factory(ctx):
        train_ds = tf.data.Dataset.from_tensor_slices(arrays(16, 0)).batch(4, drop_remainder=True)
        return train_ds, tf.data.Dataset.from_generator(batches, output_signature=spec)

    cfg = TrainConfig(epochs=4, batch_size=4, lr=0.01)
    result = train(None, None, cfg, datasets=factory, model_builder=tiny_builder)
    assert [h["epoch"] for h in result.history] == [0, 1, 2, 3]
    assert ["val_loss" in h for h in result.history] == [True] * 4
    assert all(math.isfinite(h["val_loss"]) for h in result.history)
    assert result.final_metrics["val_loss"] == result.history[-1]["val_loss"]


def test_real_pipeline_keeps_validation_logs_over_epochs(tmp_path):
    """Smoke-like setting (cached gun events, batch 4, three epochs): val_loss every epoch."""
    pytest.importorskip("mlpf_tf.model.network")
    from mlpf_tf.data.config import DataConfig
    from mlpf_tf.model.config import ModelConfig

    data_cfg = DataConfig(config="gun", n_train=16, n_validation=12, n_test=4,
                          data_dir=str(tmp_path / "tfds"), padding="fixed", max_elements=128,
                          truncate=True, shuffle_buffer=16, cache=True)
    model_cfg = ModelConfig(hidden_dim=8, output_dim=8, distance_dim=8, bin_size=16,
                            ffn_dist_hidden_dim=8, head_hidden_dim=8, head_num_layers=1,
                            num_graph_layers_common=1, num_graph_layers_energy=1)
    cfg = TrainConfig(epochs=3, batch_size=4, lr=1e-3, seed=3)
    result = train(data_cfg, model_cfg, cfg)
    assert result.steps_per_epoch == 4
    assert [sorted(k for k in h if k.startswith("val_")) for h in result.history] == [
        sorted(k for k in result.history[0] if k.startswith("val_"))] * 3
    assert all(math.isfinite(h["val_loss"]) for h in result.history)
