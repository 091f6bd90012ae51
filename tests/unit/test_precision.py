"""--train.precision: bfloat16 and float16 train to the float32 losses within a stated
tolerance; the policy, the loss scaling and the config rules."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.unit.test_network import batch
from tests.unit.test_step_options import small_cfg

#: relative tolerance of the loss after a few steps in reduced precision against float32:
#: bfloat16 keeps 8 significant bits (relative rounding 2^-9 = 0.2 % per operation) and
#: float16 11; the float16 first-step loss was measured 0.52 % off float32 on this data
#: (the inputs enter in GeV, where float16 rounds pT and E coarsely)
PRECISION_RTOL = {"bfloat16": 0.02, "float16": 0.01}


def precision_run(precision: str, steps: int = 4):
    """Running-mean training loss after every step of the small model under
    ``--train.precision`` (the Keras batch logs)."""
    from mlpf_tf.train import train
    from mlpf_tf.train_config import TrainConfig

    X, y, w = batch(8, 40, seed=4)

    def datasets(ctx):
        ds = tf.data.Dataset.from_tensor_slices((X, y, w)).batch(2, drop_remainder=True)
        return ds, None

    losses = []

    class Record(tf.keras.callbacks.Callback):
        def on_train_batch_end(self, step, logs=None):
            losses.append(float(logs["loss"]))

    cfg = TrainConfig(epochs=1, batch_size=2, lr=1e-3, steps_per_epoch=steps, seed=3,
                      precision=precision)
    result = train(None, small_cfg(), cfg, datasets=datasets, callbacks=[Record()])
    return result, losses


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_reduced_precision_trains_to_the_float32_loss(precision):
    base, base_losses = precision_run("float32")
    low, low_losses = precision_run(precision)
    assert len(low_losses) == len(base_losses) == 4
    assert low.model.common_layers[0].messages[0].w_msg.compute_dtype == precision
    assert low.model.common_layers[0].messages[0].w_msg.kernel.dtype == tf.float32
    scaled = isinstance(low.model.optimizer, tf.keras.mixed_precision.LossScaleOptimizer)
    assert scaled == (precision == "float16")
    assert tf.keras.mixed_precision.global_policy().name == "float32"
    assert low_losses != base_losses  # the policy did change the arithmetic
    if precision == "float16":
        # Dynamic loss scaling starts at 2^15: the loss (~100) times that overflows float16
        # gradients, so the first steps are skipped while the scale halves. Only the first
        # step's loss (computed before any update) is comparable.
        assert low_losses[0] == pytest.approx(base_losses[0], rel=PRECISION_RTOL[precision])
        assert float(low.model.optimizer.loss_scale) < 2.0 ** 15
    else:
        np.testing.assert_allclose(low_losses, base_losses, rtol=PRECISION_RTOL[precision])


def test_mixed_precision_flag_contradicting_precision_is_refused():
    from mlpf_tf.configbase import ConfigError
    from mlpf_tf.train_config import TrainConfig

    with pytest.raises(ConfigError, match=r"--train.mixed_precision=True: means "
                       r"--train.precision=float16 and contradicts --train.precision=bfloat16"):
        TrainConfig(mixed_precision=True, precision="bfloat16").validate()
    assert TrainConfig(mixed_precision=True).policy == "mixed_float16"
    assert TrainConfig(precision="bfloat16").policy == "mixed_bfloat16"
    assert not TrainConfig(precision="bfloat16").loss_scaling
