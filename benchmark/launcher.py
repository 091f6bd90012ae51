"""Distributed roles of ``benchmark.run``: chief, worker group, and the local launcher.

``python -m benchmark.run`` takes these flags (defined here, :func:`define_role_flags`):

- ``--role=chief --chief_address=HOST:PORT [--search_id=ID]``: create (or, with ``--resume``,
  reopen) the run directory and serve the search's oracle to worker groups
  (:class:`tuners.distributed.chief.Chief`: leases, progress, resume) until the search is done; then
  write ``best.json``. Exit code 0 when finished, 1 when stopped by the oracle's failure
  limit, 3 when no worker came back for ``--worker_wait`` seconds, 130 on Ctrl-C / SIGTERM.
  SIGUSR1 (SLURM's wall-time signal, ``--signal_lead`` of :mod:`benchmark.slurm_plan`) winds
  the search down: no new trials, running ones are checkpointed at the end of their current
  epoch and given back, the chief saves and exits 0; ``--resume`` in the next job continues
  them from that epoch.
- ``--role=worker --worker_id=N --chief_address=HOST:PORT --search_id=ID``: one worker group
  (start it with ``horovodrun -np K`` for K ranks). Rank 0 waits for the chief (retries with
  backoff for ``--chief_retry_for`` seconds), checks the search id, then trains the trials the
  chief hands out with the Horovod tuner, its heartbeat renewing the lease. The group uses the
  configuration the chief wrote (``<run_dir>/params.yaml``).
- ``--role=standalone`` (the default): with ``--workers=1`` the search runs in this process as
  before (no chief, no gRPC). With ``--workers=W`` > 1 this process becomes the chief on a free
  loopback port and starts W worker groups as child processes (``horovodrun -np K --gloo``
  when ``--ranks_per_worker=K`` > 1), each in its own process group with its log in
  ``<run_dir>/logs/worker<N>.log``. Ctrl-C or SIGTERM stops every process it started.

The chief and the SLURM plan (:mod:`benchmark.slurm_plan`) use exactly these flags.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from absl import flags

ROLES = ("standalone", "chief", "worker")
EXIT_FINISHED, EXIT_ABORTED, EXIT_USAGE, EXIT_ABANDONED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
EXIT_LOST = 4  # a worker group whose trial the chief failed while it ran (stall, lost lease)
LOGS_DIR = "logs"
ROLE_FLAGS = ("role", "worker_id", "chief_address", "search_id")


def define_role_flags(flag_values: flags.FlagValues | None = None) -> None:
    """The distributed flags of ``benchmark.run`` (idempotent)."""
    fv = flag_values if flag_values is not None else flags.FLAGS
    if "role" in fv:
        return
    flags.DEFINE_enum("role", "standalone", ROLES, "standalone: this machine (a chief and "
                      "--workers worker groups when --workers > 1); chief: serve the oracle; "
                      "worker: one worker group of a distributed search", flag_values=fv)
    flags.DEFINE_string("worker_id", None, "worker group number (--role=worker)",
                        flag_values=fv)
    flags.DEFINE_string("chief_address", None, "HOST:PORT of the chief (--role=chief: where "
                        "it listens; --role=worker: where it is reached)", flag_values=fv)
    flags.DEFINE_string("search_id", None, "id of the search (a worker of another search is "
                        "refused); default for a new chief: <run_name>-<random>",
                        flag_values=fv)
    flags.DEFINE_float("lease_timeout", 60.0, "seconds without a heartbeat after which a "
                       "worker's trial is failed and re-issued", lower_bound=0.1,
                       flag_values=fv)
    flags.DEFINE_float("heartbeat_interval", 2.0, "seconds between a worker's heartbeats",
                       lower_bound=0.05, flag_values=fv)
    flags.DEFINE_float("stall_timeout", 0.0, "seconds a trial may go without progress "
                       "(training batches, from the heartbeats) before the chief fails and "
                       "re-issues it and its worker group exits (0: no check)",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_float("chief_retry_for", 300.0, "seconds a worker keeps retrying an "
                       "unreachable chief (exponential backoff)", lower_bound=0.0,
                       flag_values=fv)
    flags.DEFINE_float("worker_wait", 1800.0, "the chief gives up after this many seconds "
                       "without any worker call (0: never)", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_float("progress_interval", 10.0, "seconds between the chief's progress lines",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_string("chief_tls_cert", "", "--role=chief: serve over TLS with this PEM "
                        "certificate (with --chief_tls_key)", flag_values=fv)
    flags.DEFINE_string("chief_tls_key", "", "--role=chief: the PEM key of --chief_tls_cert",
                        flag_values=fv)
    flags.DEFINE_string("chief_tls_ca", "", "--role=worker: PEM certificate to check a TLS "
                        "chief against", flag_values=fv)


class RoleError(ValueError):
    """Inconsistent role flags or a chief that cannot start; the message names the flag."""


def check_role_flags(fv: flags.FlagValues, workers: int) -> str:
    """The role to run ("single" for today's one-process search); RoleError if flags clash."""
    role = fv.role
    if role == "worker":
        for name in ("worker_id", "chief_address", "search_id"):
            if not fv[name].value:
                raise RoleError(f"--role=worker needs --{name}")
        if "@" in fv.search_id:
            raise RoleError(f"--search_id={fv.search_id!r}: must not contain '@'")
        _address(fv.chief_address)
        return role
    if fv.worker_id is not None:
        raise RoleError(f"--worker_id={fv.worker_id!r} is only for --role=worker")
    if fv.search_id is not None and (not fv.search_id or "@" in fv.search_id):
        raise RoleError(f"--search_id={fv.search_id!r}: must be non-empty without '@'")
    if role == "chief":
        if not fv.chief_address:
            raise RoleError("--role=chief needs --chief_address=HOST:PORT (where to listen)")
        _address(fv.chief_address)
        return role
    if workers == 1 and not fv.chief_address:
        return "single"
    return "standalone"


def _address(text: str) -> tuple[str, int]:
    from tuners.distributed.chief import ChiefError, split_address

    try:
        return split_address(text)
    except ChiefError as exc:
        raise RoleError(f"--chief_address: {exc}") from None


# --- chief ------------------------------------------------------------------------------------


def build_chief(cfg, run_dir: str, search_id: str, *, resume: bool, fv, out=None):
    """The Chief serving ``cfg``'s oracle on ``run_dir`` (params.yaml written by the caller)."""
    from tuners.budget import AllocationBudget, earlier_node_hours
    from tuners.distributed.chief import Chief
    from tuners.mllog import MLLOG_FILES
    from tuners.oracles import make_oracle
    from tuners.space import build_space

    oracle = make_oracle(cfg.search, build_space(cfg.search.space))
    # the allocation: every node the search holds from now on, plus earlier segments
    earlier = earlier_node_hours(os.path.join(run_dir, MLLOG_FILES[0])) if resume else 0.0
    budget = AllocationBudget(cfg.search.node_hour_budget, cfg.launch.nodes,
                              earlier_node_hours=earlier)
    return Chief(oracle, search_id=search_id, run_dir=run_dir, resume=resume,
                 lease_timeout=fv.lease_timeout, nodes_per_worker=cfg.launch.nodes_per_worker,
                 ranks_per_worker=cfg.launch.ranks_per_worker, budget=budget,
                 default_epochs=cfg.search.max_epochs, progress_interval=fv.progress_interval,
                 worker_wait=fv.worker_wait, out=out, stall_timeout=fv.stall_timeout)


def prepare_chief_run_dir(cfg, fv, run) -> tuple[str, str]:
    """Create (or with --resume reopen) the run directory; (run_dir, search_id)."""
    from benchmark.config import write_params

    run_dir, search_id = run.check_run_dir(cfg, fv.resume)
    if fv.search_id:
        if fv.resume and search_id != fv.search_id and search_id != cfg.launch.run_name:
            raise RoleError(f"--search_id={fv.search_id!r}: the run directory {run_dir} holds "
                            f"search {search_id!r}; pass --search_id={search_id} to resume it")
        search_id = fv.search_id
    os.makedirs(run_dir, exist_ok=True)
    if not fv.resume:
        write_params(cfg, run_dir, search_id=search_id)
    return run_dir, search_id


def finish_chief(cfg, run_dir: str, outcome: str, chief, run) -> int:
    """Write best.json and print the summary; the exit code of ``outcome``."""
    from mlpf_tf.configbase import atomic_write_text

    summary = run.summarize(run_dir, cfg)
    summary["stopped_by"] = _stopped_by(outcome, chief)
    summary["allocated_node_hours"] = chief.budget.used()
    atomic_write_text(os.path.join(run_dir, run.BEST_FILE), json.dumps(summary, indent=1) + "\n")
    elapsed = chief.clock() - chief._started
    print(run.format_summary(summary, run_dir, elapsed, cfg.launch.nodes), flush=True)
    if outcome == "finished" and summary["best"] is not None and hasattr(
            run, "write_best_physics"):
        run.write_best_physics(run_dir)  # as the one-process search does
    if outcome == "suspended":
        print(f"search suspended at the wall-time signal; resubmit with --resume on {run_dir} "
              "to continue it", flush=True)
    codes = {"finished": EXIT_FINISHED, "aborted": EXIT_ABORTED, "suspended": EXIT_FINISHED,
             "abandoned": EXIT_ABANDONED, "stopped": EXIT_INTERRUPTED}
    return codes[outcome]


def run_chief(cfg, fv, run) -> int:
    run_dir, search_id = prepare_chief_run_dir(cfg, fv, run)
    chief = build_chief(cfg, run_dir, search_id, resume=fv.resume, fv=fv)
    chief.start(fv.chief_address, tls_cert=fv.chief_tls_cert or None,
                tls_key=fv.chief_tls_key or None)
    print(f"chief of search {search_id} listening on {fv.chief_address} (run directory "
          f"{run_dir})", flush=True)
    # The chief holds the search's allocation: its run start/stop and node count are what the
    # reports turn into allocated node-hours.
    mllogger = run.start_mllog(cfg, run_dir, search_id)
    outcome = "stopped"
    try:
        with _stop_on_signals(chief.request_stop, wind_down=chief.wind_down):
            outcome = chief.serve()
    finally:
        mllogger.end("run_stop", None, {"status": outcome,
                                        "stopped_by": _stopped_by(outcome, chief)})
    return finish_chief(cfg, run_dir, outcome, chief, run)


def _stopped_by(outcome: str, chief) -> str:
    """Which limit ended the search (``tuners.oracles.STOP_REASONS``)."""
    if outcome != "finished":
        return "aborted"
    return chief.stop_reason or "space_exhausted"


class _stop_on_signals:
    """SIGINT/SIGTERM call ``stop``, SIGUSR1 (the wall-time signal) ``wind_down`` (main
    thread only) for the duration of a with-block."""

    def __init__(self, stop, wind_down=None):
        self.stop = stop
        self.wind_down = wind_down
        self.saved: dict[int, object] = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.saved[sig] = signal.signal(sig, lambda *_: self.stop())
            if self.wind_down is not None:
                self.saved[signal.SIGUSR1] = signal.signal(signal.SIGUSR1,
                                                           lambda *_: self.wind_down())
        return self

    def __exit__(self, *exc):
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)


