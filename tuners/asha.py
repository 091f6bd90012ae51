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

Each promotion is a separate keras-tuner trial; its score (keras-tuner's ``score_trial``: the
best objective value it reported) becomes the configuration's result at the new rung.
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

State lives where keras-tuner keeps it: ``<directory>/<project_name>/oracle.json`` (this oracle
writes it atomically; it holds keras-tuner's state, including the random draw counter
``seed_state``, plus ``"asha"``: ladder results and promotion flags, epochs allotted, node-hours
per trial, the sampler's proposal counter and tuned GP kernel) and ``trial_<id>/trial.json`` per
trial (values, metrics, score, status). ``oracle.reload()`` in the same directory resumes with
identical later decisions; as in keras-tuner, trials that were running at the restart are
re-issued first (retry queue). Unlike keras-tuner's own state, a trial that has just ended is
not saved as ongoing (keras-tuner saves before dropping it, so a reload would re-run it).

Latency: a decision is O(rungs * brackets * log n) (heaps and sorted lists, see
:mod:`tuners.rungs`). The keras-tuner base also scans all trials for consecutive failures on
every ``end_trial``; this oracle keeps a running count instead. The base still writes
``trial.json`` and the whole ``oracle.json`` on each ``create_trial`` / ``end_trial``, which
grows with the number of trials (measured by ``benchmark.oracle_latency``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any

import keras_tuner
from keras_tuner.src.engine import trial as trial_module

from tuners.rungs import AshaLadder
from tuners.samplers import BayesianSampler, SamplingContext, make_sampler

RESERVED_PREFIX = "tuner/"
NODE_HOURS = "node_hours"

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


class ASHAOracle(keras_tuner.Oracle):
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
        Other arguments are keras-tuner's ``Oracle`` arguments.
    """

    def __init__(self, objective=None, hyperparameters=None, *, min_epochs: int = 1,
                 max_epochs: int = 100, reduction_factor: int = 3, brackets: int = 1,
                 max_trials: int | None = None, epoch_budget: int | None = None,
                 node_hour_budget: float | None = None, sampler: Any = "random",
                 sampler_options: dict | None = None, seed: int | None = None,
                 allow_new_entries: bool = True, tune_new_entries: bool = True,
                 max_retries_per_trial: int = 0, max_consecutive_failed_trials: int = 3):
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

    # -- the decision ----------------------------------------------------------------------
    def populate_space(self, trial_id):
        """Promote the best eligible configuration, else start a new one; STOPPED when spent."""
        if self.budget_exhausted():
            return {"status": trial_module.TrialStatus.STOPPED}
        promotion = self.ladder.next_promotion()
        if promotion is not None:
            self.ladder.promote(promotion)
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

    # -- results and costs -----------------------------------------------------------------
    @keras_tuner.synchronized
    def update_trial(self, trial_id, metrics, step=0):
        trial = super().update_trial(trial_id, metrics, step)
        if NODE_HOURS in metrics:
            self._set_cost(trial_id, metrics[NODE_HOURS])
        return trial

    @keras_tuner.synchronized
    def record_cost(self, trial_id: str, node_hours: float) -> None:
        """Set the cumulative node-hours spent by ``trial_id`` so far (the latest value counts)."""
        if trial_id not in self.trials:
            raise KeyError(f"unknown trial id {trial_id!r}")
        self._set_cost(trial_id, node_hours)
        self.save()

    def _set_cost(self, trial_id: str, node_hours: Any) -> None:
        value = float(node_hours)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"node_hours of trial {trial_id} must be finite and >= 0, "
                             f"got {node_hours!r}")
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
        if self._consecutive_failures == self.max_consecutive_failed_trials:
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

    def save(self):
        """Write ``oracle.json`` atomically: a temporary file renamed over it.

        A crashed chief leaves either the old or the new state, never half a file. There is no
        fsync (it would cost milliseconds per decision): a power loss may lose the last few
        decisions, as with keras-tuner's own non-atomic write.
        """
        path = self._get_oracle_fname()
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-oracle-")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(self.get_state()))  # C encoder: ~20x json.dump
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def rung_sizes(self) -> list[int]:
        """Results recorded per rung (summed over brackets)."""
        return [self.ladder.rung_size(k) for k in range(self.ladder.top_rung + 1)]


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
