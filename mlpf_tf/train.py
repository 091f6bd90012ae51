"""Train one configuration (one trial), data-parallel with Horovod, resumable from checkpoints.

:func:`train` is what a tuner calls for every trial (many times in one process). Per call it

1. resets the Keras session, seeds everything, sets the precision policy;
2. builds (or takes) each rank's shard of the train/validation splits and agrees with the
   other ranks on the number of steps per epoch (every rank must take the same steps);
3. builds the model, an optimizer with the scaled learning rate that averages gradients over
   the ranks, creates the optimizer state, restores a checkpoint when resuming, and broadcasts
   all weights and optimizer state from rank 0 *before* the first step;
4. fits with, in this order: metric averaging over ranks, a per-batch non-finite-loss guard,
   the epoch recorder (history, wall time, rank-0 checkpoints, ``on_epoch_end``), TensorBoard
   on rank 0, then the caller's callbacks.

A NaN/Inf loss on any rank stops every rank on the same step with :class:`NonFiniteLossError`
(the ranks agree every ``--train.nonfinite_check_every`` batches and at each epoch end), which
the caller records as a failed trial.

Resuming: a checkpoint holds weights, optimizer state (with the step counter that drives the
learning-rate schedule) and the number of epochs completed. The resumed run skips the batches
the earlier epochs consumed, so N epochs + resume for M more equals N + M epochs straight, also
with a seeded shuffle (skipping reads those batches again, which costs input time only).

Run one configuration from the command line (absl flags of every section)::

    python -m mlpf_tf.train --flagfile=trial.cfg --run_dir=runs/one
    horovodrun -np 2 -H localhost:2 --gloo python -m mlpf_tf.train --train.epochs=3 ...
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

from mlpf_tf import checkpoint as ckpt
from mlpf_tf import distributed
from mlpf_tf.train_config import TrainConfig

CHECKPOINT_SUBDIR = "checkpoints"
TENSORBOARD_SUBDIR = "tensorboard"
RESULT_FILE = "train_result.json"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; every rank raises it on the same step.

    ``epoch`` is the 0-based epoch index (Keras convention), ``batch`` the 0-based batch index
    within the epoch (None for the validation loss), ``ranks`` the ranks that saw it.
    """

    def __init__(self, message: str, *, epoch: int, batch: int | None, ranks: Sequence[int],
                 value: float | None):
        super().__init__(message)
        self.epoch = epoch
        self.batch = batch
        self.ranks = list(ranks)
        self.value = value


@dataclasses.dataclass
class TrainResult:
    """What one :func:`train` call did; ``history`` covers the epochs of this call only."""

    history: list[dict[str, float]]  # per epoch: {"epoch": index, "loss": ..., "val_loss": ...}
    epochs_done: int  # epochs completed in total, including those before a resume
    initial_epoch: int
    epoch_seconds: list[float]  # wall seconds per epoch of this call (train + validation)
    final_metrics: dict[str, float]  # the last epoch's logs, averaged over the ranks
    checkpoint: str | None  # path of the newest checkpoint (None: no run_dir)
    steps_per_epoch: int
    ranks: int
    global_batch_size: int
    lr: float  # initial learning rate after scaling with the number of ranks
    model: Any = dataclasses.field(default=None, repr=False)
    base_lr: float | None = None  # --train.lr, before scaling
    lr_scaling: str | None = None  # the scaling rule applied (linear, sqrt, none)
    schedule: dict[str, Any] | None = None  # the LR schedule as built (see schedule_settings)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly view (without the model)."""
        out = dataclasses.asdict(dataclasses.replace(self, model=None))
        out.pop("model")
        return out


# -- building blocks ---------------------------------------------------------------------------


def configure_threads(num_threads: int, inter_op: int | None = None) -> None:
    """Set TensorFlow's thread pools once per process (later changes are impossible: warn)."""
    for setter, getter, value in (
            (tf.config.threading.set_intra_op_parallelism_threads,
             tf.config.threading.get_intra_op_parallelism_threads, num_threads),
            (tf.config.threading.set_inter_op_parallelism_threads,
             tf.config.threading.get_inter_op_parallelism_threads, inter_op)):
        if not value or getter() == value:
            continue
        try:
            setter(value)
        except RuntimeError:
            logging.warning("TensorFlow threads already fixed at %d for this process; "
                            "cannot change to %d", getter(), value)


