"""ASHA and ASHA+BO as keras-tuner oracles (promotion-based asynchronous successive halving).

``ASHAOracle`` answers every ``create_trial`` at once (it never idles a worker while work
remains): it promotes the best not-yet-promoted configuration of the highest rung where one is
in the top ``1/eta`` (see :mod:`tuners.rungs`), else it starts a new configuration at the bottom
rung of a bracket, drawn by a sampler (:mod:`tuners.samplers`): "random" for ASHA,
"bayesian" for ASHA+BO (``ASHABOOracle``).

How a Tuner runs a trial (reserved values, as keras-tuner's Hyperband uses them):

- ``tuner/epochs``: train until this many epochs in total (``r_k`` of the trial's rung).
- ``tuner/initial_epoch``: epochs already trained; 0 for a new configuration, else the parent's
  rung budget. Train epochs ``initial_epoch .. epochs - 1``.
- ``tuner/trial_id``: only on a promotion: the parent trial whose checkpoint (weights and, when
  the Tuner saves it, optimizer state) to restore before continuing. Absent for new ones.
- ``tuner/rung`` and ``tuner/bracket``: where the result will be recorded.

Each promotion is a separate keras-tuner trial; its score -- the objective at its last epoch,
the epoch whose weights its checkpoint holds and a promotion continues (:mod:`tuners.scoring`),
not keras-tuner's best value over the epochs -- becomes the configuration's result at its rung.
FAILED or INVALID trials give no rung result and are never promoted; a configuration whose
promotion trial failed stays promoted from its lower rung (it is not re-offered).

Budgets (any combination; the first exhausted one ends the search with ``STOPPED``):

- ``max_trials``: keras-tuner trials issued, i.e. new configurations plus promotions
  (keras-tuner's own check, before ``populate_space`` is called).
- ``epoch_budget``: epochs allotted, the sum of ``tuner/epochs - tuner/initial_epoch`` over
  the trials issued; no trial is issued once it is reached (the last may overshoot it).
- ``node_hour_budget``: node-hours reported for the trials, summed. A trial's node-hours are
  its cumulative cost so far, passed as the metric ``node_hours`` in ``update_trial`` (next to
  the objective, as keras-tuner requires) or with :meth:`ASHAOracle.record_cost`; the latest
  value per trial counts. No trial is issued once the sum reaches the budget.

State (see :mod:`tuners.journal`): every state change -- a trial created (with the decision
that made it: promotion or new configuration, the random draw counter ``seed_state``, the
sampler's state, epochs allotted), metrics reported, a trial ended, a cost recorded, a reload --
is appended as one JSON line to ``<directory>/<project_name>/oracle.journal.jsonl`` and flushed
before the call returns (``journal_fsync=True`` also forces it to disk). That costs O(1) per
call instead of rewriting the whole state. ``oracle.json`` is a compacted snapshot: keras-tuner's
state plus ``"asha"`` (ladder results and promotion flags, epochs allotted, node-hours per trial,
sampler state), every trial's state and the journal position it covers; it is written
atomically (temporary file + rename) once the journal has grown by
``max(snapshot_every, number of trials)`` lines since the last one, so its cost is O(1) per call
amortised. ``trial_<id>/trial.json`` is still written once a trial has ended, as a mirror for
people and tools (running trials and metric reports are only journaled).

``oracle.reload()`` loads the snapshot and replays the journal after it through the same
keras-tuner code paths with the recorded decisions (no sampler or model is re-run), so a
restarted oracle resumes with identical later decisions. A crash can at worst cut the last
journal line short: that line (a call that never returned) is dropped. Without a usable snapshot
the whole journal is replayed: it is never truncated (about 300 bytes per call, 11 MB for 10,000
trials), so a lost snapshot costs time, not state. As in keras-tuner, trials that were running
at the restart are re-issued first (retry queue); which worker ran them is kept in
``interrupted_trials`` (``oracle.json``'s ``ongoing_trials`` is as of the last snapshot). A
project written by the older layout (``oracle.json`` and ``trial.json`` files only) is reloaded
as keras-tuner does and continues with a journal. Changes made to ``ongoing_trials`` or the
retry queue from outside the oracle (a chief re-leasing trials after a restart) are journaled
as a ``sync`` line before the next call. Unlike keras-tuner's own state, a trial that has just
ended is not saved as ongoing (keras-tuner saves before dropping it, so a reload would re-run it).

Latency: a decision is O(rungs * brackets * log n) (heaps and sorted lists, see
:mod:`tuners.rungs`). The keras-tuner base also scans all trials for consecutive failures on
every ``end_trial``; this oracle keeps a running count instead. Persistence per call is one
journal line plus the trial file, measured end to end by ``benchmark.oracle_latency``.
"""

