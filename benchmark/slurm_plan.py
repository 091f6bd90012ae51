"""Plan (and optionally start) a distributed search inside a SLURM allocation.

One chief (the oracle server) runs on the first node; one worker group runs on every node,
each a Horovod group of ``ranks_per_node`` ranks training one trial at a time. The node-hour
accounting fields of the config tree are set from the SLURM variables, so reports charge the
search for the nodes it really held.

``python -m benchmark.slurm_plan [--dry_run] [--signal_lead=S] [--resume_job=ID] --
<benchmark.run flags>`` prints the exact commands (``--dry_run``: only that, used by the tests
against a faked SLURM environment); otherwise it starts them, waits for the chief and stops the
workers when the chief exits.

Wall-time ends: the chief's job step gets ``srun --signal=USR1@S`` (``--signal_lead``, default
600 s; 0: none), so SLURM sends it SIGUSR1 S seconds before the time limit; a SIGUSR1 that
reaches this process (``#SBATCH --signal=B:USR1@S`` in ``launch/slurm/run_search.sbatch``)
is passed on to the chief. On it the chief hands out no new trial, the worker groups
checkpoint their running trials at the end of the current epoch and give them back, and the
chief saves and exits 0 (see :mod:`benchmark.launcher`). Choose S larger than the longest
epoch plus a checkpoint. The resubmitted job continues the search with ``--resume_job=<first
job id>`` (the run directory ``slurm-<id>`` and search id of that job, chief ``--resume``),
or by itself when SLURM requeued the job under its own id (``SLURM_RESTART_COUNT`` > 0).
Only the chief is signalled: a worker group learns it from the chief's replies (``horovodrun``
does not pass SIGUSR1 on to its ranks).

Environment read: SLURM_JOB_ID, SLURM_JOB_NODELIST (or SLURM_NODELIST), SLURM_NNODES (or
SLURM_JOB_NUM_NODES), and, from the system env file (launch/slurm/systems/*.env):
MLPF_RANKS_PER_NODE, MLPF_GPUS_PER_NODE, MLPF_LAUNCHER (horovodrun | srun), MLPF_PYTHON,
MLPF_CHIEF_PORT, MLPF_OUTPUT_DIR; SLURM_RESTART_COUNT (a requeued job resumes its search).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


class SlurmPlanError(ValueError):
    """The SLURM environment or the system env file is missing or inconsistent."""


_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand SLURM's compressed host list, e.g. ``jwb[0001-0003,0007],login1``."""
    hosts: list[str] = []
    for part in _split_top_level(nodelist):
        m = re.fullmatch(r"([^\[\]]*)\[([^\]]+)\]([^\[\]]*)", part)
        if not m:
            if not part or "[" in part or "]" in part:
                raise SlurmPlanError(f"SLURM_JOB_NODELIST: cannot parse {part!r}")
            hosts.append(part)
            continue
        prefix, ranges, suffix = m.groups()
        for rng in ranges.split(","):
            r = _RANGE.match(rng.strip())
            if not r:
                raise SlurmPlanError(f"SLURM_JOB_NODELIST: bad range {rng!r} in {part!r}")
            lo, hi = r.group(1), r.group(2) or r.group(1)
            width = len(lo)
            if int(hi) < int(lo):
                raise SlurmPlanError(f"SLURM_JOB_NODELIST: empty range {rng!r} in {part!r}")
            hosts.extend(f"{prefix}{i:0{width}d}{suffix}" for i in range(int(lo), int(hi) + 1))
    return hosts


def _split_top_level(text: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts if p.strip()]


