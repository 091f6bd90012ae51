"""A keras-tuner Tuner whose every trial is trained data-parallel by a Horovod group of ranks.

One worker group = one ``HorovodTuner`` per rank. Rank 0 alone talks to the oracle (a local
keras-tuner ``Oracle`` or, in a distributed search, a gRPC ``OracleClient`` to the chief) and
broadcasts what it got to the other ranks, so the whole group walks through the same sequence
of trials in lockstep:

1. rank 0: ``oracle.create_trial(tuner_id)``; broadcast ``{trial_id, status, values}``.
   ``STOPPED`` ends the search on every rank; ``IDLE`` makes every rank wait ``idle_wait``
   seconds and ask again.
2. every rank trains the trial (:class:`tuners.trial_runner.TrialRunner`); after each epoch rank
   0 reports the rank-averaged metrics with ``oracle.update_trial(trial_id, metrics,
   step=epoch)`` and broadcasts whether the oracle asked to stop the trial early.
3. every rank contributes its outcome to an allgather, so all agree: the trial COMPLETED only if
   it completed on every rank; otherwise it is FAILED with the first failing rank's message.
4. rank 0 writes the ``trial_end`` record and calls ``oracle.end_trial`` with that status.

The SLURM wall-time signal: when rank 0's oracle client says it is winding down
(``winding_down``, see :class:`tuners.distributed.worker.ChiefClient`) the epoch report's
broadcast carries "suspend": every rank stops after this epoch, training checkpoints it, and
rank 0 gives the trial back with that epoch (``oracle.suspend``) instead of ending it; no
``trial_end`` is written. The next trial the chief hands out is then STOPPED.

An exception in rank 0's oracle calls never leaves the other ranks waiting in a collective:
it is carried to them in the next broadcast and raised on every rank as :class:`SearchAborted`.

A keras-tuner *chief* process (``KERASTUNER_TUNER_ID`` containing "chief") only serves the
oracle over gRPC, exactly as the stock tuners do; worker groups then wrap the oracle in an
``OracleClient`` on rank 0 (keras-tuner's ``BaseTuner`` does that from the environment).
"""

from __future__ import annotations

import os
import time
from typing import Any

import keras_tuner
from keras_tuner.engine import base_tuner
from keras_tuner.engine import trial as trial_module
from keras_tuner.src.distribute import utils as dist_utils

from mlpf_tf import distributed
from tuners.budget import AllocationBudget
from tuners.oracles import stop_reason
from tuners.trial_runner import TrialOutcome, TrialRunner, TrialSpec

TrialStatus = trial_module.TrialStatus

#: the keras-tuner project directory inside the run directory (oracle and trial state)
PROJECT_NAME = "keras_tuner"


class SearchAborted(RuntimeError):
    """The oracle could not be reached or refused the group's report; raised on every rank."""


