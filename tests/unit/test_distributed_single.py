"""mlpf_tf.distributed in one process: size-1 context, identity collectives, fallbacks.

The multi-rank behaviour is tested under horovodrun in tests/parallel/test_hvd_training.py.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from mlpf_tf import distributed

try:
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:  # already initialised by another test module
    pass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_init_without_horovodrun_is_size_one_and_idempotent():
    ctx = distributed.init()
    assert (ctx.rank, ctx.size, ctx.local_rank, ctx.local_size) == (0, 1, 0, 1)
    assert ctx.is_root and not ctx.collective
    assert distributed.init() is ctx
    assert distributed.current() is ctx


def test_collectives_are_identities_with_one_rank():
    distributed.init()
    assert distributed.allreduce_mean(2.5) == 2.5
    np.testing.assert_array_equal(distributed.allreduce_min([3.0, 1.0]), [3.0, 1.0])
    assert distributed.allreduce_sum(4) == 4.0
    assert distributed.broadcast_object({"a": [1, 2]}) == {"a": [1, 2]}
    assert distributed.allgather_object("x") == ["x"]
    distributed.barrier()
    var = tf.Variable([1.0, 2.0])
    distributed.broadcast_variables([var])
    np.testing.assert_array_equal(var.numpy(), [1.0, 2.0])
    opt = tf.keras.optimizers.SGD(0.1)
    assert distributed.distributed_optimizer(opt) is opt
    assert type(distributed.metric_average_callback()) is tf.keras.callbacks.Callback
    assert type(distributed.broadcast_callback()) is tf.keras.callbacks.Callback


def test_scaled_lr_rules():
    assert distributed.scaled_lr(0.01, "linear", 4) == pytest.approx(0.04)
    assert distributed.scaled_lr(0.01, "sqrt", 4) == pytest.approx(0.02)
    assert distributed.scaled_lr(0.01, "none", 4) == 0.01
    with pytest.raises(ValueError, match="^unknown lr scaling rule 'cube'; expected linear, sqrt "
                                         "or none$"):
        distributed.scaled_lr(0.01, "cube", 2)


def test_collective_context_without_init_is_an_error():
    code = ("from mlpf_tf import distributed\n"
            "try:\n"
            "    distributed.allreduce_mean(1.0, distributed.Context(size=2, enabled=True))\n"
            "except RuntimeError as exc:\n"
            "    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "context Context(rank=0, size=2, local_rank=0, local_size=1, enabled=True) asks for "
        "collectives but distributed.init() has not initialised Horovod in this process")


def test_averaging_optimizer_keeps_class_config_and_steps():
    """The Horovod-averaging copy (forced on, over the single real rank) steps like the original.

    With one real rank the average of the gradients is the gradient itself, so the weights after
    a few steps must equal those of the plain optimizer; the copy keeps class name and config.
    """
    ctx = distributed.init()
    if not ctx.enabled:
        pytest.skip("Horovod is not installed")
    forced = distributed.Context(rank=0, size=2, enabled=True)  # take the multi-rank code path
    plain = tf.keras.optimizers.Adam(0.05)
    wrapped = distributed.distributed_optimizer(tf.keras.optimizers.Adam(0.05), forced)
    assert type(wrapped) is not tf.keras.optimizers.Adam
    assert isinstance(wrapped, tf.keras.optimizers.Adam)
    assert type(wrapped).__name__ == "Adam"
    assert wrapped.get_config() == plain.get_config() | {"name": wrapped.get_config()["name"]}

    results = []
    for opt in (plain, wrapped):
        w = tf.Variable([1.0, -2.0])

        @tf.function
        def step(opt=opt, w=w):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(w - 3.0))
            opt.apply_gradients([(tape.gradient(loss, w), w)])

        for _ in range(3):
            step()
        results.append(w.numpy())
    np.testing.assert_allclose(results[0], results[1], atol=1e-7)
    with pytest.raises(TypeError, match="not a legacy optimizer"):
        distributed.distributed_optimizer(tf.keras.optimizers.legacy.SGD(0.1), forced)


@pytest.mark.parametrize("setup", [
    "import os; os.environ['MLPF_DISABLE_HOROVOD'] = '1'",
    "import sys; sys.modules['horovod'] = None",  # makes `import horovod...` fail
])
def test_falls_back_to_a_local_context_without_horovod(setup):
    code = (f"{setup}\nfrom mlpf_tf import distributed\nctx = distributed.init()\n"
            "print(ctx.size, ctx.enabled, distributed.allreduce_mean(2.0), "
            "distributed.allgather_object(7))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[-2] == "1 False 2.0 [7]"


def test_context_properties():
    ctx = distributed.Context(rank=1, size=2, local_rank=1, local_size=2, enabled=True)
    assert not ctx.is_root and ctx.collective
    assert not distributed.Context(size=2, enabled=False).collective
    assert distributed.LOCAL == distributed.Context()
    assert math.isclose(distributed.scaled_lr(1.0, "sqrt", 2), math.sqrt(2))