@dataclass(frozen=True)
class SlurmJob:
    job_id: str
    hosts: tuple[str, ...]
    ranks_per_node: int
    gpus_per_node: int
    launcher: str
    python: str
    chief_port: int
    output_dir: str
    signal_lead: int = 600
    resume_job: str | None = None
    restarts: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SlurmJob:
        def need(*names: str) -> str:
            for name in names:
                if env.get(name):
                    return env[name]
            raise SlurmPlanError(f"{' or '.join(names)} is not set: run inside an sbatch "
                                 "allocation (or set it for a dry run)")

        def integer(name: str, default: str, low: int) -> int:
            text = env.get(name, default)
            try:
                value = int(text)
            except ValueError:
                raise SlurmPlanError(f"{name}={text!r}: expected an integer") from None
            if value < low:
                raise SlurmPlanError(f"{name}={value}: must be >= {low}")
            return value

        hosts = tuple(expand_nodelist(need("SLURM_JOB_NODELIST", "SLURM_NODELIST")))
        nnodes = integer("SLURM_NNODES" if "SLURM_NNODES" in env else "SLURM_JOB_NUM_NODES",
                         str(len(hosts)), 1)
        if nnodes != len(hosts):
            raise SlurmPlanError(f"SLURM_NNODES={nnodes} but the node list names {len(hosts)} "
                                 f"nodes: {','.join(hosts)}")
        launcher = env.get("MLPF_LAUNCHER", "horovodrun")
        if launcher not in ("horovodrun", "srun"):
            raise SlurmPlanError(f"MLPF_LAUNCHER={launcher!r}: must be horovodrun or srun")
        return cls(job_id=need("SLURM_JOB_ID"), hosts=hosts,
                   ranks_per_node=integer("MLPF_RANKS_PER_NODE", "1", 1),
                   gpus_per_node=integer("MLPF_GPUS_PER_NODE", "0", 0),
                   launcher=launcher, python=env.get("MLPF_PYTHON", "python"),
                   chief_port=integer("MLPF_CHIEF_PORT", "8470", 1),
                   output_dir=env.get("MLPF_OUTPUT_DIR", "runs"),
                   restarts=integer("SLURM_RESTART_COUNT", "0", 0))

    @property
    def search_job(self) -> str:
        """The job whose search this job runs: its own, or the one it resumes."""
        return self.resume_job or self.job_id

    @property
    def resumes(self) -> bool:
        return self.resume_job is not None or self.restarts > 0

    @property
    def chief_address(self) -> str:
        return f"{self.hosts[0]}:{self.chief_port}"

    def accounting_flags(self) -> list[str]:
        """Node-hour accounting from the allocation: one worker group per node."""
        return [f"--launch.workers={len(self.hosts)}",
                f"--launch.ranks_per_worker={self.ranks_per_node}",
                f"--launch.ranks_per_node={self.ranks_per_node}",
                f"--launch.accelerators_per_node={self.gpus_per_node}",
                f"--launch.output_dir={self.output_dir}",
                f"--launch.run_name=slurm-{self.search_job}",
                "--launch.system=slurm"]

    def commands(self, run_args: Sequence[str]) -> list[list[str]]:
        """The chief command, then one worker-group command per node."""
        common = [*self.accounting_flags(), f"--search_id={self.search_job}",
                  f"--chief_address={self.chief_address}", *run_args]
        srun = ["srun", "--nodes=1", "--ntasks=1", f"--nodelist={self.hosts[0]}", "--overlap",
                "--cpus-per-task=1"]
        if self.signal_lead:
            # SIGUSR1 to the chief this long before the time limit: suspend and save
            srun.append(f"--signal=USR1@{self.signal_lead}")
        chief = [*srun, self.python, "-m", "benchmark.run", "--role=chief", *common]
        if self.resumes:
            chief.append("--resume")
        out = [chief]
        for i, host in enumerate(self.hosts):
            worker = [self.python, "-m", "benchmark.run", "--role=worker", f"--worker_id={i}",
                      *common]
            if self.launcher == "horovodrun":
                # Gloo needs no MPI: one srun task per node starts horovodrun, which starts
                # ranks_per_node local ranks on that node.
                cmd = ["srun", "--nodes=1", "--ntasks=1", f"--nodelist={host}", "--overlap",
                       "--kill-on-bad-exit=1", "horovodrun", "-np", str(self.ranks_per_node), "-H",
                       f"localhost:{self.ranks_per_node}", "--gloo", *worker]
            else:
                # srun starts the ranks itself (Horovod built with MPI/PMI support).
                # --kill-on-bad-exit: a rank that fails takes its group down with it, so no
                # rank waits in a collective for one that is gone.
                cmd = ["srun", "--nodes=1", f"--ntasks={self.ranks_per_node}",
                       f"--ntasks-per-node={self.ranks_per_node}", f"--nodelist={host}",
                       "--overlap", "--kill-on-bad-exit=1", *worker]
            if self.gpus_per_node:
                cmd.insert(1, f"--gpus-per-node={self.gpus_per_node}")
            out.append(cmd)
        return out


def format_commands(commands: Sequence[Sequence[str]]) -> str:
    return "\n".join(shlex.join(cmd) for cmd in commands)


def execute(commands: Sequence[Sequence[str]]) -> int:
    """Start the chief and the workers; return the chief's exit code, stopping the workers.
    A SIGUSR1 to this process (the batch shell's wall-time signal) goes on to the chief."""
    chief = subprocess.Popen(commands[0])
    signal.signal(signal.SIGUSR1, lambda *_: chief.poll() is None and chief.send_signal(
        signal.SIGUSR1))
    workers = [subprocess.Popen(cmd) for cmd in commands[1:]]
    try:
        code = chief.wait()
    except KeyboardInterrupt:
        chief.send_signal(signal.SIGINT)
        code = chief.wait()
    for proc in workers:
        if proc.poll() is None:
            proc.terminate()
    for proc in workers:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return code


_JOB_ID = re.compile(r"^[0-9]+(_[0-9]+)?$")


def _plan_options(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """This module's own options (before ``--``) and the benchmark.run flags after them."""
    options: dict[str, str] = {}
    rest = list(argv)
    while rest and rest[0] != "--" and rest[0].startswith("--") and rest[0].split("=", 1)[0] in (
            "--dry_run", "--signal_lead", "--resume_job"):
        name, _, value = rest.pop(0)[2:].partition("=")
        options[name] = value
    if rest and rest[0] == "--":
        rest = rest[1:]
    return options, rest


def main(argv: Sequence[str], env: Mapping[str, str] | None = None) -> int:
    """``[--dry_run] [--signal_lead=S] [--resume_job=ID] [--] run-args...``: print or execute
    the plan."""
    options, argv = _plan_options(list(argv))
    dry = "dry_run" in options
    try:
        job = SlurmJob.from_env(os.environ if env is None else env)
        lead = options.get("signal_lead", "600")
        if not lead.isdigit():
            raise SlurmPlanError(f"--signal_lead={lead!r}: expected whole seconds >= 0 "
                                 "(0: no wall-time signal)")
        resume = options.get("resume_job")
        if resume is not None and not _JOB_ID.match(resume):
            raise SlurmPlanError(f"--resume_job={resume!r}: expected a SLURM job id, e.g. 4242")
        job = dataclasses.replace(job, signal_lead=int(lead), resume_job=resume)
    except SlurmPlanError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    commands = job.commands(argv)
    print(format_commands(commands), flush=True)
    return 0 if dry else execute(commands)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
