"""Experiment registry: named presets of the config tree for ``python -m benchmark.run``.

A preset is a dict ``{section: {field: value}}`` applied over the section defaults, before any
flagfile or command-line flag (which still win). Registered experiments:

* ``smoke`` (default) -- ASHA on the reduced space, synthetic particle-gun events (a few hundred),
  a small graph network, rungs of 1, 2 and 4 epochs: a whole search takes minutes on two cores.
* ``delphes_paper`` -- the reference study: the real Delphes ttbar files from a manual
  directory, the reference model (``--model.variant=reference``: the study's architecture,
  objective and staircase exponential decay; learning rate not scaled with the 4 ranks, as in
  the reference) and search space, the paper's scheduler settings for Delphes
  (ASHA max 100 epochs, grace period 5, reduction factor 3, one bracket; 10 random warm-up
  points for ASHA+BO) on 12 nodes x 4 GPUs, one trial per node, within 12 nodes x 6 h.
* ``scaling`` -- the smoke search repeated at several worker counts (``sweep``); each point is
  one run with ``--workers`` set to one of the counts.
* ``compare`` -- the tuner comparison of ``make run`` (:mod:`benchmark.compare`): the smoke
  data and a width-8 network, one thread per rank, and the same budget of allocated
  node-hours for every search as its only limit (no trial cap; Hyperband iterates until the
  budget ends it; its ladder starts at ``min_epochs`` like ASHA's); sized so four tuners x
  three seeds at one scale, two searches at a time, take about a quarter of an hour on an idle
  two-core machine.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from mlpf_tf.model.config import DELPHES_REFERENCE

Overrides = dict[str, dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class SchedulerSettings:
    """The scheduler settings of one reference study (``reference.md`` section 1): the longest
    training, ASHA's grace period (bottom rung), the reduction factor eta, brackets and the
    random warm-up points of ASHA+BO. One definition per study, used by the registered
    experiments and by the simulator's presets (:mod:`benchmark.sim.replay`)."""

    name: str
    description: str
    max_epochs: int
    min_epochs: int
    reduction_factor: int
    brackets: int = 1
    num_initial_points: int = 10

    def search(self) -> dict[str, int]:
        """The fields of the ``search`` section these settings fix."""
        return {"max_epochs": self.max_epochs, "min_epochs": self.min_epochs,
                "reduction_factor": self.reduction_factor, "brackets": self.brackets,
                "num_initial_points": self.num_initial_points}


#: the reference's Delphes study: ASHA/Hyperband max 100 epochs, grace 5, eta 3
DELPHES_SETTINGS = SchedulerSettings(
    "delphes", "the reference's Delphes settings: max 100 epochs, grace 5, eta 3", 100, 5, 3)
#: the reference's CMS study: ASHA/Hyperband max 100 epochs, grace 10, eta 4
CMS_SETTINGS = SchedulerSettings(
    "cms", "the reference's CMS settings: max 100 epochs, grace 10, eta 4", 100, 10, 4)