@tf.keras.utils.register_keras_serializable(package="mlpf_tf")
class CosineToEnd(tf.keras.optimizers.schedules.LearningRateSchedule):
    """lr * ((1 - alpha) * 0.5 * (1 + cos(pi * min(step, total) / total)) + alpha).

    Computed in float64: in float32, Keras' CosineDecay rounds the rate of the last steps of a
    long schedule to exactly 0 (e.g. step 44,999 of 45,000), which would stop a trial from
    learning before it ends.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, alpha: float = 0.0):
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps = int(decay_steps)
        self.alpha = float(alpha)

    def __call__(self, step):
        t = tf.minimum(tf.cast(step, tf.float64), float(self.decay_steps)) / self.decay_steps
        cosine = 0.5 * (1.0 + tf.cos(np.pi * t))
        rate = self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha)
        return tf.cast(rate, tf.float32)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate,
                "decay_steps": self.decay_steps, "alpha": self.alpha}


def schedule_steps(cfg: TrainConfig, end_epoch: int, steps_per_epoch: int) -> int:
    """Optimizer steps a cosine schedule spans: the trial's total training steps.

    max(``cfg.epochs``, ``end_epoch``) x ``steps_per_epoch``: a trial trained in rungs (resumed
    at larger ``end_epoch``) sees the same schedule at every resume as long as ``cfg.epochs``
    covers its largest budget, and the rate is above zero on every step it trains.
    """
    return max(1, max(int(cfg.epochs), int(end_epoch)) * max(1, int(steps_per_epoch)))


def schedule_settings(cfg: TrainConfig, num_ranks: int = 1, total_steps: int | None = None,
                      variant: str = "improved") -> dict[str, Any]:
    """The learning-rate schedule a trial uses, as plain values (recorded in its result)."""
    lr = distributed.scaled_lr(cfg.lr, cfg.lr_scaling, num_ranks)
    out: dict[str, Any] = {"name": cfg.lr_schedule, "lr": lr, "base_lr": cfg.lr,
                           "lr_scaling": cfg.lr_scaling, "ranks": int(num_ranks)}
    if cfg.lr_schedule == "exponential":
        staircase = (variant == "reference" if cfg.staircase == "auto"
                     else cfg.staircase == "on")
        out.update(decay_steps=cfg.decay_steps, decay_rate=cfg.decay_rate, staircase=staircase)
    elif cfg.lr_schedule == "cosine":
        if total_steps is None:
            raise ValueError("--train.lr_schedule=cosine needs the trial's total training "
                             "steps (schedule_steps)")
        out.update(decay_steps=int(total_steps), alpha=cfg.cosine_alpha)
    return out


def make_optimizer(cfg: TrainConfig, num_ranks: int = 1, total_steps: int | None = None,
                   variant: str = "improved"):
    """The configured Keras optimizer with the learning rate scaled for ``num_ranks``.

    ``total_steps``: the trial's total training steps (:func:`schedule_steps`), which a cosine
    schedule spans; ``variant``: the model variant (decides ``--train.staircase=auto``).
    """
    sched = schedule_settings(cfg, num_ranks, total_steps, variant)
    schedule: Any = sched["lr"]
    if cfg.lr_schedule == "exponential":
        schedule = tf.keras.optimizers.schedules.ExponentialDecay(
            sched["lr"], sched["decay_steps"], sched["decay_rate"], staircase=sched["staircase"])
    elif cfg.lr_schedule == "cosine":
        schedule = CosineToEnd(sched["lr"], sched["decay_steps"], alpha=cfg.cosine_alpha)
    if cfg.optimizer == "adam":
        return tf.keras.optimizers.Adam(learning_rate=schedule)
    return tf.keras.optimizers.SGD(learning_rate=schedule, momentum=cfg.momentum)


def count_batches(dataset: tf.data.Dataset, split: str = "training") -> int:
    """Batches in a finite dataset (its cardinality, or one pass when that is unknown)."""
    card = int(dataset.cardinality())
    if card == tf.data.INFINITE_CARDINALITY:
        flag = "steps_per_epoch" if split == "training" else "validation_steps"
        raise ValueError(f"the {split} dataset is infinite: set --train.{flag}")
    if card >= 0:
        return card
    return int(dataset.reduce(np.int64(0), lambda n, _: n + 1))


def _default_datasets(data_cfg, cfg: TrainConfig, ctx: distributed.Context):
    from mlpf_tf.data.pipeline import build_pipeline

    def build():
        common = dict(rank=ctx.rank, size=ctx.size, seed=cfg.seed)
        return (build_pipeline(data_cfg, "train", cfg.batch_size, shuffle=True, **common),
                build_pipeline(data_cfg, "validation", cfg.batch_size, shuffle=False, **common))

    # Rank 0 prepares (generates) a missing dataset; the others read it once it is there.
    built = build() if ctx.is_root else None
    distributed.barrier(ctx)
    return built if built is not None else build()


def _unpack_datasets(datasets, ctx) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    if callable(datasets):
        datasets = datasets(ctx)
    if isinstance(datasets, dict):
        return datasets["train"], datasets.get("validation")
    train_ds, val_ds = datasets
    return train_ds, val_ds


def _default_model_builder(model_cfg):
    from mlpf_tf.model.network import build_model

    return build_model(model_cfg)


def _on_root(fn: Callable[[], Any], ctx: distributed.Context) -> Any:
    """``fn()`` run on rank 0, its result (or CheckpointError/ValueError) on every rank.

    Keeps the ranks in step: a rank that raised alone would leave the others waiting in the
    next collective operation.
    """
    if not ctx.collective:
        return fn()
    outcome: tuple[str, Any] | None = None
    if ctx.is_root:
        try:
            outcome = ("ok", fn())
        except (ckpt.CheckpointError, ValueError) as exc:
            outcome = (type(exc).__name__, str(exc))
    kind, value = distributed.broadcast_object(outcome, 0, ctx)
    if kind == "ok":
        return value
    raise (ckpt.CheckpointError if kind == "CheckpointError" else ValueError)(value)


def _as_float(value: Any) -> float:
    return float(np.asarray(value, dtype=np.float64))


class _NonFiniteGuard(tf.keras.callbacks.Callback):
    """Stops every rank on a NaN/Inf training loss, on the same batch and with the same report.

    One rank: the loss is checked after every batch. Several ranks: every rank notes its own
    losses (no communication) and the ranks agree every ``check_every`` batches and on the last
    batch of each epoch, with one small collective. Between checks the ranks stay in step (each
    batch's gradient allreduce is a collective), so every rank reaches the same check; the error
    names the first batch on which any rank saw a non-finite loss, and the ranks that saw it
    there. A per-batch agreement would add one collective per optimizer step, which costs as
    much as the gradient allreduce itself on small models.
    """

    def __init__(self, ctx: distributed.Context, epochs: int, steps: int, check_every: int):
        super().__init__()
        self._ctx, self._epochs, self._steps = ctx, epochs, steps
        self._check_every = check_every if ctx.collective else 1
        self._epoch = 0
        self._window: list[float] = []  # this rank's losses since the last check
        self._window_start = 0  # batch index of self._window[0]

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._window, self._window_start = [], 0

    def on_train_batch_end(self, batch, logs=None):
        if not logs or "loss" not in logs:
            raise KeyError("the model's train_step must return a 'loss' entry in its logs")
        if not self._window:
            self._window_start = batch
        self._window.append(_as_float(logs["loss"]))
        if (batch + 1) % self._check_every and batch + 1 != self._steps:
            return
        window, self._window = self._window, []
        bad = next((i for i, v in enumerate(window) if not np.isfinite(v)), None)
        firsts = distributed.allgather_object(bad, self._ctx)
        seen = [i for i in firsts if i is not None]
        if not seen:
            return
        first = min(seen)
        ranks = [r for r, i in enumerate(firsts) if i == first]
        if not self._ctx.collective:
            ranks = [self._ctx.rank]
        e, b, value = self._epoch, self._window_start + first, window[first]
        raise NonFiniteLossError(
            f"non-finite training loss at epoch {e + 1}/{self._epochs} (epoch index {e}), "
            f"batch {b + 1}/{self._steps}: on rank(s) {', '.join(map(str, ranks))} "
            f"(this rank {self._ctx.rank}: loss={value})",
            epoch=e, batch=b, ranks=ranks, value=value)


class _EpochRecorder(tf.keras.callbacks.Callback):
    """Per epoch: wall time, averaged logs, validation-loss check, checkpoint, caller hook."""

    def __init__(self, ctx, epochs, checkpoint_dir, cfg: TrainConfig, optimizer, on_epoch_end,
                 metadata):
        super().__init__()
        self.ctx, self.epochs, self.cfg = ctx, epochs, cfg
        self.checkpoint_dir, self.optimizer = checkpoint_dir, optimizer
        self.on_epoch_end_hook, self.metadata = on_epoch_end, metadata
        self.history: list[dict[str, float]] = []
        self.seconds: list[float] = []
        self.last_checkpoint: str | None = None
        self._unsaved: tuple[int, dict] | None = None  # the last epoch if not checkpointed
        self._t0 = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._t0
        logs = {k: _as_float(v) for k, v in (logs or {}).items()}
        for key in ("val_loss", "loss"):
            if key in logs and not math.isfinite(logs[key]):
                what = "validation" if key == "val_loss" else "training"
                raise NonFiniteLossError(
                    f"non-finite {what} loss at epoch {epoch + 1}/{self.epochs} (epoch index "
                    f"{epoch}): {key}={logs[key]} (mean over ranks)",
                    epoch=epoch, batch=None, ranks=[], value=logs[key])
        self.seconds.append(seconds)
        record = {"epoch": epoch, **logs, "epoch_seconds": seconds}
        self.history.append(record)
        done = epoch + 1
        every = self.cfg.checkpoint_every_epochs
        self._unsaved = (done, record)
        if self.checkpoint_dir and (done == self.epochs or (every and done % every == 0)):
            self._save(done, record)
        if self.ctx.is_root:
            logging.info("epoch %d/%d: %s", done, self.epochs,
                         ", ".join(f"{k}={v:.5g}" for k, v in record.items() if k != "epoch"))
        if self.on_epoch_end_hook is not None:
            self.on_epoch_end_hook(epoch, dict(record))

    def on_train_end(self, logs=None):
        # Stopped early (the oracle, or the wall-time signal: the trial continues later from
        # here): the last epoch is checkpointed even between checkpoint_every_epochs.
        if self.checkpoint_dir and self._unsaved is not None and self.model.stop_training:
            self._save(*self._unsaved)

    def _save(self, done: int, record: dict) -> None:
        meta = {**self.metadata, "logs": record}
        self.last_checkpoint = ckpt.save(self.checkpoint_dir, self.model, self.optimizer, done,
                                         metadata=meta, keep=self.cfg.keep_checkpoints,
                                         ctx=self.ctx)
        self._unsaved = None


# -- the trial ---------------------------------------------------------------------------------


def train(data_cfg, model_cfg, train_cfg: TrainConfig, *, run_dir: str | None = None,
          initial_epoch: int = 0, epochs: int | None = None, resume_from: str | None = None,
          callbacks: Sequence[tf.keras.callbacks.Callback] = (),
          datasets=None, model_builder: Callable[[Any], tf.keras.Model] | None = None,
          context: distributed.Context | None = None,
          on_epoch_end: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Train one configuration from ``initial_epoch`` up to epoch index ``epochs``.

    ``epochs`` defaults to ``train_cfg.epochs`` (a total, like Keras' ``fit``). ``resume_from``
    (a checkpoint or a checkpoint directory with a ``latest`` pointer) restores weights and
    optimizer state and sets ``initial_epoch`` to the epochs it holds. ``datasets`` =
    (train, validation) or {"train": ..., "validation": ...}, already sharded for this rank and
    batched, replaces the data pipeline (or a callable ``datasets(context)`` returning them,
    called after seeding so seeded shuffles repeat exactly); ``model_builder(model_cfg)``
    replaces ``build_model``;
    ``context`` replaces ``distributed.init()`` (``distributed.LOCAL`` trains this process
    alone even under horovodrun). ``on_epoch_end(epoch_index, logs)`` runs on every rank with
    the logs averaged over ranks. Raises :class:`NonFiniteLossError`,
    :class:`mlpf_tf.checkpoint.CheckpointError`, ``ConfigError``.
    """
    train_cfg.validate()
    for section in (data_cfg, model_cfg):
        if hasattr(section, "validate"):
            section.validate()
    ctx = context if context is not None else distributed.init()
    end_epoch = train_cfg.epochs if epochs is None else int(epochs)
    if train_cfg.jit_compile and ctx.collective and not os.environ.get("HOROVOD_ENABLE_XLA_OPS"):
        raise ValueError(f"--train.jit_compile=True with {ctx.size} Horovod ranks: the gradient "
                         "allreduce has no XLA kernel in this build (set HOROVOD_ENABLE_XLA_OPS=1 "
                         "on GPU builds that have one, or turn jit_compile off)")
    if resume_from is not None:
        # Rank 0 reads the checkpoint; every rank gets its answer (or its error).
        resolved, ckpt_meta = _on_root(
            lambda: (ckpt.resolve(resume_from), ckpt.read_metadata(resume_from)), ctx)
        resume_from = resolved
        if initial_epoch not in (0, ckpt_meta["epoch"]):
            raise ValueError(f"initial_epoch={initial_epoch} but checkpoint "
                             f"{resolved} holds {ckpt_meta['epoch']} epochs")
        initial_epoch = ckpt_meta["epoch"]
    if not 0 <= initial_epoch <= end_epoch:
        raise ValueError(f"initial_epoch={initial_epoch} must lie in [0, epochs={end_epoch}]")

    configure_threads(train_cfg.num_threads)
    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(train_cfg.seed)
    tf.keras.mixed_precision.set_global_policy(train_cfg.policy)
    try:
        return _fit(data_cfg, model_cfg, train_cfg, ctx, run_dir, initial_epoch, end_epoch,
                    resume_from, callbacks, datasets, model_builder, on_epoch_end)
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")


def _fit(data_cfg, model_cfg, cfg: TrainConfig, ctx, run_dir, initial_epoch, end_epoch,
         resume_from, user_callbacks, datasets, model_builder, on_epoch_end) -> TrainResult:
    train_ds, val_ds = (_unpack_datasets(datasets, ctx) if datasets is not None
                        else _default_datasets(data_cfg, cfg, ctx))

    # Every rank must run the same number of steps (each step is an allreduce).
    if cfg.steps_per_epoch:
        steps, local_steps = cfg.steps_per_epoch, None
    else:
        local_steps = count_batches(train_ds)
        steps = int(distributed.allreduce_min(local_steps, ctx))
        if steps < 1:
            raise ValueError(f"the train split gives rank(s) no full batch of "
                             f"--train.batch_size={cfg.batch_size} events: use a smaller batch "
                             f"or more events (ranks: {ctx.size})")
    epoch_ds = train_ds.take(steps) if local_steps not in (None, steps) else train_ds
    fit_ds = epoch_ds.repeat()
    if initial_epoch:
        fit_ds = fit_ds.skip(initial_epoch * steps)  # resume exactly where the data stood
    if val_ds is not None and cfg.validation_steps:
        val_ds = val_ds.take(cfg.validation_steps)
    val_steps, fit_val_ds = None, None
    if val_ds is not None:
        # Keras caches one evaluation iterator handler per fit(): if a later validation pass
        # ends before the step count it took from the first pass (or from the cardinality),
        # it flags "ran out of data" and every later epoch silently loses its val_* logs.
        # A fixed step count over a repeated dataset never runs out; each evaluation starts a
        # fresh iterator, so every epoch sees the same batches.
        val_steps = count_batches(val_ds, "validation")
        if val_steps < 1:
            raise ValueError(f"the validation split gives rank {ctx.rank} no batch of "
                             f"--train.batch_size={cfg.batch_size} events (ranks: {ctx.size})")
        fit_val_ds = val_ds.take(val_steps).repeat()

    builder = model_builder or _default_model_builder
    model = builder(model_cfg)
    sample = next(iter((val_ds if val_ds is not None else train_ds).take(1)))
    model(sample[0], training=False)  # create the weights

    variant = getattr(model_cfg, "variant", "improved")
    total_steps = schedule_steps(cfg, end_epoch, steps)
    sched = schedule_settings(cfg, ctx.size, total_steps, variant)
    if ctx.is_root:
        logging.info("learning rate %.4g = %.4g x %d ranks (--train.lr_scaling=%s), schedule %s",
                     sched["lr"], cfg.lr, ctx.size, cfg.lr_scaling, sched)
    optimizer = distributed.distributed_optimizer(
        make_optimizer(cfg, ctx.size, total_steps, variant), ctx)
    if cfg.loss_scaling:
        # Loss scaling outside the averaging optimizer: gradients are averaged before the
        # finite check, so all ranks skip or apply a step together.
        optimizer = tf.keras.mixed_precision.LossScaleOptimizer(optimizer)
    # The model computes its own losses and metrics; weighted_metrics=[] tells Keras that the
    # third element of each batch (w) is used by the model, not a forgotten sample weight.
    model.compile(optimizer=optimizer, jit_compile=cfg.jit_compile, weighted_metrics=[])
    ckpt.build_optimizer(model, optimizer)
    if resume_from is not None:
        # Rank 0 restores; the broadcast below hands weights and optimizer state to the others
        # (they need no access to the checkpoint). A failure raises on every rank.
        loaded = _on_root(lambda: ckpt.load(resume_from, model, optimizer), ctx)
        assert loaded == initial_epoch, (loaded, initial_epoch)
    # Identical starting point on every rank, set before the first step.
    distributed.broadcast_variables(list(model.variables) + list(optimizer.variables), 0, ctx)

    checkpoint_dir = os.path.join(run_dir, CHECKPOINT_SUBDIR) if run_dir else None
    meta = {"ranks": ctx.size, "batch_size_per_rank": cfg.batch_size,
            "steps_per_epoch": steps, "lr_schedule": sched, "train_config": cfg.to_dict()}
    recorder = _EpochRecorder(ctx, end_epoch, checkpoint_dir, cfg, optimizer, on_epoch_end,
                              meta)
    cbs: list[tf.keras.callbacks.Callback] = [
        distributed.metric_average_callback(ctx),  # before anything reading the logs
        _NonFiniteGuard(ctx, end_epoch, steps, cfg.nonfinite_check_every),
        recorder,
    ]
    if run_dir and ctx.is_root:
        cbs.append(tf.keras.callbacks.TensorBoard(os.path.join(run_dir, TENSORBOARD_SUBDIR),
                                                  write_graph=False, profile_batch=0))
    cbs.extend(user_callbacks)

    if end_epoch > initial_epoch:
        model.fit(fit_ds, validation_data=fit_val_ds, validation_steps=val_steps,
                  epochs=end_epoch, initial_epoch=initial_epoch, steps_per_epoch=steps,
                  callbacks=cbs,
                  verbose=cfg.verbose if ctx.is_root else 0)
    distributed.barrier(ctx)  # the last checkpoint is complete before any rank returns
    last = recorder.last_checkpoint
    if last is None and resume_from is not None:
        last = resume_from
    return TrainResult(
        history=recorder.history, epochs_done=initial_epoch + len(recorder.history),
        initial_epoch=initial_epoch, epoch_seconds=recorder.seconds,
        final_metrics={k: v for k, v in (recorder.history[-1] if recorder.history else {}).items()
                       if k != "epoch"},
        checkpoint=last, steps_per_epoch=steps, ranks=ctx.size,
        global_batch_size=cfg.batch_size * ctx.size,
        lr=sched["lr"], model=model, base_lr=cfg.lr, lr_scaling=cfg.lr_scaling, schedule=sched)


# -- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str]) -> None:
    """Train the configuration given by flags / flagfile; rank 0 writes the run directory."""
    del argv
    from absl import app, flags

    from mlpf_tf.configbase import ConfigError, atomic_write_text, section_from_flags
    from mlpf_tf.data.config import DataConfig
    from mlpf_tf.model.config import ModelConfig

    fv = flags.FLAGS
    try:
        data_cfg = section_from_flags(DataConfig)
        model_cfg = section_from_flags(ModelConfig)
        train_cfg = section_from_flags(TrainConfig)
        for section in (data_cfg, model_cfg, train_cfg):
            section.validate()
    except ConfigError as exc:
        raise app.UsageError(str(exc)) from None
    ctx = distributed.init()
    result = train(data_cfg, model_cfg, train_cfg, run_dir=fv.run_dir or None,
                   resume_from=fv.resume_from or None, context=ctx)
    if ctx.is_root:
        summary = json.dumps(result.summary(), indent=1, default=float)
        if fv.run_dir:
            atomic_write_text(os.path.join(fv.run_dir, RESULT_FILE), summary + "\n")
        print(summary)


def _define_cli_flags() -> None:
    from absl import flags

    from mlpf_tf.configbase import define_flags
    from mlpf_tf.data.config import DataConfig
    from mlpf_tf.model.config import ModelConfig

    for section in (DataConfig, ModelConfig, TrainConfig):
        define_flags(section)
    flags.DEFINE_string("run_dir", "", "directory for checkpoints, TensorBoard and the result")
    flags.DEFINE_string("resume_from", "", "checkpoint (or checkpoint directory) to resume")


if __name__ == "__main__":
    from absl import app

    _define_cli_flags()
    app.run(main)
