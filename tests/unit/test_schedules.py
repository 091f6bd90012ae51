"""Learning-rate schedules: cosine spans the trial, staircase decay, LR scaling recorded."""

from __future__ import annotations

import itertools

import pytest
import tensorflow as tf

from mlpf_tf.train import make_optimizer, schedule_settings, schedule_steps
from mlpf_tf.train_config import TrainConfig
from tuners import space


def _lr(optimizer, step: int) -> float:
    schedule = tf.keras.optimizers.schedules.deserialize(
        optimizer.get_config()["learning_rate"])
    return float(schedule(step))


def _values(hp, name):
    """Every value (Int/Choice) or the two ends (Float) the space can draw for ``name``."""
    p = hp._hps[name][0]
    kind = type(p).__name__
    if kind == "Choice":
        return list(p.values)
    if kind == "Int":
        return list(range(p.min_value, p.max_value + 1, p.step or 1))
    return [p.min_value, p.max_value]


@pytest.mark.parametrize("space_name", ["reference", "reduced"])
def test_cosine_lr_is_above_zero_until_the_trials_last_step(space_name):
    """For every batch size and the extreme learning rates and decay settings the space can
    draw, at data sizes from the smoke preset (192 events) to Delphes (45,000), 1 or 4 ranks,
    and every budget from one epoch to the maximum: the LR on the trial's last step is > 0."""
    hp = space.build_space(space_name)
    names = [p.name for p in hp.space]
    decay = _values(hp, "decay_steps") if "decay_steps" in names else [1000]
    decay = [min(decay), max(decay)]
    checked = 0
    for batch, lr, decay_steps, n_train, ranks in itertools.product(
            _values(hp, "batch_size"), _values(hp, "lr"), decay, (192, 45_000), (1, 4)):
        steps = n_train // (batch * ranks)
        if steps < 1:
            continue  # train() refuses this combination before compute
        for max_epochs, end_epoch in ((1, 1), (4, 1), (4, 4), (100, 5), (100, 100)):
            cfg = TrainConfig(lr=lr, batch_size=batch, epochs=max_epochs, lr_schedule="cosine",
                              decay_steps=decay_steps, lr_scaling="none")
            total = schedule_steps(cfg, end_epoch, steps)
            opt = make_optimizer(cfg, ranks, total)
            last = end_epoch * steps - 1
            assert _lr(opt, last) > 0.0, (batch, lr, decay_steps, n_train, ranks, end_epoch)
            assert _lr(opt, last) >= _lr(opt, last + 1) >= 0.0
            assert _lr(opt, 0) == pytest.approx(lr)
            checked += 1
    assert checked > 100


def test_cosine_spans_the_largest_budget_and_ignores_decay_steps():
    cfg = TrainConfig(lr=0.01, epochs=10, lr_schedule="cosine", decay_steps=10)
    assert schedule_steps(cfg, 3, 50) == 500  # resumed rungs see one schedule
    assert schedule_steps(cfg, 12, 50) == 600  # a budget beyond --train.epochs extends it
    opt = make_optimizer(cfg, 1, 500)
    assert _lr(opt, 250) == pytest.approx(0.005)  # half way: half the rate
    assert _lr(opt, 10) > 0.0099
    with pytest.raises(ValueError, match="total training steps"):
        make_optimizer(cfg, 1)


def test_exponential_staircase_follows_the_variant():
    cfg = TrainConfig(lr=1e-3, lr_schedule="exponential", decay_steps=100, decay_rate=0.5,
                      lr_scaling="none")
    ref = make_optimizer(cfg, 1, variant="reference")
    imp = make_optimizer(cfg, 1, variant="improved")
    assert _lr(ref, 150) == pytest.approx(5e-4)  # whole steps: one decay so far
    assert _lr(imp, 150) == pytest.approx(1e-3 * 0.5 ** 1.5)
    assert _lr(make_optimizer(cfg.replace(staircase="off"), 1, variant="reference"), 150) == \
        pytest.approx(1e-3 * 0.5 ** 1.5)
    assert _lr(make_optimizer(cfg.replace(staircase="on"), 1), 150) == pytest.approx(5e-4)


def test_lr_scaling_is_recorded():
    cfg = TrainConfig(lr=1e-4, lr_schedule="exponential", lr_scaling="linear")
    got = schedule_settings(cfg, 4)
    assert (got["lr"], got["base_lr"], got["lr_scaling"], got["ranks"]) == \
        (pytest.approx(4e-4), 1e-4, "linear", 4)
    assert schedule_settings(cfg.replace(lr_scaling="none"), 4)["lr"] == 1e-4


def test_delphes_paper_trains_the_reference_variant_unscaled():
    from benchmark import experiments
    from mlpf_tf.model import ModelConfig

    over = experiments.get("delphes_paper").overrides
    assert over["model"]["variant"] == "reference"
    assert ModelConfig(**over["model"]).options().loss == "reference"
    cfg = TrainConfig(**over["train"])
    got = schedule_settings(cfg, 4, variant="reference")
    assert (got["lr"], got["staircase"], got["decay_steps"]) == (1e-4, True, 10000)