class HorovodTuner(base_tuner.BaseTuner):
    """Searches with one Horovod group; every rank builds one of these with the same arguments.

    Args:
        oracle: a keras-tuner Oracle, or a client of a remote one with the same
            ``create_trial`` / ``update_trial`` / ``end_trial`` / ``objective`` (only rank 0
            calls it; the other ranks may get None).
        runner: trains one trial on this rank (:class:`TrialRunner`).
        hypermodel: optional ``keras_tuner.HyperModel`` declaring the space
            (:class:`tuners.hypermodel.MLPFHyperModel`); exposed as ``tuner.hypermodel``.
        directory: the run directory; oracle state goes to ``<directory>/keras_tuner``.
        context: the rank layout (:func:`mlpf_tf.distributed.init`).
        tuner_id: the id this group asks the oracle with (default ``KERASTUNER_TUNER_ID`` or
            ``tuner0``); all ranks of a group share it.
        budget: the search's node-hour budget on allocated node-hours
            (:class:`tuners.budget.AllocationBudget`); no new trial is asked for once it is
            spent. None: no budget here (a distributed search's chief holds it).
        epoch_budget: stop asking for new trials once this group trained this many epochs
            (0 = no limit).
        idle_wait: seconds to wait after an IDLE answer before asking again.
        overwrite: start afresh even if the directory holds oracle state (else it is resumed).
    """

    def __init__(self, oracle, runner: TrialRunner, *, hypermodel=None, directory: str,
                 context: distributed.Context | None = None, tuner_id: str | None = None,
                 budget: AllocationBudget | None = None, epoch_budget: int = 0,
                 idle_wait: float = 1.0,
                 overwrite: bool = False):
        self.context = context if context is not None else distributed.current()
        if isinstance(oracle, keras_tuner.Oracle):
            super().__init__(oracle=oracle, hypermodel=hypermodel, directory=directory,
                             project_name=PROJECT_NAME,
                             overwrite=overwrite and self.context.is_root)
        else:
            # A client of a remote oracle (e.g. tuners.distributed.worker.ChiefClient): the chief keeps the
            # search state, so there is nothing to reload or declare here.
            self.oracle = oracle
            self.hypermodel = hypermodel
            self.directory, self.project_name = directory, PROJECT_NAME
            self.tuner_id = os.environ.get("KERASTUNER_TUNER_ID", "tuner0")
            self.logger = None
        if tuner_id:
            self.tuner_id = tuner_id
        self.runner = runner
        self.budget = budget
        self.idle_wait = float(idle_wait)
        self.epoch_budget = int(epoch_budget)
        self.node_hours_used = 0.0
        self.epochs_used = 0
        self.trials_run: list[tuple[str, str]] = []  # (trial_id, status) in the order run here
        self.stop_reason: str | None = None  # which limit ended the search (rank 0)
        self._pending_error: str | None = None
        self._current: trial_module.Trial | None = None
        self._suspend_at: int | None = None  # the epoch the running trial was suspended at

    # --- keras-tuner plumbing -----------------------------------------------------------------

    @property
    def project_dir(self):
        path = os.path.join(str(self.directory), self.project_name)
        if self.context.is_root:  # only rank 0 creates files and directories
            os.makedirs(path, exist_ok=True)
        return path

    def get_trial_dir(self, trial_id):
        return self.runner.trial_dir(trial_id)

    def _populate_initial_space(self):
        # The MLPF space is flat (no conditional scopes): declaring it is enough, and no model
        # has to be built just to discover hyperparameters. Only rank 0 uses the oracle.
        if self.hypermodel is None or not self.context.is_root:
            return
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def save(self):
        if self.context.is_root and isinstance(self.oracle, keras_tuner.Oracle):
            super().save()

    def reload(self):
        # Resuming restores the oracle on rank 0; the other ranks hold no search state.
        if self.context.is_root:
            super().reload()

    # --- the search loop ----------------------------------------------------------------------

    def search(self, *fit_args, **fit_kwargs):
        """Run trials until the oracle says STOPPED (or this group's budget is spent)."""
        if dist_utils.is_chief_oracle():
            from keras_tuner.src.distribute import oracle_chief

            self.save()
            oracle_chief.start_server(self.oracle)  # blocks until every worker is done
            return
        self.on_search_begin()
        while True:
            message = self._next_trial()
            status = message["status"]
            if status == "ABORT":
                raise SearchAborted(message["error"])
            if status == TrialStatus.STOPPED:
                break
            if status == TrialStatus.IDLE:
                time.sleep(self.idle_wait)
                continue
            trial = self._trial_from_message(message)
            self.on_trial_begin(trial)
            spec = TrialSpec.from_values(trial.trial_id, trial.hyperparameters.values,
                                         default_epochs=self.runner.default_epochs)
            outcome = self._run_in_lockstep(spec)
            if outcome is None:  # suspended at the wall-time signal: given back, not ended
                self.trials_run.append((trial.trial_id, "SUSPENDED"))
                continue
            trial.status = outcome.status
            trial.message = outcome.error
            self.node_hours_used += outcome.node_hours
            self.epochs_used += max(0, outcome.epochs - spec.start_epoch)
            self.trials_run.append((trial.trial_id, outcome.status))
            self.on_trial_end(trial)
        self.on_search_end()

    def _next_trial(self) -> dict[str, Any]:
        """Rank 0 asks the oracle; every rank returns the same message."""
        message: dict[str, Any] | None = None
        if self.context.is_root:
            message = self._ask_oracle()
        return distributed.broadcast_object(message, root=0, ctx=self.context)

    def _ask_oracle(self) -> dict[str, Any]:
        self._pending_error = self._pending_error or self.runner.write_error
        if self._pending_error is not None:
            return {"status": "ABORT", "error": self._pending_error}
        if self.budget is not None and self.budget.spent():
            print(f"node-hour budget spent: {self.budget.used():.4f} allocated of "
                  f"{self.budget.budget:g}; no new trials", flush=True)
            self.stop_reason = "node_hour_budget"
            return {"status": TrialStatus.STOPPED}
        if self.epoch_budget and self.epochs_used >= self.epoch_budget:
            print(f"epoch budget spent: {self.epochs_used} of {self.epoch_budget}; "
                  "no new trials", flush=True)
            self.stop_reason = "epoch_budget"
            return {"status": TrialStatus.STOPPED}
        self._current = None
        try:
            trial = self.oracle.create_trial(self.tuner_id)
        except Exception as exc:  # a dead chief, a full disk, ...: abort every rank together
            return {"status": "ABORT", "error": f"oracle.create_trial failed: {_describe(exc)}"}
        if trial.status == TrialStatus.RUNNING:
            self._current = trial
        elif trial.status == TrialStatus.STOPPED and isinstance(self.oracle, keras_tuner.Oracle):
            self.stop_reason = stop_reason(self.oracle)
        return {"status": trial.status, "trial_id": trial.trial_id,
                "values": dict(trial.hyperparameters.values)}

    def _trial_from_message(self, message: dict[str, Any]) -> trial_module.Trial:
        if self.context.is_root and self._current is not None:
            return self._current  # the oracle's own Trial object (or the client's copy)
        hp = keras_tuner.HyperParameters()
        hp.values = dict(message["values"])
        return trial_module.Trial(hyperparameters=hp, trial_id=message["trial_id"],
                                  status=TrialStatus.RUNNING)

    def _run_in_lockstep(self, spec: TrialSpec) -> TrialOutcome | None:
        """The agreed outcome; None if the trial was suspended (and given back)."""
        self._suspend_at = None
        outcome = self.runner.run(spec, report_epoch=self._epoch_reporter(spec))
        outcome = self._agree(outcome)
        if self._suspend_at is not None and outcome.status == TrialStatus.COMPLETED:
            if self.context.is_root:
                try:
                    self.oracle.suspend(spec.trial_id, self._suspend_at)
                except Exception as exc:
                    self._pending_error = f"oracle.suspend failed: {_describe(exc)}"
            return None
        if self.context.is_root:
            self.runner.record_end(spec, outcome, objective=self.oracle.objective.name)
        return outcome

    def _epoch_reporter(self, spec: TrialSpec):
        """Callable(epoch, metrics) -> stop?, run on every rank after each epoch."""

        def report(epoch: int, metrics: dict[str, float] | None) -> bool:
            stop = suspend = False
            if self.context.is_root and metrics is None:
                stop = True  # non-finite objective: the trial fails, stop it now
            elif self.context.is_root:
                try:
                    reply = self.oracle.update_trial(spec.trial_id, metrics, step=epoch)
                    stop = getattr(reply, "status", None) == TrialStatus.STOPPED
                except Exception as exc:
                    self._pending_error = f"oracle.update_trial failed: {_describe(exc)}"
                    stop = True
                winding = getattr(self.oracle, "winding_down", None)
                suspend = (not stop and winding is not None and winding.is_set()
                           and epoch < spec.target_epochs)
            stop, suspend = distributed.broadcast_object((stop, suspend), root=0,
                                                         ctx=self.context)
            if suspend:
                self._suspend_at = epoch
            return bool(stop or suspend)

        return report

    def _agree(self, outcome: TrialOutcome) -> TrialOutcome:
        """Every rank's outcome -> one outcome, the same on every rank."""
        mine = (outcome.status, outcome.error)
        gathered = distributed.allgather_object(mine, ctx=self.context)
        failed = [(rank, err) for rank, (status, err) in enumerate(gathered)
                  if status != TrialStatus.COMPLETED]
        if not failed:
            return outcome
        rank, err = failed[0]
        where = f" (rank {rank} of {len(gathered)})" if len(gathered) > 1 else ""
        return outcome.failed(f"{err or 'failed'}{where}")

    def on_trial_end(self, trial):
        if not self.context.is_root:
            return
        try:
            self.oracle.end_trial(trial)
        except Exception as exc:
            self._pending_error = f"oracle.end_trial failed: {_describe(exc)}"
            return
        self.save()

    # --- results ------------------------------------------------------------------------------

    def load_model(self, trial):
        """The model of ``trial`` with the weights of its last checkpoint."""
        return self.runner.load_model(trial.trial_id, trial.hyperparameters.values)


def _describe(exc: BaseException) -> str:
    message = " ".join(str(exc).split())
    return (f"{type(exc).__name__}: {message}" if message else type(exc).__name__)[:2000]
