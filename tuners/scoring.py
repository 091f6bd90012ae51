"""One result per trial: the objective at the trial's last epoch.

A trial's checkpoint holds the weights of its last epoch, a promotion continues that
checkpoint, and the best model of a search is a checkpoint that exists. So every ranking in the
suite -- ASHA and ASHA+BO rung results, Hyperband's promotions, Random Search's best trial,
``best.json``, the best-model physics and the report -- uses the objective of the last epoch a
trial reported, never the best epoch of its history. keras-tuner's own ``score_trial`` takes the
best value over all reported steps: a configuration that dips at one epoch and ends worse would
be ranked by a model nobody kept. :class:`LastEpochScore` replaces it for every oracle.
"""

from __future__ import annotations

from typing import Any


def last_epoch_result(trial: Any, objective_name: str) -> tuple[float | None, int | None]:
    """(objective at the highest reported step, that step) of a keras-tuner trial.

    (None, None) when the trial reported no value for the objective.
    """
    if not trial.metrics.exists(objective_name):
        return None, None
    history = trial.metrics.get_history(objective_name)  # sorted by step
    if not history:
        return None, None
    last = history[-1]
    value = float(last.mean())
    return value, int(last.step)


class LastEpochScore:
    """Oracle mixin: a trial's score is its objective at its last reported epoch.

    Put it first in the bases (``class X(LastEpochScore, keras_tuner.Oracle)``) so that its
    ``score_trial`` wins over keras-tuner's best-over-epochs rule.
    """

    def score_trial(self, trial) -> None:
        value, step = last_epoch_result(trial, self.objective.name)
        trial.score = value
        trial.best_step = step
