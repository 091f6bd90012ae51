"""Checks of a run's surroundings before any compute: output directory, data, cores.

The config tree validates values; these check what the values point at, with a one-line
:class:`~mlpf_tf.configbase.ConfigError` naming the flag, so that ``benchmark.run`` stops with
exit code 2 in well under a second instead of starting worker groups that die later:

- the output directory can hold a run directory (its nearest existing ancestor is a directory
  we can create entries in); nothing is left behind by the check;
- a ``delphes_pf`` dataset is either built in ``--data.data_dir`` or its ``*.pkl.bz2`` files
  are in the manual directory (``synthetic_pf`` is generated, so it needs neither);
- a run on this machine (standalone, or one process) does not ask for more
  ``workers x ranks_per_worker x threads_per_rank`` than the cores this process may use,
  unless ``--launch.oversubscribe`` (timings of an oversubscribed run mean little).

Imports nothing heavy (no TensorFlow).
"""

from __future__ import annotations

import glob
import os
import tempfile

from mlpf_tf.configbase import ConfigError

DELPHES_SUFFIX = ".pkl.bz2"


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def check_output_dir(output_dir: str, flag: str = "--launch.output_dir") -> None:
    """ConfigError unless a run directory can be created under ``output_dir``."""
    path = os.path.abspath(os.path.expanduser(output_dir))
    existing = path
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise ConfigError(f"{flag}={output_dir}: {existing} is not a directory")
    try:
        probe = tempfile.mkdtemp(prefix=".mlpf-probe-", dir=existing)
        os.rmdir(probe)
        if existing != path:  # the missing part must be creatable too (e.g. not under /proc)
            probe = tempfile.mkdtemp(prefix=".mlpf-probe-", dir=existing)
            try:
                os.makedirs(os.path.join(probe, os.path.relpath(path, existing)))
            finally:
                _remove_tree(probe)
    except OSError as exc:
        raise ConfigError(f"{flag}={output_dir}: cannot create a run directory there "
                          f"({exc.strerror or exc})") from None


def _remove_tree(path: str) -> None:
    for root, dirs, _ in os.walk(path, topdown=False):
        for name in dirs:
            os.rmdir(os.path.join(root, name))
    os.rmdir(path)


def check_data(data) -> None:
    """ConfigError if a Delphes dataset is neither built nor has its raw files at hand."""
    if data.dataset != "delphes_pf":
        return
    data_dir = data.resolved_data_dir()
    built = glob.glob(os.path.join(data_dir, "delphes_pf", data.config, "*",
                                   "dataset_info.json"))
    if built:
        return
    manual = data.resolved_manual_dir()
    where = "--data.manual_dir" if data.manual_dir else "--data.data_dir"
    given = data.manual_dir if data.manual_dir else data.data_dir
    if not os.path.isdir(data_dir) and not data.manual_dir:
        raise ConfigError(f"--data.data_dir={data.data_dir}: no such directory (no built "
                          f"delphes_pf dataset and no Delphes *{DELPHES_SUFFIX} files)")
    if not os.path.isdir(manual):
        raise ConfigError(f"{where}={given}: no built delphes_pf dataset, and {manual} (where "
                          f"the Delphes *{DELPHES_SUFFIX} files go) does not exist")
    if not any(n.endswith(DELPHES_SUFFIX) for n in os.listdir(manual)):
        raise ConfigError(f"{where}={given}: no built delphes_pf dataset, and {manual} holds no "
                          f"*{DELPHES_SUFFIX} files")


def check_cores(launch, cores: int | None = None) -> None:
    """ConfigError if a run on this machine wants more threads than it has cores."""
    if getattr(launch, "oversubscribe", False):
        return
    cores = usable_cores() if cores is None else int(cores)
    ranks = launch.workers * launch.ranks_per_worker
    threads = launch.threads_per_rank or cores  # 0: TensorFlow's default, every core
    wanted = ranks * threads
    if wanted > cores:
        raise ConfigError(
            f"--launch.workers={launch.workers} x --launch.ranks_per_worker="
            f"{launch.ranks_per_worker} x --launch.threads_per_rank={launch.threads_per_rank} "
            f"needs {wanted} cores; this machine has {cores}: lower them or pass "
            "--launch.oversubscribe")


def check_run(cfg, role: str) -> None:
    """All checks that apply to ``role`` (single | standalone | chief | worker)."""
    if role != "worker":
        check_output_dir(cfg.launch.output_dir)
    if role in ("single", "standalone"):
        check_data(cfg.data)
        check_cores(cfg.launch)
    if role == "standalone" and cfg.launch.ranks_per_worker > 1:
        from benchmark.launcher import find_horovodrun

        find_horovodrun()  # RoleError naming where it looked
