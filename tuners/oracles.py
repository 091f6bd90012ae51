"""Build the oracle a ``search`` config section asks for: random | hyperband | asha | asha_bo.

Random search and Hyperband are keras-tuner's stock ``RandomSearchOracle`` and
``HyperbandOracle``, used as they are; ASHA and ASHA+BO are :mod:`tuners.asha`.

What each oracle puts in a trial's values beyond the hyperparameters:

- random: nothing; the Tuner trains ``--search.max_epochs`` epochs from scratch.
- hyperband: ``tuner/epochs``, ``tuner/initial_epoch``, ``tuner/bracket``, ``tuner/round`` and,
  when continuing, ``tuner/trial_id`` (keras-tuner's own; its rung 0 starts at 1 epoch, so
  ``--search.min_epochs`` does not apply; it also returns IDLE while a bracket waits).
- asha / asha_bo: ``tuner/epochs``, ``tuner/initial_epoch``, ``tuner/rung``, ``tuner/bracket``
  and, for a promotion, ``tuner/trial_id`` (see :mod:`tuners.asha`).

Budgets: ``max_trials`` is passed to every oracle (keras-tuner stops at that many trials);
the epoch and node-hour budgets are enforced by the ASHA oracles themselves and, for all
tuners, by the Tuner that runs the search.
"""

from __future__ import annotations

from typing import Any

import keras_tuner

from tuners.asha import ASHABOOracle, ASHAOracle
from tuners.config import TUNERS, SearchConfig


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
        return keras_tuner.oracles.RandomSearchOracle(max_trials=max_trials, **common)
    if tuner == "hyperband":
        oracle = keras_tuner.oracles.HyperbandOracle(
            max_epochs=search_cfg.max_epochs, factor=search_cfg.reduction_factor,
            hyperband_iterations=search_cfg.hyperband_iterations, **common)
        oracle.max_trials = max_trials  # the base Oracle's trial cap, honoured in create_trial
        return oracle
    asha_args = {
        "min_epochs": search_cfg.min_epochs,
        "max_epochs": search_cfg.max_epochs,
        "reduction_factor": search_cfg.reduction_factor,
        "brackets": search_cfg.brackets,
        "max_trials": max_trials,
        "epoch_budget": search_cfg.epoch_budget or None,
        "node_hour_budget": search_cfg.node_hour_budget or None,
    }
    if tuner == "asha":
        return ASHAOracle(**common, **asha_args)
    if tuner == "asha_bo":
        return ASHABOOracle(num_initial_points=search_cfg.num_initial_points,
                            max_fit_points=search_cfg.bo_max_fit_points,
                            gp_restarts=search_cfg.bo_gp_restarts, **common, **asha_args)
    raise ValueError(f"unknown tuner {tuner!r}; expected one of: {', '.join(TUNERS)}")
