"""The ``search`` config section: which search algorithm, its schedule, budgets and seed.

Flags are ``--search.<field>``; :func:`tuners.oracles.make_oracle` turns a validated section
into a keras-tuner oracle. Budgets of 0 mean "none"; an ASHA search needs at least one of
``max_trials``, ``epoch_budget``, ``node_hour_budget``.
"""

from __future__ import annotations

import dataclasses

from mlpf_tf.configbase import Section, param
from tuners.rungs import rung_budgets

TUNERS = ("random", "hyperband", "asha", "asha_bo")
SPACES = ("reference", "reduced")


@dataclasses.dataclass
class SearchConfig(Section):
    """Search algorithm (Random, Hyperband, ASHA, ASHA+BO) and its settings."""

    SECTION = "search"

    tuner: str = param("asha", "search algorithm", choices=TUNERS)
    objective: str = param("val_loss", "metric the search optimises")
    direction: str = param("min", "whether the objective is minimised or maximised",
                           choices=("min", "max"))
    max_trials: int = param(
        100, "trials at most (ASHA: new configurations + promotions; 0 = no limit)", low=0)
    max_epochs: int = param(100, "epochs of a fully trained trial (top rung / Hyperband max)",
                            low=1)
    min_epochs: int = param(5, "epochs of the bottom rung (ASHA grace period)", low=1)
    reduction_factor: int = param(3, "eta: the top 1/eta of a rung go on (ASHA, Hyperband)",
                                  low=2)
    brackets: int = param(1, "ASHA brackets; bracket s starts at rung s", low=1)
    num_initial_points: int = param(10, "ASHA+BO: random configurations before the model",
                                    low=1)
    bo_max_fit_points: int = param(256, "ASHA+BO: results the GP is fitted on at most", low=2)
    bo_gp_restarts: int = param(5, "ASHA+BO: restarts of the GP kernel optimiser", low=0)
    node_hour_budget: float = param(0.0, "node-hours the search may spend (0 = no budget)",
                                    low=0.0)
    epoch_budget: int = param(0, "ASHA: epochs the search may allot (0 = no budget)", low=0)
    hyperband_iterations: int = param(1, "Hyperband: iterations over all brackets (0 = until a "
                                      "budget ends the search)", low=0)
    seed: int = param(1, "seed of the oracle's random draws", low=1)
    space: str = param("reference", "search space", choices=SPACES)
    executions_per_trial: int = param(1, "models trained per trial (results averaged)", low=1)
    max_retries_per_trial: int = param(0, "re-runs of a trial that crashed", low=0)
    max_consecutive_failed_trials: int = param(3, "consecutive failed trials that end the search",
                                               low=1)

    def check(self) -> None:
        if not self.objective.strip():
            self.fail("objective", "must name a metric, e.g. val_loss")
        if self.min_epochs > self.max_epochs:
            self.fail("min_epochs", f"must be <= --search.max_epochs ({self.max_epochs})")
        if self.tuner in ("asha", "asha_bo"):
            rungs = len(rung_budgets(self.min_epochs, self.max_epochs, self.reduction_factor))
            if self.brackets > rungs:
                self.fail("brackets", f"must be <= the number of rungs ({rungs}) for "
                          f"--search.min_epochs={self.min_epochs}, "
                          f"--search.max_epochs={self.max_epochs}, "
                          f"--search.reduction_factor={self.reduction_factor}")
        if self.tuner == "hyperband" and self.hyperband_iterations:
            return  # Hyperband's iterations end the search
        budgets = ("max_trials", "node_hour_budget") + (
            ("epoch_budget",) if self.tuner in ("asha", "asha_bo") else ())
        if not any(getattr(self, name) for name in budgets):
            extra = (" or --search.hyperband_iterations" if self.tuner == "hyperband" else "")
            self.fail("max_trials", f"--search.tuner={self.tuner} needs a limit: set "
                      + ", ".join(f"--search.{n}" for n in budgets) + extra + " above 0")
