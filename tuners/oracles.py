"""Build the oracle a ``search`` config section asks for: random | hyperband | asha | asha_bo.

Every oracle scores a trial by the objective at its last epoch (:mod:`tuners.scoring`): the
epoch whose weights the trial's checkpoint holds, so rankings, promotions and the best model
all refer to models that exist.

- random: keras-tuner's ``RandomSearchOracle`` with last-epoch scores; the Tuner trains
  ``--search.max_epochs`` epochs from scratch.
- hyperband: :class:`tuners.hyperband.LadderHyperbandOracle`, keras-tuner's Hyperband on ASHA's
  rung ladder (smallest rung ``--search.min_epochs``); ``tuner/epochs``, ``tuner/initial_epoch``,
  ``tuner/bracket``, ``tuner/round`` and, when continuing, ``tuner/trial_id``. It returns IDLE
  while a bracket waits. ``--search.hyperband_iterations=0`` repeats brackets until a budget
  ends the search.
- asha / asha_bo: ``tuner/epochs``, ``tuner/initial_epoch``, ``tuner/rung``, ``tuner/bracket``
  and, for a promotion, ``tuner/trial_id`` (see :mod:`tuners.asha`).

Budgets: ``max_trials`` (0 = none) is passed to every oracle (keras-tuner stops at that many
trials); the node-hour budget is charged on allocated node-hours by whoever issues trials (the
Horovod tuner of a one-group search, the chief of a distributed one: :mod:`tuners.budget`); the
epoch budget is the ASHA oracles' own. :func:`stop_reason` says which limit ended a search.
"""

from __future__ import annotations

from typing import Any

import keras_tuner

from tuners.asha import ASHABOOracle, ASHAOracle
from tuners.config import TUNERS, SearchConfig
from tuners.hyperband import LadderHyperbandOracle
from tuners.scoring import LastEpochScore


class LastEpochRandomOracle(LastEpochScore, keras_tuner.oracles.RandomSearchOracle):
    """keras-tuner's random search, scoring each trial by its last epoch."""


def search_objective(search_cfg: SearchConfig) -> keras_tuner.Objective:
    """The objective named by ``--search.objective`` / ``--search.direction``."""
    return keras_tuner.Objective(search_cfg.objective, search_cfg.direction)


def make_oracle(search_cfg: SearchConfig, hyperparameters: keras_tuner.HyperParameters,
                objective: Any = None, **oracle_kwargs: Any) -> keras_tuner.Oracle:
    """A fresh oracle for ``search_cfg`` over ``hyperparameters``.

    Args:
        search_cfg: a ``SearchConfig``; validated here (ConfigError naming the flag).
        hyperparameters: the search space.
        objective: overrides the objective built from the config.
        oracle_kwargs: extra keyword arguments for the oracle's constructor (for example
            ``tune_new_entries``); for asha_bo also the sampler's (``num_candidates``, ...).
    """
    search_cfg.validate()
    objective = objective if objective is not None else search_objective(search_cfg)
    common = {
        "objective": objective,
        "hyperparameters": hyperparameters,
        "seed": search_cfg.seed,
        "max_retries_per_trial": search_cfg.max_retries_per_trial,
        "max_consecutive_failed_trials": search_cfg.max_consecutive_failed_trials,
    }
    common.update(oracle_kwargs)
    max_trials = search_cfg.max_trials or None
    tuner = search_cfg.tuner
    if tuner == "random":
        return LastEpochRandomOracle(max_trials=max_trials, **common)
    if tuner == "hyperband":
        oracle = LadderHyperbandOracle(
            max_epochs=search_cfg.max_epochs, min_epochs=search_cfg.min_epochs,
            factor=search_cfg.reduction_factor,
            hyperband_iterations=search_cfg.hyperband_iterations or None, **common)
        oracle.max_trials = max_trials  # the base Oracle's trial cap, honoured in create_trial
        return oracle
    asha_args = {
        "min_epochs": search_cfg.min_epochs,
        "max_epochs": search_cfg.max_epochs,
        "reduction_factor": search_cfg.reduction_factor,
        "brackets": search_cfg.brackets,
        "max_trials": max_trials,
        "epoch_budget": search_cfg.epoch_budget or None,
    }
    if tuner == "asha":
        return ASHAOracle(**common, **asha_args)
    if tuner == "asha_bo":
        return ASHABOOracle(num_initial_points=search_cfg.num_initial_points,
                            max_fit_points=search_cfg.bo_max_fit_points,
                            gp_restarts=search_cfg.bo_gp_restarts, **common, **asha_args)
    raise ValueError(f"unknown tuner {tuner!r}; expected one of: {', '.join(TUNERS)}")


#: why a search stopped, as recorded in ``best.json`` and the log's ``run_stop``
STOP_REASONS = ("node_hour_budget", "max_trials", "epoch_budget", "hyperband_iterations",
                "space_exhausted", "aborted")


def stop_reason(oracle: keras_tuner.Oracle, budget_spent: bool = False) -> str:
    """Which limit ended a search whose oracle answered STOPPED (or whose budget was spent).

    ``budget_spent``: the issuer's node-hour budget (:mod:`tuners.budget`) was used up.
    """
    if budget_spent:
        return "node_hour_budget"
    if oracle.max_trials and len(oracle.trials) >= oracle.max_trials:
        return "max_trials"
    epoch_budget = getattr(oracle, "epoch_budget", None)
    if epoch_budget and getattr(oracle, "epochs_allotted", 0) >= epoch_budget:
        return "epoch_budget"
    if isinstance(oracle, keras_tuner.oracles.HyperbandOracle) and \
            oracle.hyperband_iterations != float("inf"):
        return "hyperband_iterations"
    return "space_exhausted"
