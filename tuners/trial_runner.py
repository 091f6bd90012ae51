"""Run one trial on one rank: configs from the trial's values, training, records, checkpoints.

Every rank of a worker group calls :meth:`TrialRunner.run` with the same :class:`TrialSpec`;
training goes through :func:`mlpf_tf.train.train`, which averages gradients and epoch logs over
the ranks. Rank 0 alone writes: the ``trial_start``, ``epoch`` and ``trial_end`` records of
``trials.jsonl`` (schema in :mod:`tuners.records`, extra keys in ``docs/trials_schema.md``;
in a distributed search they go to the chief, which writes the file), the
MLCommons-style log lines and the trial's directory ``<run_dir>/trials/<trial_id>``, where
:func:`mlpf_tf.train.train` keeps the checkpoints (``checkpoints/``) and TensorBoard logs
(``tensorboard/``). ``<run_dir>/tensorboard/<trial_id>`` links to the latter, so
``tensorboard --logdir <run_dir>/tensorboard`` shows every trial, with its hyperparameters in
the HParams tab, as keras-tuner users expect.

Continuations: a trial whose values carry ``tuner/trial_id`` (the parent) and
``tuner/initial_epoch`` > 0 restores the parent's full checkpoint (weights, optimizer state
including its step counter, epoch count) and trains epochs ``initial_epoch .. tuner/epochs - 1``
(ASHA promotions and keras-tuner's Hyperband alike). The parent checkpoint must hold exactly
``initial_epoch`` epochs, else the trial fails with a message naming both numbers. The optimizer
step counter at the start of training is recorded as ``optimizer_iterations`` in
``trial_start`` (and at the end in ``trial_end``), so a reader can check that a continuation
really picked up its parent's optimizer state.

Suspended trials: a trial given back at the SLURM wall-time signal (checkpointed at the end of
its epoch, see :mod:`tuners.distributed.chief`) comes back with ``tuner/resume_epoch`` in its
values: it restores its own checkpoint, which must hold exactly that many epochs, trains on from
there and writes no second ``trial_start``.

Failure: any exception during training (``NonFiniteLossError`` included) or a non-finite
objective makes the outcome FAILED with a one-line message; nothing is raised, so the group can
agree on the outcome and move on together.

A failure on some ranks only, in a group of several: an exception raised while the model trains
(between Keras' ``on_train_begin`` and ``on_train_end``) may leave the other ranks in the
training step's allreduce, which this rank will never join. Such a rank does not go on to the
outcome agreement (an allgather the others would never reach): it ends its process, and with it
the group (:func:`mlpf_tf.distributed.abort_group`); the chief fails the trial as a lost worker
once its progress stops and re-issues it. Exceptions every rank raises together
(``NonFiniteLossError`` and ``CheckpointError``, decided on reduced or broadcast values) and
those before training starts (configs, checkpoint restore) still fail the trial by agreement.

Fault injection for tests: the environment variable ``MLPF_HPO_FAULT_TRIALS`` (comma-separated
trial ids) sets every weight of those trials' models to NaN before the first step, so their
loss is non-finite -- the real failure path, not a simulation of it. ``MLPF_HPO_RAISE_TRIALS``
(comma-separated ``<trial id>@<rank>[:<epoch>]``) makes that rank raise a RuntimeError before
the first training step of epoch ``epoch`` (1-based, default 1) of that trial (one rank failing
alone while the others enter the step's allreduce).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable
from typing import Any

from mlpf_tf import distributed
from mlpf_tf.train import CHECKPOINT_SUBDIR
from tuners import hypermodel
from tuners.records import RESUME_KEY, TrialRecorder, node_hours

FAULT_ENV = "MLPF_HPO_FAULT_TRIALS"
RAISE_ENV = "MLPF_HPO_RAISE_TRIALS"
NODE_HOURS_METRIC = "node_hours"  # cumulative trial cost passed to the oracle with the metrics

COMPLETED, FAILED = "COMPLETED", "FAILED"

EpochReporter = Callable[[int, dict], bool]


@dataclasses.dataclass(frozen=True)
class TrialSpec:
    """What a trial asks for: its values and, from the reserved ones, its epoch budget."""

    trial_id: str
    values: dict
    parent_id: str | None = None
    initial_epoch: int = 0
    target_epochs: int = 1
    rung: int | None = None
    bracket: int | None = None
    resume_epoch: int = 0  # > 0: a suspended trial, continued from its own checkpoint

    @classmethod
    def from_values(cls, trial_id: str, values: dict, default_epochs: int) -> TrialSpec:
        values = {k: _plain(v) for k, v in values.items()}
        parent = values.get("tuner/trial_id")
        initial = int(values.get("tuner/initial_epoch", 0) or 0)
        target = int(values.get("tuner/epochs", default_epochs) or default_epochs)
        rung = values.get("tuner/rung", values.get("tuner/round"))
        bracket = values.get("tuner/bracket")
        return cls(trial_id=str(trial_id), values=values,
                   parent_id=str(parent) if parent not in (None, "") else None,
                   initial_epoch=initial, target_epochs=target,
                   rung=None if rung is None else int(rung),
                   bracket=None if bracket is None else int(bracket),
                   resume_epoch=int(values.get(RESUME_KEY, 0) or 0))

    @property
    def start_epoch(self) -> int:
        """The epoch training starts from on this run (a suspended trial's resume epoch)."""
        return self.resume_epoch or self.initial_epoch

    @property
    def hyperparameters(self) -> dict:
        """The searched values (reserved ``tuner/...`` bookkeeping removed)."""
        return hypermodel.searched_values(self.values)

    @property
    def continues(self) -> bool:
        return self.parent_id is not None and self.initial_epoch > 0


@dataclasses.dataclass(frozen=True)
class TrialOutcome:
    """How a trial ended on this rank (or, after the group agreed, on the group)."""

    status: str
    metrics: dict
    epochs: int
    start_time: float
    wall_seconds: float
    node_hours: float
    error: str | None = None
    optimizer_iterations_start: int | None = None
    optimizer_iterations_end: int | None = None
    stopped_early: bool = False
    setup_seconds: float | None = None   # trial start -> first epoch: build, data, restore
    epoch_seconds: float = 0.0           # sum of the epochs' wall seconds
    trace_seconds: float | None = None   # first epoch minus the median later one (estimate)

    def failed(self, error: str) -> TrialOutcome:
        return dataclasses.replace(self, status=FAILED, error=error)


class TrialRunner:
    """Trains trials for one rank of a worker group.

    Args:
        data_cfg, model_cfg, train_cfg: the base configs; a trial's values override fields.
        run_dir: the run directory (checkpoints, TensorBoard and records go below it).
        context: this rank's layout (:func:`mlpf_tf.distributed.init`).
        nodes: nodes the group holds (``LaunchConfig.nodes_per_worker``) for node-hours.
        recorder: ``TrialRecorder`` on rank 0, None elsewhere. mllogger: optional MLLogger
            (rank 0 only).
        objective: the metric the oracle optimises; a non-finite value fails the trial.
        worker_id: written into the MLCommons log lines.
        tensorboard: write TensorBoard logs per trial (rank 0).
        default_epochs: epochs of a trial without ``tuner/epochs`` (random search); default
            ``train_cfg.epochs``.
        train_fn: the training function (default :func:`mlpf_tf.train.train`).
        train_kwargs: extra keyword arguments for ``train_fn`` (``datasets``, ``model_builder``).
    """

    def __init__(self, data_cfg, model_cfg, train_cfg, *, run_dir: str,
                 context: distributed.Context | None = None, nodes: float = 1.0,
                 recorder: TrialRecorder | None = None, mllogger=None,
                 objective: str = "val_loss", worker_id: str = "0", tensorboard: bool = True,
                 default_epochs: int | None = None, train_fn: Callable | None = None,
                 train_kwargs: dict | None = None):
        self.data_cfg = data_cfg
        self.model_cfg = model_cfg
        self.train_cfg = train_cfg
        self.run_dir = os.fspath(run_dir)
        self.context = context if context is not None else distributed.current()
        self.nodes = float(nodes)
        self.recorder = recorder if self.context.is_root else None
        self.mllogger = mllogger if self.context.is_root else None
        self.objective = objective
        self.worker_id = str(worker_id)
        self.tensorboard = tensorboard
        self.train_fn = train_fn
        self._default_epochs = default_epochs
        self.write_error: str | None = None  # first failed rank-0 write (see _write)
        self.train_kwargs = dict(train_kwargs or {})
        # called after every training batch on this rank when set (rank 0 of a distributed
        # worker: the chief client's progress counter, sent with the heartbeats)
        self.progress = None

    # --- layout -------------------------------------------------------------------------------

    @property
    def default_epochs(self) -> int:
        """Epochs of a trial that carries no ``tuner/epochs`` (e.g. random search)."""
        return int(self._default_epochs or self.train_cfg.epochs)

    def trial_dir(self, trial_id: str) -> str:
        return os.path.join(self.run_dir, "trials", str(trial_id))

    def checkpoint_dir(self, trial_id: str) -> str:
        """Where ``train`` keeps the trial's checkpoints (``latest`` pointer inside)."""
        return os.path.join(self.trial_dir(trial_id), CHECKPOINT_SUBDIR)

    def tensorboard_dir(self, trial_id: str) -> str:
        """``<run_dir>/tensorboard/<trial_id>``: a link to the trial's TensorBoard logs."""
        return os.path.join(self.run_dir, "tensorboard", str(trial_id))

    # --- running ------------------------------------------------------------------------------

    def run(self, spec: TrialSpec, report_epoch: EpochReporter | None = None) -> TrialOutcome:
        """Train ``spec`` on this rank; never raises for a failing trial (see module doc)."""
        start = time.time()
        self._mllog("start", "trial_start", spec, start)
        probe = _Probe(self, spec, start, report_epoch)
        error = None
        try:
            model_cfg, train_cfg = hypermodel.apply_values(spec.values, self.model_cfg,
                                                           self.train_cfg)
            if spec.target_epochs <= spec.initial_epoch:
                raise ValueError(f"nothing to train: tuner/epochs={spec.target_epochs} <= "
                                 f"tuner/initial_epoch={spec.initial_epoch}")
            resume_from = (self._own_checkpoint(spec) if spec.resume_epoch
                           else self._parent_checkpoint(spec))
            self._train(spec, model_cfg, train_cfg, resume_from, probe)
        except Exception as exc:  # the trial fails; the search goes on
            error = _one_line(exc)
            if self.context.collective and probe.in_fit and not _raised_on_every_rank(exc):
                distributed.abort_group(f"trial {spec.trial_id} failed on this rank alone: "
                                        f"{error}", self.context)
        if error is None:
            value = probe.last_metrics.get(self.objective)
            if value is None:
                error = f"no {self.objective} was reported"
            elif not math.isfinite(value):
                error = f"non-finite {self.objective}: {value}"
        wall = time.time() - start
        outcome = TrialOutcome(
            status=COMPLETED if error is None else FAILED, metrics=dict(probe.last_metrics),
            epochs=probe.last_epoch if probe.last_epoch is not None else spec.start_epoch,
            start_time=start, wall_seconds=wall, node_hours=node_hours(wall, self.nodes),
            error=error, optimizer_iterations_start=probe.iterations_start,
            optimizer_iterations_end=probe.iterations_end, stopped_early=probe.stopped,
            setup_seconds=probe.setup_seconds, epoch_seconds=float(sum(probe.epoch_walls)),
            trace_seconds=probe.trace_seconds())
        if not probe.started:
            probe.record_start(None)
        return outcome

    def _own_checkpoint(self, spec: TrialSpec) -> str:
        """A suspended trial's checkpoint, which must hold its ``tuner/resume_epoch``."""
        return self._checkpoint_holding(
            spec.trial_id, spec.resume_epoch, f"cannot resume suspended trial {spec.trial_id}",
            f"not {RESUME_KEY}={spec.resume_epoch}")

    def _parent_checkpoint(self, spec: TrialSpec) -> str | None:
        if not spec.continues:
            return None
        return self._checkpoint_holding(
            spec.parent_id, spec.initial_epoch, f"cannot continue trial {spec.parent_id}",
            f"the trial asks to start at tuner/initial_epoch={spec.initial_epoch}")

    def _checkpoint_holding(self, trial_id: str, epoch: int, what: str, want: str) -> str:
        """``trial_id``'s checkpoint directory if it holds exactly ``epoch`` epochs, else
        RuntimeError ``<what>: ...`` naming the epochs found and ``want``."""
        from mlpf_tf import checkpoint

        directory = self.checkpoint_dir(trial_id)
        try:
            meta = checkpoint.read_metadata(directory)
        except checkpoint.CheckpointError as exc:
            raise RuntimeError(f"{what}: {exc}") from None
        if meta["epoch"] != epoch:
            raise RuntimeError(f"{what}: its checkpoint {directory} holds {meta['epoch']} "
                               f"epochs, {want}")
        return directory

    def _train(self, spec: TrialSpec, model_cfg, train_cfg, resume_from, probe) -> Any:
        train_fn = self.train_fn
        if train_fn is None:
            from mlpf_tf.train import train as train_fn
        callbacks = [probe.keras_callback()]
        if spec.trial_id in fault_trials():
            callbacks.insert(0, _nan_weights_callback())
        for entry in fault_trials(RAISE_ENV):
            where, _, epoch = entry.partition(":")
            if where == f"{spec.trial_id}@{self.context.rank}":
                callbacks.insert(0, _raise_callback(spec.trial_id, self.context.rank,
                                                    int(epoch or 1)))
        if self.tensorboard and self.context.is_root:
            callbacks.extend(self._tensorboard(spec))
        return train_fn(self.data_cfg, model_cfg, train_cfg,
                        run_dir=self.trial_dir(spec.trial_id),
                        initial_epoch=spec.start_epoch, epochs=spec.target_epochs,
                        resume_from=resume_from, callbacks=callbacks, context=self.context,
                        **self.train_kwargs)

    def _tensorboard(self, spec: TrialSpec) -> list:
        """HParams summary for the trial; links its logs under <run_dir>/tensorboard (rank 0)."""
        from mlpf_tf.train import TENSORBOARD_SUBDIR

        log_dir = os.path.join(self.trial_dir(spec.trial_id), TENSORBOARD_SUBDIR)
        try:
            _link(log_dir, self.tensorboard_dir(spec.trial_id))
        except OSError:  # file systems without symlinks: the logs stay in the trial dir
            pass
        try:
            from tensorboard.plugins.hparams import api as hparams_api
        except ImportError:  # TensorBoard without the hparams plugin: scalars only
            return []
        hparams = {k: v for k, v in spec.hyperparameters.items()
                   if isinstance(v, (bool, int, float, str))}
        return [hparams_api.KerasCallback(log_dir, hparams, trial_id=spec.trial_id)]

    # --- records ------------------------------------------------------------------------------

    def record_end(self, spec: TrialSpec, outcome: TrialOutcome, objective: str) -> None:
        """Write the ``trial_end`` record and the log's trial_stop (rank 0; no-op elsewhere)."""
        if self.recorder is not None:
            self._write(self.recorder.append,
                "trial_end", spec.trial_id, status=outcome.status, parent_id=spec.parent_id,
                hyperparameters=spec.hyperparameters, rung=spec.rung,
                initial_epoch=spec.initial_epoch, epochs=outcome.epochs,
                metrics=outcome.metrics, objective=objective, start_time=outcome.start_time,
                wall_seconds=outcome.wall_seconds, nodes=self.nodes, ranks=self.context.size,
                node_hours=outcome.node_hours, error=outcome.error,
                target_epochs=spec.target_epochs,
                optimizer_iterations=outcome.optimizer_iterations_end,
                stopped_early=outcome.stopped_early, setup_seconds=outcome.setup_seconds,
                epoch_seconds=outcome.epoch_seconds, trace_seconds=outcome.trace_seconds)
        self._mllog("end", "trial_stop", spec, None, status=outcome.status)

    def _mllog(self, kind: str, key: str, spec: TrialSpec, when: float | None, **meta) -> None:
        if self.mllogger is None:
            return
        metadata = {"trial_id": spec.trial_id, "worker_id": self.worker_id,
                    "nodes": self.nodes, **meta}
        time_ms = None if when is None else int(round(when * 1000))
        self._write(getattr(self.mllogger, kind), key, None, metadata, time_ms=time_ms)

    def _write(self, write: Callable, *args, **kwargs) -> None:
        """Run one rank-0 write; an error is kept in ``write_error`` instead of raised.

        Raising here would leave rank 0 out of the collectives the other ranks are in (the
        writes happen inside training callbacks); the tuner aborts the search on every rank at
        the next trial boundary instead.
        """
        try:
            write(*args, **kwargs)
        except Exception as exc:
            if self.write_error is None:
                self.write_error = f"writing the search records failed: {_one_line(exc)}"

    # --- models -------------------------------------------------------------------------------

    def load_model(self, trial_id: str, values: dict):
        """The model of a finished trial with the weights of its last checkpoint (any rank)."""
        import tensorflow as tf

        from mlpf_tf import checkpoint
        from mlpf_tf.model.network import build_model

        model_cfg, _ = hypermodel.apply_values(values, self.model_cfg, self.train_cfg)
        model = build_model(model_cfg)
        model(tf.zeros((1, model_cfg.bin_size, 12)))
        ckpt = tf.train.Checkpoint(model=model)
        path = checkpoint.resolve(self.checkpoint_dir(trial_id))
        ckpt.read(os.path.join(path, checkpoint.PREFIX)).expect_partial()
        return model


class _Probe:
    """Watches a trial's training on one rank: start state, per-epoch metrics, stop requests."""

    def __init__(self, runner: TrialRunner, spec: TrialSpec, start: float,
                 report_epoch: EpochReporter | None):
        self.runner = runner
        self.spec = spec
        self.start = start
        self.report_epoch = report_epoch
        self.started = False
        self.in_fit = False  # between Keras' on_train_begin and on_train_end
        self.iterations_start: int | None = None
        self.iterations_end: int | None = None
        self.last_metrics: dict[str, float] = {}
        self.last_epoch: int | None = None
        self.stopped = False
        self._epoch_t0 = start
        self.setup_seconds: float | None = None
        self.epoch_walls: list[float] = []

    def trace_seconds(self) -> float | None:
        """Tracing and warm-up cost, estimated as the first epoch's excess over the median of
        the later ones (None with fewer than two epochs)."""
        if len(self.epoch_walls) < 2:
            return None
        later = sorted(self.epoch_walls[1:])
        mid = len(later) // 2
        typical = later[mid] if len(later) % 2 else 0.5 * (later[mid - 1] + later[mid])
        return max(0.0, self.epoch_walls[0] - typical)

    def record_start(self, iterations: int | None) -> None:
        self.started = True
        self.iterations_start = iterations
        r = self.runner
        if r.recorder is not None and not self.spec.resume_epoch:  # one start per trial
            r._write(r.recorder.append,
                "trial_start", self.spec.trial_id, parent_id=self.spec.parent_id,
                hyperparameters=self.spec.hyperparameters, rung=self.spec.rung,
                initial_epoch=self.spec.initial_epoch, target_epochs=self.spec.target_epochs,
                nodes=r.nodes, ranks=r.context.size, optimizer_iterations=iterations,
                bracket=self.spec.bracket, start_time=self.start)

    def epoch_begin(self, epoch_index: int) -> None:
        self._epoch_t0 = time.time()
        if self.setup_seconds is None:
            self.setup_seconds = self._epoch_t0 - self.start
        if self.runner.mllogger is not None:
            self.runner._mllog("start", "epoch_start", self.spec, self._epoch_t0,
                               epoch_num=epoch_index + 1)

    def epoch_end(self, epoch_index: int, logs: dict | None) -> bool:
        """Record the epoch (rank 0), report it (rank 0 -> oracle); True = stop the trial."""
        now = time.time()
        r = self.runner
        epoch = epoch_index + 1
        metrics = _float_metrics(logs)
        wall = now - self._epoch_t0
        self.epoch_walls.append(wall)
        self.last_metrics, self.last_epoch = metrics, epoch
        if r.recorder is not None:
            r._write(r.recorder.append, "epoch", self.spec.trial_id, epoch=epoch,
                     metrics=metrics, wall_seconds=wall, nodes=r.nodes, ranks=r.context.size,
                     node_hours=node_hours(wall, r.nodes))
        if r.mllogger is not None:
            r._mllog("end", "epoch_stop", self.spec, now, epoch_num=epoch)
            if r.objective in metrics:
                r._write(r.mllogger.event, "eval_loss", metrics[r.objective],
                         {"trial_id": self.spec.trial_id, "epoch_num": epoch})
        stop = False
        if self.report_epoch is not None:
            report = dict(metrics)
            report[NODE_HOURS_METRIC] = node_hours(now - self.start, r.nodes)
            if r.objective in report and not math.isfinite(report[r.objective]):
                report.pop(r.objective)  # a NaN must not reach the oracle's rankings
            stop = self.report_epoch(epoch, report) if r.objective in report else \
                self.report_epoch(epoch, None)
        self.stopped = self.stopped or bool(stop)
        return bool(stop)

    def keras_callback(self):
        import tensorflow as tf

        probe = self

        class TrialProbe(tf.keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                probe.in_fit = True
                probe.record_start(_iterations(self.model))

            def on_epoch_begin(self, epoch, logs=None):
                probe.epoch_begin(epoch)

            def on_epoch_end(self, epoch, logs=None):
                if probe.epoch_end(epoch, logs):
                    self.model.stop_training = True

            def on_train_end(self, logs=None):
                probe.in_fit = False
                probe.iterations_end = _iterations(self.model)

        if probe.runner.progress is None:
            return TrialProbe()

        class TrialProbeWithProgress(TrialProbe):
            def on_train_batch_end(self, batch, logs=None):
                probe.runner.progress()  # a counter the chief's stall check watches

        return TrialProbeWithProgress()


def _iterations(model) -> int | None:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        return None
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer
    return int(inner.iterations.numpy())


def _float_metrics(logs: dict | None) -> dict[str, float]:
    out = {}
    for key, value in (logs or {}).items():
        try:
            out[str(key)] = float(value)
        except (TypeError, ValueError):
            continue
    return out


def fault_trials(env: str = FAULT_ENV) -> frozenset[str]:
    """Trial ids whose models get NaN weights, or (``RAISE_ENV``) ``<trial id>@<rank>`` that
    raise (test-only fault injection, see module doc)."""
    raw = os.environ.get(env, "")
    return frozenset(t.strip() for t in raw.split(",") if t.strip())


def _raised_on_every_rank(exc: BaseException) -> bool:
    from mlpf_tf.checkpoint import CheckpointError
    from mlpf_tf.train import NonFiniteLossError

    return isinstance(exc, (NonFiniteLossError, CheckpointError))


def _raise_callback(trial_id: str, rank: int, epoch: int):
    import tensorflow as tf

    class RaiseOnThisRank(tf.keras.callbacks.Callback):
        epoch_index = 0

        def on_epoch_begin(self, index, logs=None):
            self.epoch_index = index

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0 and self.epoch_index == epoch - 1:
                raise RuntimeError(f"injected fault: rank {rank} raises in trial {trial_id}'s "
                                   "training step")

    return RaiseOnThisRank()


def _nan_weights_callback():
    import numpy as np
    import tensorflow as tf

    class NaNWeights(tf.keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0 and not getattr(self, "done", False):
                self.done = True
                for w in self.model.trainable_weights:
                    w.assign(tf.fill(w.shape, tf.constant(np.nan, w.dtype)))

    return NaNWeights()


def _link(target: str, link: str) -> None:
    """Point ``link`` at ``target`` (relative symlink), replacing an older link."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.makedirs(target, exist_ok=True)
    if os.path.islink(link):
        os.unlink(link)
    if not os.path.exists(link):
        os.symlink(os.path.relpath(target, os.path.dirname(link)), link)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, at most 2000 characters (for records and the oracle)."""
    message = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text if len(text) <= 2000 else text[:2000] + "..."