SCHEDULER_SETTINGS = {s.name: s for s in (DELPHES_SETTINGS, CMS_SETTINGS)}


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A named preset; ``sweep`` lists values of one flag that a study runs one run each for."""

    name: str
    description: str
    overrides: Overrides
    sweep: dict[str, tuple] = dataclasses.field(default_factory=dict)


_SMOKE: Overrides = {
    # fixed padding: one traced graph per trial (bucketed shapes would retrace per shape)
    "data": {"dataset": "synthetic_pf", "config": "gun", "n_train": 192, "n_validation": 48,
             "n_test": 48, "max_elements": 128, "padding": "fixed", "truncate": True,
             "shuffle_buffer": 192, "cache": True},
    "model": {"hidden_dim": 16, "distance_dim": 16, "ffn_dist_hidden_dim": 16,
              "output_dim": 16, "head_hidden_dim": 16, "head_num_layers": 1,
              "num_graph_layers_common": 1, "num_graph_layers_energy": 1},
    "train": {"epochs": 4, "batch_size": 8, "lr": 1e-3, "lr_schedule": "cosine",
              "decay_steps": 200, "checkpoint_every_epochs": 0, "keep_checkpoints": 1},
    "search": {"tuner": "asha", "space": "reduced", "max_epochs": 4, "min_epochs": 1,
               "reduction_factor": 2, "brackets": 1, "max_trials": 12, "num_initial_points": 4,
               "seed": 1},
    "launch": {"workers": 1, "ranks_per_worker": 1, "ranks_per_node": 1,
               "threads_per_rank": 2},
}

_DELPHES_PAPER: Overrides = {
    "data": {"dataset": "delphes_pf", "config": "default", "target": "ygen",
             "max_elements": 6400, "padding": "fixed"},
    "model": dict(DELPHES_REFERENCE),
    "train": {"epochs": 100, "batch_size": 5, "optimizer": "adam", "lr": 1e-4,
              "lr_schedule": "exponential", "decay_steps": 10000, "decay_rate": 0.99,
              "staircase": "on", "lr_scaling": "none", "checkpoint_every_epochs": 1},
    "search": {"tuner": "asha", "space": "reference", "objective": "val_loss",
               "direction": "min", **DELPHES_SETTINGS.search(), "max_trials": 1000,
               "node_hour_budget": 72.0, "seed": 1},
    "launch": {"workers": 12, "ranks_per_worker": 4, "ranks_per_node": 4,
               "accelerators_per_node": 4, "threads_per_rank": 0},
}

#: node-hours every search of the ``compare`` experiment may spend (0.025 = 90 node-seconds)
COMPARE_NODE_HOURS = 0.025

_COMPARE: Overrides = {
    "data": dict(_SMOKE["data"]),
    "model": {"hidden_dim": 8, "distance_dim": 8, "ffn_dist_hidden_dim": 8,
              "ffn_dist_num_layers": 0, "output_dim": 8, "head_hidden_dim": 8,
              "head_num_layers": 1, "num_graph_layers_common": 1,
              "num_graph_layers_energy": 1},
    "train": dict(_SMOKE["train"]),
    # the node-hour budget is the only limit of a comparison: no trial cap, and Hyperband
    # repeats its brackets until the budget ends the search
    "search": {**_SMOKE["search"], "max_trials": 0, "hyperband_iterations": 0,
               "node_hour_budget": COMPARE_NODE_HOURS},
    "launch": {"workers": 1, "ranks_per_worker": 1, "ranks_per_node": 1,
               "threads_per_rank": 1},
}

#: the reference model's widths divided by this for the curve table (128 -> 16, 256 -> 32)
CURVES_WIDTH_DIVISOR = 8

_CURVES: Overrides = {
    # Pythia ttbar events (no pile-up) through the Delphes CMS card, padded to the reduced
    # space's LOCAL_PADDING (512; bin sizes 16/32 cut them into as many bins as a Delphes
    # event), a small fixed sample so that 256 configurations x 100 epochs fit a core-hour or two
    "data": {"dataset": "synthetic_pf", "config": "ttbar", "n_train": 16, "n_validation": 8,
             "n_test": 8, "max_elements": 512, "padding": "fixed", "truncate": True,
             "shuffle_buffer": 16, "cache": True},
    # the reference model (variant, activation, loss and its weights, 3 + 3 graph layers,
    # one FFN layer, max 100 bins) with every width divided by CURVES_WIDTH_DIVISOR; bin size
    # and the other searched values come from the reduced space
    "model": {**DELPHES_REFERENCE,
              **{k: DELPHES_REFERENCE[k] // CURVES_WIDTH_DIVISOR
                 for k in ("distance_dim", "output_dim", "head_hidden_dim",
                           "ffn_dist_hidden_dim")},
              "bin_size": 16},
    # the reference's Delphes training (Adam, exponential decay) for the preset's 100 epochs
    "train": {**_DELPHES_PAPER["train"], "checkpoint_every_epochs": 0, "keep_checkpoints": 1},
    "search": {"tuner": "asha", "space": "reduced", "objective": "val_loss", "direction": "min",
               **DELPHES_SETTINGS.search(), "max_trials": 0, "node_hour_budget": 72.0,
               "seed": 1},
    "launch": {"workers": 1, "ranks_per_worker": 1, "ranks_per_node": 1,
               "threads_per_rank": 1},
}

#: worker counts of the scaling study
SCALING_WORKERS = (1, 2, 4, 8)

EXPERIMENTS: dict[str, Experiment] = {
    "smoke": Experiment(
        "smoke", "ASHA on the reduced space with synthetic gun events and a tiny model; "
        "minutes on a laptop", _SMOKE),
    "delphes_paper": Experiment(
        "delphes_paper", "the reference Delphes study: real Delphes files (--data.manual_dir), "
        "reference space, ASHA max 100 / grace 5 / eta 3, 12 nodes x 4 GPUs", _DELPHES_PAPER),
    "scaling": Experiment(
        "scaling", "the smoke search at several worker counts (one run per count: "
        + ", ".join(map(str, SCALING_WORKERS)) + ")", _SMOKE,
        sweep={"launch.workers": SCALING_WORKERS}),
    "curves": Experiment(
        "curves", "what the shipped curve table is recorded on (benchmark.sim.record): "
        "ttbar events padded to 512, the reference model with widths / "
        f"{CURVES_WIDTH_DIVISOR}, the reference's Delphes training for 100 epochs", _CURVES),
    "compare": Experiment(
        "compare", "all four tuners with one allocated node-hour budget per search "
        f"({COMPARE_NODE_HOURS:g}) as the only limit; the comparison of make run", _COMPARE,
        sweep={"launch.workers": (1, 2)}),
}

DEFAULT_EXPERIMENT = "smoke"


def tiny_overrides(data_dir: str, *, tuner: str = "asha", max_trials: int = 5,
                   ranks: int = 1) -> Overrides:
    """The smallest real search (for tests): the smoke search on 64 gun events and a network
    of width 8, rungs of 1 and 2 epochs, one thread per rank when several ranks share a node."""
    return {
        "data": {"dataset": "synthetic_pf", "config": "gun", "data_dir": data_dir,
                 "n_train": 64, "n_validation": 16, "n_test": 16, "padding": "fixed",
                 "max_elements": 64, "truncate": True, "cache": True, "shuffle_buffer": 64},
        "model": {"hidden_dim": 8, "distance_dim": 8, "ffn_dist_hidden_dim": 8,
                  "ffn_dist_num_layers": 0, "output_dim": 8, "head_hidden_dim": 8,
                  "head_num_layers": 1, "num_graph_layers_common": 1,
                  "num_graph_layers_energy": 1, "bin_size": 16},
        "train": {"epochs": 2, "batch_size": 8, "checkpoint_every_epochs": 0,
                  "keep_checkpoints": 1},
        "search": {"tuner": tuner, "space": "reduced", "max_epochs": 2, "min_epochs": 1,
                   "reduction_factor": 2, "max_trials": max_trials, "num_initial_points": 2,
                   "seed": 1},
        "launch": {"workers": 1, "ranks_per_worker": ranks, "ranks_per_node": ranks,
                   "threads_per_rank": 1 if ranks > 1 else 2},
    }


class UnknownExperiment(KeyError):
    """No experiment of that name is registered."""

    def __str__(self) -> str:
        return str(self.args[0])


def get(name: str) -> Experiment:
    """The registered experiment ``name``; UnknownExperiment naming the known ones otherwise."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise UnknownExperiment(
            f"--experiment={name!r}: unknown experiment; known: "
            f"{', '.join(sorted(EXPERIMENTS))}") from None


def describe() -> str:
    """One line per experiment, for --help texts."""
    return "; ".join(f"{e.name}: {e.description}" for e in EXPERIMENTS.values())