from __future__ import annotations

import collections
import json
import math
import os
import sys
from datetime import datetime
from typing import Any

import keras_tuner
from keras_tuner.src.engine import metrics_tracking
from keras_tuner.src.engine import trial as trial_module

from tuners import journal
from tuners.rungs import AshaLadder, Promotion
from tuners.samplers import BayesianSampler, RandomSampler, SamplingContext, make_sampler
from tuners.scoring import LastEpochScore

RESERVED_PREFIX = "tuner/"
NODE_HOURS = "node_hours"
JOURNAL_FILE = "oracle.journal.jsonl"
SNAPSHOT_FILE = "oracle.json"

_RUNNING = trial_module.TrialStatus.RUNNING
_COMPLETED = trial_module.TrialStatus.COMPLETED
_FAILED = trial_module.TrialStatus.FAILED


def _budget(name: str, value: Any, kind: type) -> Any:
    """None / 0 mean no budget; otherwise a positive number of ``kind``."""
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
            kind is int and not float(value).is_integer()):
        raise ValueError(f"{name} must be a {'whole ' if kind is int else ''}number >= 0 "
                         f"(0 or None: no budget), got {value!r}")
    return kind(value)


class ASHAOracle(LastEpochScore, keras_tuner.Oracle):
    """Asynchronous successive halving with promotions (Li et al. 2020) as a keras-tuner Oracle.

    Args:
        objective: keras-tuner objective (name, ``keras_tuner.Objective``, ...); a maximised
            objective is folded into the sign, so both directions share one ordering.
        hyperparameters: the search space (``keras_tuner.HyperParameters``, not empty).
        min_epochs: budget of rung 0 (grace period). max_epochs: budget of the top rung.
        reduction_factor: eta (integer >= 2). brackets: successive-halving brackets (>= 1).
        max_trials, epoch_budget, node_hour_budget: budgets, see the module docstring
            (None or 0: none).
        sampler: "random", "bayesian", or a sampler instance. sampler_options: keyword
            arguments of :class:`tuners.samplers.BayesianSampler`.
        seed: seeds the random draws (keras-tuner's ``_seed_state``) and the sampler.
        journal_fsync: force every journal line to disk (survives a power loss; costs an
            ``fsync`` per call). Default: flushed to the operating system (survives a crash of
            the process).
        snapshot_every: journal lines between compacted snapshots, at least (the interval is
            ``max(snapshot_every, number of trials)``, so snapshots cost O(1) per call amortised).
        Other arguments are keras-tuner's ``Oracle`` arguments.
    """

    def __init__(self, objective=None, hyperparameters=None, *, min_epochs: int = 1,
                 max_epochs: int = 100, reduction_factor: int = 3, brackets: int = 1,
                 max_trials: int | None = None, epoch_budget: int | None = None,
                 node_hour_budget: float | None = None, sampler: Any = "random",
                 sampler_options: dict | None = None, seed: int | None = None,
                 allow_new_entries: bool = True, tune_new_entries: bool = True,
                 max_retries_per_trial: int = 0, max_consecutive_failed_trials: int = 3,
                 journal_fsync: bool = False, snapshot_every: int = 1000):
        if not isinstance(snapshot_every, int) or isinstance(snapshot_every, bool) or \
                snapshot_every < 1:
            raise ValueError(f"snapshot_every must be an integer >= 1, got {snapshot_every!r}")
        ladder = AshaLadder(min_epochs, max_epochs, reduction_factor, brackets)
        if hyperparameters is None or not hyperparameters.space:
            raise ValueError(
                "the search space is empty: pass hyperparameters with at least one "
                "hyperparameter (keras_tuner.HyperParameters)")
        if max_trials is not None and (not isinstance(max_trials, int) or max_trials < 0):
            raise ValueError(f"max_trials must be an integer >= 0 or None, got {max_trials!r}")
        super().__init__(objective=objective, max_trials=max_trials or None,
                         hyperparameters=hyperparameters, allow_new_entries=allow_new_entries,
                         tune_new_entries=tune_new_entries, seed=seed,
                         max_retries_per_trial=max_retries_per_trial,
                         max_consecutive_failed_trials=max_consecutive_failed_trials)
        if seed is not None:  # keras-tuner treats seed 0 as "pick one at random"
            self.seed = self._seed_state = int(seed)
        self.sampler = make_sampler(sampler, seed=self.seed, **(sampler_options or {}))
        self.ladder = ladder
        self.min_epochs = min_epochs
        self.max_epochs = max_epochs
        self.reduction_factor = reduction_factor
        self.brackets = brackets
        self.epoch_budget = _budget("epoch_budget", epoch_budget, int)
        self.node_hour_budget = _budget("node_hour_budget", node_hour_budget, float)
        self._sign = -1.0 if self.objective.direction == "max" else 1.0
        self.epochs_allotted = 0
        self.node_hours_spent = 0.0
        self._trial_cost: dict[str, float] = {}
        self._consecutive_failures = 0
        # persistence (see the module docstring)
        self.journal_fsync = bool(journal_fsync)
        self.snapshot_every = snapshot_every
        self.interrupted_trials: dict[str, str] = {}  # tuner id -> trial id, set by reload()
        self._journal: journal.JournalWriter | None = None
        self._ops = 0  # journal lines written (or replayed) so far
        self._ops_at_snapshot = 0
        self._replaying = False
        self._in_op = False
        self._updating = False
        self._decision: dict[str, Any] | None = None
        self._shadow: tuple = ((), ())  # ongoing trials and retry queue as last journaled
        self._trial_json: dict[str, str] = {}  # trial id -> its state as JSON (snapshots)
        self._dirty_trials: set[str] = set()
        # A host that snapshots off its hot path (the chief: snapshot_parts under its lock,
        # write_snapshot after releasing it) sets this; calls then never write oracle.json.
        self.background_snapshots = False

    @property
    def hyperparameters(self):
        return self._space

    @hyperparameters.setter
    def hyperparameters(self, hps):
        # keras-tuner copies the space for every trial (``copy()``: from_config(get_config()),
        # about 0.5 ms); the same space object with a container copy() costs a small fraction.
        if type(hps) is keras_tuner.HyperParameters:
            fast = _FastCopyHyperParameters.__new__(_FastCopyHyperParameters)
            fast.__dict__ = hps.__dict__  # the same space: changes show in both
            hps = fast
        self._space = hps

    # -- the decision ----------------------------------------------------------------------
    def populate_space(self, trial_id):
        """Promote the best eligible configuration, else start a new one; STOPPED when spent."""
        if self.budget_exhausted():
            return {"status": trial_module.TrialStatus.STOPPED}
        self._decision = decision = {}
        promotion = self.ladder.next_promotion()
        if promotion is not None:
            self.ladder.promote(promotion)
            decision["promote"] = [promotion.bracket, promotion.rung, promotion.key]
            parent = self.trials[promotion.key]
            values = {k: v for k, v in parent.hyperparameters.values.items()
                      if not k.startswith(RESERVED_PREFIX)}
            values.update({
                "tuner/epochs": promotion.to_epochs,
                "tuner/initial_epoch": promotion.from_epochs,
                "tuner/trial_id": promotion.key,
                "tuner/rung": promotion.rung + 1,
                "tuner/bracket": promotion.bracket,
            })
            self.epochs_allotted += promotion.to_epochs - promotion.from_epochs
            return {"status": _RUNNING, "values": values}
        values = self.sampler.propose(self._sampling_context())
        if values is None:  # discrete space exhausted: only promotions can still come
            status = trial_module.TrialStatus.IDLE if self.ongoing_trials else \
                trial_module.TrialStatus.STOPPED
            return {"status": status}
        bracket, rung, epochs = self.ladder.start_config()
        decision["start"] = True
        values = dict(values)
        values.update({"tuner/epochs": epochs, "tuner/initial_epoch": 0,
                       "tuner/rung": rung, "tuner/bracket": bracket})
        self.epochs_allotted += epochs
        return {"status": _RUNNING, "values": values}

    def _sampling_context(self) -> SamplingContext:
        pending = [t.hyperparameters for t in self.ongoing_trials.values()
                   if "tuner/trial_id" not in t.hyperparameters.values]
        return SamplingContext(
            space=self.hyperparameters, ladder=self.ladder,
            hyperparameters_of=lambda key: self.trials[key].hyperparameters,
            pending=pending, random_values=self._random_values, is_duplicate=self._duplicate)

    def budget_exhausted(self) -> bool:
        """True once the epoch or node-hour budget is used up (max_trials: keras-tuner's)."""
        if self.epoch_budget is not None and self.epochs_allotted >= self.epoch_budget:
            return True
        if self.node_hour_budget is not None and self.node_hours_spent >= self.node_hour_budget:
            return True
        return False

    # -- calls that change state: keras-tuner's, each journaled as one line -----------------
    @keras_tuner.synchronized
    def create_trial(self, tuner_id):
        if self._replaying or tuner_id in self.ongoing_trials:
            return super().create_trial(tuner_id)
        self._check_drift()
        retry = bool(self._retry_queue)
        width = len(str(self.max_trials))  # keras-tuner pads trial ids to this width
        self._decision = None
        self._in_op = True
        try:
            trial = super().create_trial(tuner_id)
        finally:
            self._in_op = False
        decision, self._decision = self._decision, None
        running = trial.status == _RUNNING
        if not (retry or running or decision is not None):
            return trial  # keras-tuner's max_trials reached: nothing changed
        record: dict[str, Any] = {"op": "create", "tuner": tuner_id, "trial": trial.trial_id,
                                  "status": trial.status, "w": width}
        if retry:
            record["retry"] = True
        elif running:
            record["values"] = trial.hyperparameters.values
        if decision is not None:
            decision.update(seed=self._seed_state, epochs=self.epochs_allotted)
            if not isinstance(self.sampler, RandomSampler):
                decision["sampler"] = self.sampler.get_state()
            record["dec"] = decision
        display = self._display
        if running and trial.trial_id in display.trial_start:
            record["disp"] = [display.trial_start[trial.trial_id].isoformat(),
                              display.trial_number.get(trial.trial_id)]
        if running:
            self._dirty_trials.add(trial.trial_id)
        self._commit(record)
        return trial

    @keras_tuner.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        metrics = {name: journal.plain(value) if hasattr(value, "item") else value
                   for name, value in metrics.items()}
        if NODE_HOURS in metrics:
            _check_cost(trial_id, metrics[NODE_HOURS])  # before anything changes
        self._updating = True  # the trial file is rewritten when the trial ends, not per report
        try:
            trial = super().update_trial(trial_id, metrics, step)
        finally:
            self._updating = False
        if NODE_HOURS in metrics:
            self._set_cost(trial_id, metrics[NODE_HOURS])
        self._dirty_trials.add(trial_id)
        if not self._replaying:
            self._commit({"op": "update", "trial": trial_id, "metrics": metrics, "step": step},
                         drift=False)
        return trial

    @keras_tuner.synchronized
    def end_trial(self, trial):
        if self._replaying:
            return super().end_trial(trial)
        self._check_drift()
        old = self.trials[trial.trial_id]
        record: dict[str, Any] = {"op": "end", "trial": trial.trial_id, "status": trial.status,
                                  "message": trial.message}
        if trial.hyperparameters is not old.hyperparameters and not _same_hyperparameters(
                trial.hyperparameters, old.hyperparameters):
            record["hps"] = trial.hyperparameters.get_config()
        tuner_id = next((tid for tid, t in self.ongoing_trials.items()
                         if t.trial_id == trial.trial_id), None)
        self._dirty_trials.add(trial.trial_id)
        self._in_op = True
        try:
            super().end_trial(trial)
        except RuntimeError:  # too many consecutive failures: the state changed all the same
            record.update(raised=True, tuner=tuner_id)
            self._in_op = False
            self._commit(record)
            raise
        finally:
            self._in_op = False
        self._commit(record)

    @keras_tuner.synchronized
    def record_cost(self, trial_id: str, node_hours: float) -> None:
        """Set the cumulative node-hours spent by ``trial_id`` so far (the latest value counts)."""
        if trial_id not in self.trials:
            raise KeyError(f"unknown trial id {trial_id!r}")
        self._set_cost(trial_id, node_hours)
        self._commit({"op": "cost", "trial": trial_id, "node_hours": float(node_hours)})

    def _set_cost(self, trial_id: str, node_hours: Any) -> None:
        value = _check_cost(trial_id, node_hours)
        self.node_hours_spent += value - self._trial_cost.get(trial_id, 0.0)
        self._trial_cost[trial_id] = value

    def _check_consecutive_failures(self):
        # keras-tuner's end_trial calls this exactly once per trial reaching a final status
        # (after scoring and retries, before saving): record the rung result here so that the
        # saved state includes it, and count failures without rescanning all trials.
        trial = self.trials[self.end_order[-1]]
        self._record_result(trial)
        if trial.status == _FAILED:
            self._consecutive_failures += 1
        else:
            self._consecutive_failures = 0
        if self._consecutive_failures >= self.max_consecutive_failed_trials:
            raise RuntimeError(
                "Number of consecutive failures exceeded the limit "
                f"of {self.max_consecutive_failed_trials}.\n" + (trial.message or ""))

    def _record_result(self, trial) -> None:
        if trial.status != _COMPLETED or trial.score is None or math.isnan(trial.score):
            return
        values = trial.hyperparameters.values
        if "tuner/rung" not in values:
            raise ValueError(f"trial {trial.trial_id} has no tuner/rung value: it was not "
                             "issued by this oracle")
        self.ladder.record(int(values["tuner/bracket"]), int(values["tuner/rung"]),
                           trial.trial_id, self._sign * float(trial.score))

    def _compute_values_hash(self, values):
        # A promotion repeats its parent's configuration: only the hyperparameters count.
        return super()._compute_values_hash(
            {k: v for k, v in values.items() if not k.startswith(RESERVED_PREFIX)})

    # -- state -----------------------------------------------------------------------------
    def get_state(self):
        state = super().get_state()
        # keras-tuner's end_trial saves before it drops the ended trial from ongoing_trials, so
        # a reload would re-run a finished trial: only trials still RUNNING count as ongoing.
        state["ongoing_trials"] = {
            tuner_id: trial.trial_id for tuner_id, trial in self.ongoing_trials.items()
            if trial.status == _RUNNING}
        state["asha"] = {
            "ladder": self.ladder.get_state(),
            "sampler": self.sampler.get_state(),
            "epoch_budget": self.epoch_budget,
            "node_hour_budget": self.node_hour_budget,
            "epochs_allotted": self.epochs_allotted,
            "trial_cost": self._trial_cost,
        }
        return state

    def set_state(self, state):
        super().set_state(state)
        asha = state["asha"]
        self.ladder.set_state(asha["ladder"])
        self.sampler.set_state(asha["sampler"])
        if isinstance(self.sampler, BayesianSampler):
            self.sampler.seed = int(self.seed)
        self.epochs_allotted = int(asha["epochs_allotted"])
        self._trial_cost = {str(k): float(v) for k, v in asha["trial_cost"].items()}
        self.node_hours_spent = sum(self._trial_cost.values())
        self._consecutive_failures = 0
        for trial_id in reversed(self.end_order):
            if self.trials[trial_id].status != _FAILED:
                break
            self._consecutive_failures += 1

    # -- persistence: journal, snapshots, reload -------------------------------------------
    def _set_project_dir(self, directory, project_name):
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        super()._set_project_dir(directory, project_name)

    def _project_path(self, *names: str) -> str:
        return os.path.join(str(self._directory), self._project_name, *names)

    def _header(self) -> dict[str, Any]:
        return {"settings": self.ladder.settings(), "sampler": self.sampler.name,
                "seed": self.seed, "direction": self.objective.direction}

    def _writer(self) -> journal.JournalWriter:
        if self._journal is None:  # a new search: a new journal, as keras-tuner overwrites
            self._journal = journal.JournalWriter(self._project_path(JOURNAL_FILE),
                                                  self._header(), fsync=self.journal_fsync,
                                                  fresh=True)
            self.snapshot()  # oracle.json exists (and names this journal) from the start
        return self._journal

    def _shadow_now(self) -> tuple:
        # (tuner id, Trial object) pairs: compared by identity at C speed on every call
        return tuple(self.ongoing_trials.items()), tuple(self._retry_queue)

    def _check_drift(self) -> None:
        """Journal changes made to ongoing trials / the retry queue outside the oracle's calls."""
        if self._replaying:
            return
        now = self._shadow_now()
        if now != self._shadow:
            self._append({"op": "sync", "ongoing": {k: t.trial_id for k, t in now[0]},
                          "retry": list(now[1])})
            self._shadow = now

    def _append(self, record: dict[str, Any]) -> None:
        self._ops += 1
        record["n"] = self._ops
        self._writer().append(record)

    def _commit(self, record: dict[str, Any], drift: bool = True) -> None:
        """Append the record of a finished call, then snapshot if one is due."""
        self._append(record)
        if drift:
            self._shadow = self._shadow_now()
        if not self.background_snapshots and self.snapshot_due():
            self.snapshot()

    def save(self):
        """Make the state durable now: the journal already is; snapshot if one is due.

        keras-tuner calls this inside ``create_trial`` / ``end_trial``; those calls journal
        themselves when they finish, so it does nothing there.
        """
        if self._replaying or self._in_op or self._directory is None:
            return
        self._check_drift()
        if not self.background_snapshots and self.snapshot_due():
            self.snapshot()

    def snapshot_due(self, any_change: bool = False) -> bool:
        """The journal grew by ``max(snapshot_every, number of trials)`` lines since the last
        snapshot (with ``any_change``: by one line or more)."""
        grown = self._ops - self._ops_at_snapshot
        return self._journal is not None and grown >= (
            1 if any_change else max(self.snapshot_every, len(self.trials)))

    def snapshot(self) -> None:
        """Write ``oracle.json``: the whole state and the journal position it covers (atomic)."""
        self.write_snapshot(self.snapshot_parts())

    def snapshot_parts(self) -> tuple[str, list[str]]:
        """The part of a snapshot that reads the state (call it under the lock that guards
        the oracle): the state as JSON without its trials, and the trials' JSON texts. Trials
        that ended were serialised when they ended (their ``trial.json``); only the others
        changed since the last snapshot are serialised here. The journal position is taken
        now: lines appended before :meth:`write_snapshot` runs are replayed after it."""
        writer = self._writer()
        for trial_id in self._dirty_trials:
            self._trial_json[trial_id] = journal.dumps(self.trials[trial_id].get_state())
        self._dirty_trials.clear()
        state = self.get_state()
        state["journal"] = {"format": journal.FORMAT, "file": JOURNAL_FILE,
                            "journal_id": writer.journal_id, "ops": self._ops,
                            "offset": writer.size}
        self._ops_at_snapshot = self._ops
        return journal.dumps(state), list(self._trial_json.values())

    def write_snapshot(self, parts: tuple[str, list[str]]) -> None:
        """The part of a snapshot that needs no lock: join the texts of
        :meth:`snapshot_parts` and replace ``oracle.json`` with them (atomic)."""
        head, trials = parts
        text = head[:-1] + ',"trials":[' + ",".join(trials) + "]}"
        journal.write_atomic(self._project_path(SNAPSHOT_FILE), text, fsync=self.journal_fsync)

    def _save_trial(self, trial):
        """Mirror a trial that has ended to ``trial_<id>/trial.json`` (one write per trial).

        Running trials and metric reports are only journaled: a file per call cost more than
        everything else in a call (measured by ``benchmark.oracle_latency``).
        """
        if self._replaying or self._updating or trial.status == _RUNNING:
            return
        directory = self._project_path(f"trial_{trial.trial_id}")
        try:
            os.mkdir(directory)
        except FileExistsError:
            pass
        path = os.path.join(directory, "trial.json")
        text = journal.dumps(trial.get_state())
        self._trial_json[trial.trial_id] = text  # what the next snapshot holds for it
        self._dirty_trials.discard(trial.trial_id)
        try:
            with open(path, "x", encoding="utf-8") as fh:  # a new file: no reader yet
                fh.write(text)
        except FileExistsError:  # ended again after a retry: replace it whole
            journal.write_atomic(path, text)

    def reload(self):
        """Load the snapshot, replay the journal after it, re-queue the trials that were running.

        Raises:
            FileNotFoundError: no saved state in the project directory.
            tuners.journal.JournalError: damaged journal, or one written with other settings.
        """
        journal_path = self._project_path(JOURNAL_FILE)
        snapshot_path = self._project_path(SNAPSHOT_FILE)
        if not os.path.exists(journal_path):
            if not os.path.exists(snapshot_path):
                raise FileNotFoundError(
                    f"no oracle state to reload in {self._project_path()}: neither "
                    f"{JOURNAL_FILE} nor {SNAPSHOT_FILE} exists")
            super().reload()  # the older layout: oracle.json + trial.json files
            self._after_reload(legacy=True)
            return
        snapshot = None
        if os.path.exists(snapshot_path):
            with open(snapshot_path, encoding="utf-8") as fh:
                snapshot = json.load(fh)
        info = (snapshot or {}).get("journal")
        header, records, valid = journal.read_journal(journal_path)
        if header is None:  # created but its header never written: nothing was journaled
            self._journal = None
            self._after_reload(legacy=False)
            return
        expected = self._header()
        for key in ("settings", "sampler", "direction"):
            if header.get(key) != expected[key]:
                raise journal.JournalError(
                    f"{journal_path}: written with {key} {header.get(key)!r}, but this oracle "
                    f"has {expected[key]!r}")
        if info and info.get("journal_id") == header["journal_id"]:
            self._load_snapshot(snapshot)
            self._ops = self._ops_at_snapshot = int(info["ops"])
            records = [r for r in records if r.get("n", 0) > self._ops]
        else:
            if self.trials:
                raise RuntimeError("reload() needs a freshly built oracle (it has trials)")
            self._ops = self._ops_at_snapshot = 0
        if records and records[0].get("n") != self._ops + 1:
            raise journal.JournalError(
                f"{journal_path}: expected line number {self._ops + 1} after the snapshot, "
                f"found {records[0].get('n')}")
        self._replay(journal_path, records)
        self._journal = journal.JournalWriter(journal_path, fsync=self.journal_fsync,
                                              valid_size=valid,
                                              journal_id=header["journal_id"])
        self._after_reload(legacy=False)

    def _load_snapshot(self, snapshot: dict[str, Any]) -> None:
        self.trials = {}
        self._trial_json = {}
        template, template_space = None, None
        for trial_state in snapshot["trials"]:
            config = trial_state["hyperparameters"]
            if template is None or config["space"] != template_space:
                template_space = config["space"]
                template = _FastCopyHyperParameters.from_config({"space": template_space,
                                                                 "values": {}})
            # Trial.from_state, with a copy of the shared space instead of a rebuild per trial
            hps = template.copy()
            hps.values = dict(config["values"])
            trial = trial_module.Trial(hps, trial_id=trial_state["trial_id"],
                                       status=trial_state["status"],
                                       message=trial_state.get("message"))
            trial.metrics = metrics_tracking.MetricsTracker.from_config(trial_state["metrics"])
            trial.score = trial_state["score"]
            trial.best_step = trial_state["best_step"]
            self.trials[trial.trial_id] = trial
        self._dirty_trials = set(self.trials)  # serialised again by the next snapshot
        self.set_state(snapshot)

    def _after_reload(self, legacy: bool) -> None:
        if not legacy:  # keras-tuner's reload: running trials are re-issued first
            self._requeue_ongoing()
        else:
            self.interrupted_trials = {}
        if legacy:
            self._journal = None
            self._dirty_trials = set(self.trials)
            self._shadow = self._shadow_now()
            self.snapshot()  # a new journal starts from the reloaded state
            return
        self._append({"op": "reload"})
        self._shadow = self._shadow_now()
        if self.snapshot_due():
            self.snapshot()

    def _requeue_ongoing(self) -> None:
        # as get_state saves them: only trials still RUNNING were interrupted
        self.interrupted_trials = {tuner_id: t.trial_id
                                   for tuner_id, t in self.ongoing_trials.items()
                                   if t.status == _RUNNING}
        self._retry_queue.extend(self.interrupted_trials.values())
        self.ongoing_trials = {}

    def _replay(self, path: str, records: list[dict[str, Any]]) -> None:
        """Apply journaled calls through the same code paths, with the recorded decisions."""
        verbose, self._display.verbose = self._display.verbose, 0
        self._replaying = True
        try:
            for record in records:
                try:
                    self._replay_one(record)
                except (KeyError, ValueError, TypeError) as err:
                    raise journal.JournalError(
                        f"{path}: cannot replay line n={record.get('n')} "
                        f"({record.get('op')}): {err!r}") from err
                self._ops = int(record["n"])
        finally:
            self._replaying = False
            self._display.verbose = verbose

    def _replay_one(self, record: dict[str, Any]) -> None:
        op = record["op"]
        if op == "create":
            self._replay_create(record)
        elif op == "update":
            self.update_trial(record["trial"], record["metrics"], record.get("step", 0))
        elif op == "end":
            trial = self.trials[record["trial"]]
            trial.status = record["status"]
            trial.message = record.get("message")
            if "hps" in record:
                trial.hyperparameters = keras_tuner.HyperParameters.from_config(record["hps"])
            self._dirty_trials.add(trial.trial_id)
            limit, self.max_consecutive_failed_trials = \
                self.max_consecutive_failed_trials, sys.maxsize
            try:
                self.end_trial(trial)
            finally:
                self.max_consecutive_failed_trials = limit
            if record.get("raised") and record.get("tuner") is not None:
                self.ongoing_trials[record["tuner"]] = trial  # keras-tuner raised before this
        elif op == "cost":
            self._set_cost(record["trial"], record["node_hours"])
        elif op == "sync":
            self.ongoing_trials = {tuner_id: self.trials[trial_id]
                                   for tuner_id, trial_id in record["ongoing"].items()}
            self._retry_queue = list(record["retry"])
        elif op == "reload":
            self._requeue_ongoing()
        else:
            raise ValueError(f"unknown journal operation {op!r}")

    def _replay_create(self, record: dict[str, Any]) -> None:
        decision = record.get("dec")
        response: dict[str, Any] = {"status": record["status"]}
        if "values" in record:
            response["values"] = record["values"]

        def replayed_decision(trial_id):
            if decision is not None:
                self._apply_decision(decision)
            return response

        cap = self.max_trials
        self.max_trials = _ReplayCap(int(record.get("w", len(str(cap)))))
        self.populate_space = replayed_decision
        try:
            trial = self.create_trial(record["tuner"])
        finally:
            del self.populate_space
            self.max_trials = cap
        if trial.trial_id != record["trial"] or trial.status != record["status"]:
            raise ValueError(f"replay gave trial {trial.trial_id} {trial.status}, the journal "
                             f"has trial {record['trial']} {record['status']}")
        if trial.status == _RUNNING:
            self._dirty_trials.add(trial.trial_id)
        if "disp" in record:
            start, number = record["disp"]
            self._display.trial_start[trial.trial_id] = datetime.fromisoformat(start)
            if self._display.search_start is None:
                self._display.search_start = datetime.fromisoformat(start)
            if number is not None:
                self._display.trial_number[trial.trial_id] = number

    def _apply_decision(self, decision: dict[str, Any]) -> None:
        if "promote" in decision:
            bracket, rung, key = decision["promote"]
            budgets = self.ladder.budgets
            self.ladder.promote(Promotion(key=key, bracket=int(bracket), rung=int(rung),
                                          loss=0.0, from_epochs=budgets[rung],
                                          to_epochs=budgets[rung + 1]))
        if decision.get("start"):
            self.ladder.start_config()
        self._seed_state = int(decision["seed"])
        self.epochs_allotted = int(decision["epochs"])
        if "sampler" in decision:
            self.sampler.set_state(decision["sampler"])

    def rung_sizes(self) -> list[int]:
        """Results recorded per rung (summed over brackets)."""
        return [self.ladder.rung_size(k) for k in range(self.ladder.top_rung + 1)]


