"""Data-parallel helpers: the only module of the suite that imports Horovod.

Everything else asks this module for the rank layout (:class:`Context`) and for the few
collective operations training needs. Without ``horovodrun`` (or when Horovod is not installed,
or ``MLPF_DISABLE_HOROVOD=1`` is set) the context has size 1 and every collective is the
identity, so the same training code runs on a laptop and on a cluster.

Gradient averaging: Horovod's own Keras ``DistributedOptimizer`` (0.28.1) reduces gradients in
``compute_gradients``/``get_gradients`` only. A model whose ``train_step`` computes gradients
with its own ``GradientTape`` and calls ``optimizer.apply_gradients`` directly (as the MLPF model
does) would then train every rank on its local gradients alone and the replicas drift apart.
:func:`distributed_optimizer` therefore hooks ``aggregate_gradients``, the step Keras runs inside
``apply_gradients`` (and, with loss scaling, *before* the finite-gradient check), so gradients are
averaged exactly once on every path and all ranks take identical steps.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

#: set to 1 to never import Horovod (size-1 context), e.g. to debug a broken installation
DISABLE_ENV = "MLPF_DISABLE_HOROVOD"

_hvd: Any = None  # the horovod.tensorflow module once init() imported it
_context: Context | None = None


@dataclasses.dataclass(frozen=True)
class Context:
    """Rank layout of this process; ``enabled`` is True when Horovod is initialised."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1
    enabled: bool = False

    @property
    def is_root(self) -> bool:
        """Rank 0: the only rank that writes files or prints."""
        return self.rank == 0

    @property
    def collective(self) -> bool:
        """True when operations must be reduced across several ranks."""
        return self.enabled and self.size > 1


#: a single process that trains alone (no collectives), also under horovodrun
LOCAL = Context()


#: Horovod's stall check: a rank missing from a collective for 60 s is reported, and after
#: STALL_SHUTDOWN seconds Horovod shuts the job down instead of waiting forever (Horovod's
#: default is never), so a group whose rank hung or died ends and its trial is re-issued.
#: Set the variables yourself to change them.
STALL_SETTINGS = {"HOROVOD_STALL_CHECK_TIME_SECONDS": "60",
                  "HOROVOD_STALL_SHUTDOWN_TIME_SECONDS": "600"}


def init() -> Context:
    """Initialise Horovod once per process and return the rank layout.

    Falls back to a size-1 context when Horovod cannot be imported; repeated calls return the
    same context (a tuner trains many trials in one process).
    """
    global _hvd, _context
    if _context is not None:
        return _context
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        _context = LOCAL
        return _context
    try:
        import horovod.tensorflow as hvd  # Horovod: the TensorFlow collectives
    except ImportError:
        _context = LOCAL
        return _context
    for name, value in STALL_SETTINGS.items():
        os.environ.setdefault(name, value)  # Horovod reads these in init(); a user's win
    hvd.init()  # Horovod: join the ranks started by horovodrun (size 1 without it)
    _hvd = hvd
    _context = Context(rank=hvd.rank(),  # Horovod: global rank of this process
                       size=hvd.size(),  # Horovod: number of ranks
                       local_rank=hvd.local_rank(),  # Horovod: rank among this node's ranks
                       local_size=hvd.local_size(),  # Horovod: ranks on this node
                       enabled=True)
    return _context


#: exit code of a rank that ended its worker group (:func:`abort_group`)
EXIT_GROUP_ABORTED = 5


