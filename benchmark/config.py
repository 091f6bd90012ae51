"""The one configuration tree of a run: data, model, train, search and launch sections.

Values are filled in this order: section defaults -> the experiment preset (registry) ->
an absl flagfile -> command-line flags (``--<section>.<field>=value``). The tree is validated
as a whole (each section, then cross-section rules) before any compute starts and written as
``params.yaml`` into the run directory, from which :func:`load_params` restores it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import yaml

from mlpf_tf.configbase import (
    ConfigError,
    Section,
    atomic_write_text,
    define_flags,
    dump_yaml,
    param,
    section_from_flags,
)
from mlpf_tf.data.config import DataConfig
from mlpf_tf.model.config import ModelConfig
from mlpf_tf.train_config import TrainConfig
from tuners.config import SearchConfig

PARAMS_FILE = "params.yaml"


@dataclasses.dataclass
class LaunchConfig(Section):
    """How trials are spread over workers, ranks and nodes, and where results go."""

    SECTION = "launch"

    workers: int = param(1, "worker groups, each running one trial at a time", low=1)
    ranks_per_worker: int = param(1, "Horovod ranks per worker group (data-parallel)", low=1)
    ranks_per_node: int = param(
        1, "ranks that fit on one node (e.g. GPUs per node); sets the node-hour accounting",
        low=1)
    accelerators_per_node: int = param(0, "accelerators (GPUs) per node, for the logs", low=0)
    threads_per_rank: int = param(1, "TensorFlow intra-op threads per rank (0 = TF default)",
                                  low=0)
    output_dir: str = param("runs", "parent directory of run directories")
    run_name: str = param("", "run directory name (default: <experiment>-<tuner>-w<workers>-s<seed>)")
    chief_node: bool = param(False, "the chief holds a node of its own (charged in allocated "
                             "node-hours); false when it shares a worker's node")
    system: str = param("local", "system profile name (launch/slurm/<system>.env on clusters)")
    oversubscribe: bool = param(False, "allow a run on this machine to use more ranks x "
                                "threads than it has cores")

    def check(self) -> None:
        if self.ranks_per_worker > self.ranks_per_node and (
                self.ranks_per_worker % self.ranks_per_node):
            self.fail("ranks_per_worker",
                      f"does not fit the nodes: {self.ranks_per_worker} ranks per worker with "
                      f"--launch.ranks_per_node={self.ranks_per_node} would split a node "
                      "between workers; use a multiple of ranks_per_node")
        if self.ranks_per_worker < self.ranks_per_node and (
                self.ranks_per_node % self.ranks_per_worker):
            self.fail("ranks_per_worker",
                      f"does not fit the nodes: --launch.ranks_per_node={self.ranks_per_node} "
                      "is not a multiple of it")
        if not self.output_dir:
            self.fail("output_dir", "must not be empty")

    @property
    def nodes_per_worker(self) -> float:
        """Nodes held by one worker group (a fraction when several workers share a node)."""
        return self.ranks_per_worker / self.ranks_per_node

    @property
    def nodes(self) -> int:
        """Nodes held by the whole search (whole nodes): the workers' and the chief's own."""
        return math.ceil(self.workers * self.nodes_per_worker) + int(self.chief_node)


SECTIONS: tuple[type[Section], ...] = (DataConfig, ModelConfig, TrainConfig, SearchConfig,
                                       LaunchConfig)


@dataclasses.dataclass
class Config:
    """The whole tree; ``experiment`` names the registry preset it started from."""

    experiment: str = "smoke"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    launch: LaunchConfig = dataclasses.field(default_factory=LaunchConfig)

    def sections(self) -> dict[str, Section]:
        return {cls.SECTION: getattr(self, cls.SECTION) for cls in SECTIONS}

    def validate(self) -> Config:
        for section in self.sections().values():
            section.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"experiment": self.experiment}
        out.update({name: s.to_dict() for name, s in self.sections().items()})
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "") -> Config:
        values = dict(values or {})
        known = {"experiment"} | {c.SECTION for c in SECTIONS}
        extra = sorted(set(values) - known - {"search_id", "simulated", "created"})
        if extra:
            raise ConfigError(f"unknown section(s) {', '.join(extra)}"
                              + (f" in {where}" if where else "")
                              + f"; known: {', '.join(sorted(known))}")
        kwargs: dict[str, Any] = {"experiment": values.get("experiment", "smoke")}
        for sec in SECTIONS:
            kwargs[sec.SECTION] = sec.from_dict(values.get(sec.SECTION), where)
        return cls(**kwargs)

    def override(self, overrides: dict[str, dict[str, Any]]) -> Config:
        """A copy with ``{section: {field: value}}`` applied (unknown names are errors)."""
        tree = self.to_dict()
        for section, fields in overrides.items():
            if section not in tree or section == "experiment":
                raise ConfigError(f"unknown config section {section!r}")
            tree[section].update(fields)
        return Config.from_dict(tree)


def define_all_flags(flag_values=None) -> None:
    """One absl flag per field of every section (``--model.bin_size`` ...)."""
    for sec in SECTIONS:
        define_flags(sec, flag_values)


def config_from_flags(base: Config, flag_values=None) -> Config:
    """Overlay the flags given (flagfile and command line) on ``base`` and validate."""
    kwargs = {"experiment": base.experiment}
    for sec in SECTIONS:
        kwargs[sec.SECTION] = section_from_flags(sec, getattr(base, sec.SECTION), flag_values)
    return Config(**kwargs).validate()


def write_params(config: Config, run_dir: str, **extra: Any) -> str:
    """Write ``params.yaml`` atomically; ``extra`` adds top-level keys (search_id, ...)."""
    data = config.to_dict()
    data.update(extra)
    path = os.path.join(run_dir, PARAMS_FILE)
    atomic_write_text(path, dump_yaml(data))
    return path


def load_params(path: str) -> tuple[Config, dict[str, Any]]:
    """Read a ``params.yaml`` (or the run directory holding it): (validated Config, extras)."""
    if os.path.isdir(path):
        path = os.path.join(path, PARAMS_FILE)
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such params file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections")
    extras = {k: data.pop(k) for k in ("search_id", "simulated", "created") if k in data}
    return Config.from_dict(data, where=path).validate(), extras