class _FastCopyHyperParameters(keras_tuner.HyperParameters):
    """A search space whose ``copy()`` copies the containers and shares the hyperparameter
    objects, which keras-tuner never changes once registered (it registers copies of them).

    Same result as keras-tuner's ``from_config(get_config())`` copy at a small fraction of the
    cost; the chief copies the space for every new trial.
    """

    def copy(self):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._name_scopes = list(self._name_scopes)
        new._conditions = list(self._conditions)
        new._hps = collections.defaultdict(list, {k: list(v) for k, v in self._hps.items()})
        new._space = list(self._space)
        new.values = dict(self.values)
        new.active_scopes = list(self.active_scopes)
        new.inactive_scopes = list(self.inactive_scopes)
        return new


def _check_cost(trial_id: str, node_hours: Any) -> float:
    try:
        value = float(node_hours)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"node_hours of trial {trial_id} must be finite and >= 0, "
                         f"got {node_hours!r}")
    return value


class _ReplayCap(int):
    """A trial cap that never stops a replayed call but pads trial ids as the live cap did."""

    def __new__(cls, width: int):
        cap = super().__new__(cls, sys.maxsize)
        cap.width = width
        return cap

    def __str__(self) -> str:
        return "9" * self.width


def _same_hyperparameters(a, b) -> bool:
    return a.values == b.values and [hp.name for hp in a.space] == [hp.name for hp in b.space]


class ASHABOOracle(ASHAOracle):
    """ASHA+BO: ASHA scheduling with GP-based proposals of new configurations.

    Takes the ASHA arguments plus those of :class:`tuners.samplers.BayesianSampler`
    (``num_initial_points``, ``alpha``, ``beta``, ``max_fit_points``, ``gp_restarts``,
    ``num_candidates``, ``num_local``).
    """

    def __init__(self, objective=None, hyperparameters=None, *, num_initial_points: int = 10,
                 alpha: float = 1e-4, beta: float = 2.6, max_fit_points: int = 256,
                 gp_restarts: int = 5, num_candidates: int = 256, num_local: int = 1,
                 **kwargs):
        if "sampler" in kwargs or "sampler_options" in kwargs:
            raise ValueError("ASHABOOracle always uses the bayesian sampler; "
                             "pass its options as keyword arguments")
        options = {"num_initial_points": num_initial_points, "alpha": alpha, "beta": beta,
                   "max_fit_points": max_fit_points, "gp_restarts": gp_restarts,
                   "num_candidates": num_candidates, "num_local": num_local}
        super().__init__(objective, hyperparameters, sampler="bayesian",
                         sampler_options=options, **kwargs)
        assert isinstance(self.sampler, BayesianSampler)