def abort_group(message: str, ctx: Context | None = None) -> None:
    """End this rank's process at once, and with it the worker group: for a failure on one
    rank while the others may sit in a collective (an allreduce of the training step) that
    this rank will never join. Waiting for them in another collective (an allgather of the
    outcomes) would deadlock; a rank that is gone instead makes Horovod shut down on the
    others (Gloo sees the connection close) and ``horovodrun`` (or ``srun
    --kill-on-bad-exit``) end the rest of the group. The chief fails the trial when its
    progress stops (``--stall_timeout``) or its lease lapses, and re-issues it."""
    import sys

    ctx = ctx if ctx is not None else current()
    print(f"rank {ctx.rank} of {ctx.size}: {message}; ending the worker group (the other "
          "ranks cannot go on without this one)", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(EXIT_GROUP_ABORTED)


def current() -> Context:
    """The context of :func:`init` if it ran, else :data:`LOCAL`."""
    return _context if _context is not None else LOCAL


def _collective(ctx: Context | None) -> bool:
    ctx = ctx if ctx is not None else current()
    if ctx.collective and _hvd is None:
        raise RuntimeError(f"context {ctx} asks for collectives but distributed.init() has not "
                           "initialised Horovod in this process")
    return ctx.collective


def distributed_optimizer(optimizer, ctx: Context | None = None):
    """A copy of a Keras optimizer that averages gradients over all ranks before applying them.

    With one rank the optimizer is returned unchanged. The copy keeps the class name, config and
    variable layout of the original, so checkpoints load with or without Horovod. Gradients
    are averaged with one allreduce per dtype over a flat buffer (see :func:`_average_flat`).
    """
    if not _collective(ctx):
        return optimizer
    import tensorflow as tf

    if not isinstance(optimizer, tf.keras.optimizers.Optimizer):
        raise TypeError(f"distributed_optimizer needs a tf.keras.optimizers.Optimizer (not a "
                        f"legacy optimizer), got {type(optimizer).__name__}")
    base = type(optimizer)
    hvd = _hvd

    class _Averaging(base):  # type: ignore[valid-type, misc]
        def aggregate_gradients(self, grads_and_vars):
            pairs = [(g, v) for g, v in grads_and_vars if g is not None]
            grads = [tf.convert_to_tensor(g) for g, _ in pairs]
            return list(zip(_average_flat(grads, hvd), [v for _, v in pairs]))

    _Averaging.__name__ = base.__name__
    _Averaging.__qualname__ = base.__qualname__
    return _Averaging.from_config(optimizer.get_config())


def _average_flat(tensors: list, hvd) -> list:
    """``tensors`` averaged over all ranks with one allreduce per dtype, same order and shapes.

    The tensors of a dtype are packed into one flat buffer: one negotiation and one collective
    per step instead of one entry per tensor (on this suite's small models the per-tensor
    bookkeeping of a grouped allreduce costs more than the data it moves).
    """
    import tensorflow as tf

    out: list = [None] * len(tensors)
    by_dtype: dict = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    for idx in by_dtype.values():
        parts = [tensors[i] for i in idx]
        sizes = [p.shape.num_elements() if p.shape.is_fully_defined() else tf.size(p)
                 for p in parts]
        flat = tf.concat([tf.reshape(p, [-1]) for p in parts], axis=0)
        averaged = hvd.allreduce(flat, op=hvd.Average)  # Horovod: average over all ranks
        for i, p, piece in zip(idx, parts, tf.split(averaged, sizes)):
            out[i] = tf.reshape(piece, tf.shape(p))
    return out


def broadcast_variables(variables: Iterable, root: int = 0, ctx: Context | None = None) -> None:
    """Overwrite ``variables`` on every rank with the values of rank ``root`` (in place)."""
    variables = list(variables)
    if not variables or not _collective(ctx):
        return
    _hvd.broadcast_variables(variables, root_rank=root)  # Horovod: in-place broadcast


def broadcast_callback(root: int = 0, ctx: Context | None = None):
    """Keras callback broadcasting model and optimizer variables after the first batch.

    ``train.train`` broadcasts explicitly before the first step instead (so the first step
    already starts from identical weights); this callback serves plain ``model.fit`` users.
    """
    import tensorflow as tf

    if not _collective(ctx):
        return tf.keras.callbacks.Callback()
    import horovod.tensorflow.keras as hvd_keras  # Horovod: Keras callbacks

    # Horovod: broadcast all variables from `root` once, after the first batch
    return hvd_keras.callbacks.BroadcastGlobalVariablesCallback(root)


def metric_average_callback(ctx: Context | None = None):
    """Keras callback replacing every epoch-end log value by its mean over the ranks.

    Must come before any callback that reads the logs (LR schedules, checkpoints, tuners).
    """
    import tensorflow as tf

    if not _collective(ctx):
        return tf.keras.callbacks.Callback()
    import horovod.tensorflow.keras as hvd_keras  # Horovod: Keras callbacks

    return hvd_keras.callbacks.MetricAverageCallback()  # Horovod: allreduce logs at epoch end


def broadcast_object(obj: Any, root: int = 0, ctx: Context | None = None) -> Any:
    """Rank ``root``'s picklable ``obj`` on every rank."""
    if not _collective(ctx):
        return obj
    return _hvd.broadcast_object(obj, root_rank=root)  # Horovod: pickled broadcast


def allgather_object(obj: Any, ctx: Context | None = None) -> list:
    """The picklable ``obj`` of every rank, in rank order."""
    if not _collective(ctx):
        return [obj]
    return list(_hvd.allgather_object(obj))  # Horovod: pickled allgather


def _allreduce(value: Any, op_name: str, ctx: Context | None) -> Any:
    array = np.asarray(value, dtype=np.float64)
    if not _collective(ctx):
        return float(array) if array.ndim == 0 else array
    import tensorflow as tf

    op = getattr(_hvd, op_name)  # Horovod: reduction op (Average, Min, Max, Sum)
    out = _hvd.allreduce(tf.constant(array), op=op).numpy()  # Horovod: eager allreduce
    return float(out) if out.ndim == 0 else out


def allreduce_mean(value: Any, ctx: Context | None = None) -> Any:
    """Mean of a number (or array) over the ranks."""
    return _allreduce(value, "Average", ctx)


def allreduce_min(value: Any, ctx: Context | None = None) -> Any:
    """Minimum of a number (or array) over the ranks."""
    return _allreduce(value, "Min", ctx)


def allreduce_sum(value: Any, ctx: Context | None = None) -> Any:
    """Sum of a number (or array) over the ranks."""
    return _allreduce(value, "Sum", ctx)


def barrier(ctx: Context | None = None) -> None:
    """Wait until every rank got here (a tiny allreduce)."""
    allreduce_sum(0.0, ctx)


def time_gradient_allreduce(variables: Iterable, repeats: int = 20,
                            ctx: Context | None = None) -> list[float]:
    """Wall seconds of the training step's gradient allreduce (the flat per-dtype buffers of
    :func:`distributed_optimizer`) for tensors shaped like ``variables``, ``repeats`` times
    after one warm-up call; the ranks meet at a barrier before each call, so waiting for a
    slower rank is not counted. Empty with one rank (no collective)."""
    if not _collective(ctx):
        return []
    import time

    import tensorflow as tf

    grads = [tf.zeros_like(v) for v in variables]
    average = tf.function(lambda: _average_flat(grads, _hvd))
    average()
    seconds = []
    for _ in range(repeats):
        barrier(ctx)
        t0 = time.perf_counter()
        average()
        seconds.append(time.perf_counter() - t0)
    return seconds


def scaled_lr(lr: float, rule: str, size: int) -> float:
    """Learning rate for ``size`` ranks: ``linear`` (lr * size), ``sqrt`` or ``none``."""
    if rule == "linear":
        return lr * size
    if rule == "sqrt":
        return lr * float(np.sqrt(size))
    if rule == "none":
        return lr
    raise ValueError(f"unknown lr scaling rule {rule!r}; expected linear, sqrt or none")


__all__: Sequence[str] = (
    "Context", "LOCAL", "init", "current", "distributed_optimizer", "broadcast_variables",
    "broadcast_callback", "metric_average_callback", "broadcast_object", "allgather_object",
    "allreduce_mean", "allreduce_min", "allreduce_sum", "barrier", "scaled_lr", "abort_group",
    "time_gradient_allreduce",
)