# --- worker -----------------------------------------------------------------------------------


def run_worker(cfg, fv, run) -> int:
    """One worker group: rank 0 talks to the chief, all ranks train its trials."""
    from benchmark.config import load_params
    from mlpf_tf import distributed
    from mlpf_tf.train import configure_threads
    from tuners.distributed.worker import (
        SECRET_FILE,
        ChiefClient,
        ChiefUnreachable,
        RemoteRecorder,
        WrongSearch,
    )
    from tuners.horovod_tuner import SearchAborted

    ctx = distributed.init()
    run_dir = os.path.abspath(os.path.join(cfg.launch.output_dir, cfg.launch.run_name))
    client, error = None, None
    if ctx.size != cfg.launch.ranks_per_worker:
        error = (f"--launch.ranks_per_worker={cfg.launch.ranks_per_worker}, but this worker "
                 f"group has {ctx.size} rank(s): start it with horovodrun -np "
                 f"{cfg.launch.ranks_per_worker}")
    elif ctx.is_root:
        client = ChiefClient(fv.chief_address, fv.worker_id, fv.search_id,
                             heartbeat_interval=fv.heartbeat_interval,
                             retry_for=fv.chief_retry_for,
                             secret_file=os.path.join(run_dir, SECRET_FILE),
                             tls_ca=fv.chief_tls_ca or None, on_lost=_exit_group)
        try:
            client.hello()
            saved, _ = load_params(run_dir)
            if saved.search != cfg.search:
                print(f"worker {fv.worker_id}: using the search configuration of "
                      f"{run_dir}/params.yaml", flush=True)
        except (ChiefUnreachable, WrongSearch, PermissionError) as exc:
            error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a missing or bad params.yaml
            error = f"{type(exc).__name__}: {exc}"
    error = distributed.broadcast_object(error, root=0, ctx=ctx)
    if error:
        if ctx.is_root:
            print(f"benchmark.run: worker {fv.worker_id}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    # SLURM's wall-time SIGUSR1, should it reach the ranks (its default would kill them): rank
    # 0 suspends the trial after this epoch as when the chief says so; the others wait for
    # rank 0's word in the epoch report.
    if client is not None:
        client.wind_down_on(signal.SIGUSR1)
    elif threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    cfg = distributed.broadcast_object(load_params(run_dir)[0] if ctx.is_root else None,
                                       root=0, ctx=ctx)
    configure_threads(cfg.train.num_threads or cfg.launch.threads_per_rank, 1)
    try:
        run._prepare_data(cfg, ctx)
        # resume=True: never wipe <run_dir>/keras_tuner, which holds the chief's oracle state
        tuner = run.build_tuner(cfg, run_dir, fv.search_id, ctx, resume=True,
                                worker_id=str(fv.worker_id))
        tuner.tuner_id = client.tuner_id if client is not None else f"worker{fv.worker_id}"
        if client is not None:
            tuner.oracle = client  # rank 0 asks the chief instead of its local oracle
            tuner.runner.progress = client.advance  # batches trained, for the stall check
            if tuner.runner.recorder is not None:  # records go to the chief, not to a file
                tuner.runner.recorder = RemoteRecorder(client)
        tuner.search()
    except SearchAborted as exc:
        print(f"benchmark.run: worker {fv.worker_id}: search aborted: {exc}", file=sys.stderr)
        return EXIT_ABORTED
    finally:
        if client is not None:
            client.close()
    if ctx.is_root:
        print(f"worker {fv.worker_id}: done, {len(tuner.trials_run)} trial(s) run", flush=True)
    return EXIT_FINISHED


def _exit_group(trial_id: str) -> None:
    """Rank 0's heartbeat heard that the chief failed the running trial (no progress, or its
    lease lost): the group may be stuck in a collective, so rank 0 exits at once and
    horovodrun (or ``srun --kill-on-bad-exit``) ends the other ranks; the launcher or the
    job restarts the group, and the trial's values are already re-issued."""
    print(f"benchmark.run: worker group: trial {trial_id} was failed by the chief (no "
          "progress or lease lost); exiting the group", file=sys.stderr, flush=True)
    os._exit(EXIT_LOST)


# --- standalone: a chief and W worker groups on this machine ---------------------------------


def worker_command(argv: Sequence[str], worker_id: int, address: str, search_id: str,
                   ranks: int, python: str = sys.executable) -> list[str]:
    """The command of worker group ``worker_id``: benchmark.run with the user's flags."""
    keep = [a for a in argv if not _is_flag(a, (*ROLE_FLAGS, "resume", "noresume"))]
    cmd = [python, "-m", "benchmark.run", *keep, "--role=worker", f"--worker_id={worker_id}",
           f"--chief_address={address}", f"--search_id={search_id}"]
    if ranks > 1:
        # Horovod over Gloo on this machine: K local ranks form the worker group.
        cmd = [find_horovodrun(python), "-np", str(ranks), "-H", f"localhost:{ranks}",
               "--gloo", *cmd]
    return cmd


def find_horovodrun(python: str = sys.executable) -> str:
    """``horovodrun`` of the running interpreter's environment (beside ``python``, e.g. an
    unactivated ``.venv/bin``), else the one on PATH; RoleError if there is none."""
    beside = os.path.join(os.path.dirname(os.path.abspath(python)), "horovodrun")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("horovodrun")
    if found:
        return found
    raise RoleError(f"--launch.ranks_per_worker > 1 needs horovodrun, found neither beside "
                    f"{python} nor on PATH; install Horovod in this environment")


def _is_flag(arg: str, names: Sequence[str]) -> bool:
    name = arg.lstrip("-").split("=", 1)[0]
    return arg.startswith("-") and name in names


def run_standalone(cfg, fv, argv: Sequence[str], run) -> int:
    """This process serves the oracle; W worker groups run as child process groups."""
    run_dir, search_id = prepare_chief_run_dir(cfg, fv, run)
    chief = build_chief(cfg, run_dir, search_id, resume=fv.resume, fv=fv)
    port = chief.start(fv.chief_address or "127.0.0.1:0")
    address = f"127.0.0.1:{port}" if not fv.chief_address else fv.chief_address
    logs = os.path.join(run_dir, LOGS_DIR)
    os.makedirs(logs, exist_ok=True)
    print(f"chief of search {search_id} on {address}; {cfg.launch.workers} worker group(s) of "
          f"{cfg.launch.ranks_per_worker} rank(s); logs in {logs}", flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    procs: list[tuple[int, subprocess.Popen]] = []
    outcome = "stopped"
    mllogger = run.start_mllog(cfg, run_dir, search_id)  # the allocation: all worker nodes
    try:
        for n in range(cfg.launch.workers):
            cmd = worker_command(argv, n, address, search_id, cfg.launch.ranks_per_worker)
            with open(os.path.join(logs, f"worker{n}.log"), "ab") as log:
                log.write(f"$ {shlex.join(cmd)}\n".encode())
                log.flush()
                procs.append((n, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                  env=env, start_new_session=True)))
        watcher = threading.Thread(target=_watch_workers, args=(procs, chief), daemon=True)
        watcher.start()
        with _stop_on_signals(chief.request_stop, wind_down=chief.wind_down):
            outcome = chief.serve(address)
    finally:
        stop_process_groups([p for _, p in procs])
        mllogger.end("run_stop", None, {"status": outcome,
                                        "stopped_by": _stopped_by(outcome, chief)})
    failed = [n for n, p in procs if p.returncode not in (0, None, -signal.SIGTERM)]
    if failed:
        print(f"worker group(s) {', '.join(map(str, failed))} failed; see "
              + ", ".join(os.path.join(logs, f"worker{n}.log") for n in failed), flush=True)
    return finish_chief(cfg, run_dir, outcome, chief, run)


def _watch_workers(procs, chief, poll: float = 0.5) -> None:
    """Stop the chief once every worker group has exited (nobody is left to run trials)."""
    while any(p.poll() is None for _, p in procs):
        time.sleep(poll)
    time.sleep(2 * poll)  # the chief's own end (finished) wins when it comes with the last exit
    chief.request_stop()


def stop_process_groups(procs: Sequence[subprocess.Popen], grace: float = 10.0) -> None:
    """SIGTERM every child's process group, SIGKILL what is left after ``grace`` seconds."""
    for proc in procs:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(proc, signal.SIGKILL)
            proc.wait(5.0)


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # the child leads its own session: its whole group
    except ProcessLookupError:
        pass


def dispatch(cfg, fv, argv: Sequence[str], run) -> int | None:
    """Run the role the flags ask for; None means "the one-process search" (caller runs it).

    ``run`` is the search entry point's module (:mod:`benchmark.run`: run directories,
    tuner, summaries), handed in by its caller so that this module does not import it back.
    """
    role = check_role_flags(fv, cfg.launch.workers)
    if role == "single":
        return None
    if role == "worker":
        return run_worker(cfg, fv, run)
    from tuners.distributed.chief import ChiefError

    try:
        return run_chief(cfg, fv, run) if role == "chief" else run_standalone(cfg, fv, argv, run)
    except ChiefError as exc:  # the port is in use, ...
        raise RoleError(str(exc)) from None
