"""The chief of a distributed search: any keras-tuner oracle served over gRPC, with leases.

keras-tuner's own chief (``keras_tuner/src/distribute/oracle_chief.py``) serves an oracle with
one server thread and no notion of a worker's health: a worker that dies keeps its trial
RUNNING forever and the chief never exits. :class:`Chief` wraps the same oracle object (its
``create_trial`` / ``update_trial`` / ``end_trial``, state files and ``reload``) and adds:

- a multi-thread gRPC server (``threads``); oracle calls are serialised by one lock, as
  keras-tuner's ``@synchronized`` would, but heartbeats and status calls never wait on
  training;
- leases (:mod:`tuners.distributed.leases`): a trial not renewed by its worker for ``lease_timeout``
  seconds is ended FAILED with the error ``lease expired (worker N)`` -- the chief logs
  that ``trial_end`` unless the worker had already recorded the trial's end, which then stands
  -- and its values (hyperparameters and, for promotions, the parent trial, initial epoch,
  rung) are re-issued as a new trial to the next worker that asks;
- failure limits that see only configurations: the oracle's own consecutive-failure check
  is switched off while served; the chief counts the FAILED ends workers report and stops the
  search once ``max_consecutive_failed_trials`` (the oracle's setting) are reached (``>=``).
  Ends the chief makes for a lost worker (lease expired, returned unstarted) neither count nor
  reset that run, for every oracle; a re-issued trial's epochs count against an oracle's
  epoch budget (``epochs_allotted``) like any other trial's;
- authentication: a per-search secret (256 random bits from :mod:`secrets`) that the chief
  creates in ``<run_dir>/chief.secret`` (mode 0600: only its user can read it; a resumed chief
  keeps it) and every call must carry (gRPC metadata ``x-mlpf-secret``), compared in constant
  time (``hmac.compare_digest``). A caller without it is refused (UNAUTHENTICATED) with a
  message that names neither the search nor the secret. The search id (often the public SLURM
  job id) is only a guard against a stale worker of another search (FAILED_PRECONDITION).
  Each worker process also sends a random session id (``x-mlpf-session``): leases are held by
  ``worker<N>@<search>#<session>``, so a second process started with the same worker id never
  gets, ends, gives back or reports on the first one's trials. Trial ids are checked against
  :data:`TRIAL_ID` before any use (they name directories). Optional TLS: ``start(tls_cert=,
  tls_key=)`` (``--chief_tls_cert`` / ``--chief_tls_key``; workers ``--chief_tls_ca``);
  without it the secret crosses the network in plain text, which keeps out callers who
  cannot read the run directory but not someone who can read the cluster's traffic;
- an end: once the oracle says STOPPED and no trial is running or waiting to be re-issued,
  the chief tells the remaining workers STOPPED and returns -- also when workers died. While
  other trials still run, one worker is kept on standby (IDLE) to take re-issued trials;
- one writer of the search state: workers send their records (``trial_start``, ``epoch``,
  ``trial_end``) over the ``Record`` call, refused for a trial the caller does not hold; the
  chief appends them, the trials it hands out (``create``) and the ends it decides to one
  ordered, durable log (:mod:`tuners.distributed.statelog`, ``<run_dir>/search.log.jsonl``)
  before the oracle hears of a change and before it answers the call; ``trials.jsonl`` is
  appended from the log after each durable append (and rewritten from it on resume). A
  trial that ends without a worker's ``trial_end`` gets one from the chief, so every ended
  trial has exactly one;
- the wall-time signal (SIGUSR1 before a SLURM job's time limit, :meth:`Chief.wind_down`):
  no new trials; heartbeat and update replies say ``wind_down``, workers checkpoint their
  trial after the current epoch and give it back with that epoch (``GiveBack`` with
  ``epoch``). The chief logs a ``trial_suspend`` record before it answers -- no end, no
  failure -- and :meth:`Chief.serve` returns "suspended" once nothing runs (the log is
  durable; the launcher exits 0). A suspended trial is continued under its id (values with
  ``tuner/resume_epoch``, logged as a hand-out) by the next worker of this chief or of a
  resumed one, which finds the trials whose last log entry is a suspend;
- resume: started on a run directory with a log it replays it: the oracle reloads its own
  files (a cache) and is brought in line with the log (ends it missed are applied), trials
  handed out and not ended get a fresh lease held by their old workers (which reconnect) and
  are re-issued if those do not come back within ``lease_timeout``, trials the oracle created
  but the log never handed out are ended and re-issued, and the re-issue queue is every
  lost-worker end whose values no trial re-runs yet;
- progress: a line every ``progress_interval`` seconds (trials done / running / failed, best
  objective, node-hours used and budget left) and the same in ``<run_dir>/progress.json``
  (atomic writes).

Wire format: unary gRPC methods of the service ``mlpf.hpo.Chief`` (:data:`METHODS`) whose
requests and replies are small JSON objects (UTF-8 bytes). A busy worker needs one round trip
per trial: ``EndAndCreate`` takes the trial's last metrics and end status and answers with the
worker's next trial; ``GiveBack`` returns a trial a stopping worker will not run.
keras-tuner's protobuf service has no heartbeat and no search id, and JSON keeps the worker
side free of TensorFlow imports (:mod:`tuners.distributed.worker`).

Saving: keras-tuner's stock oracles write ``oracle.json`` and a ``trial.json`` on every
``create_trial`` / ``update_trial`` / ``end_trial``; ``save_interval`` > 0 coalesces those
writes to at most one round per interval (plus one after a lease expiry and at the end), for
fleets of hundreds of workers with short trials. Oracles that journal their own state
(:mod:`tuners.asha`) keep their journal line per call; their compacted snapshot
(``oracle.json``, tens of MB at 10,000 trials) is mostly taken off the calls' path: the serve
loop's :meth:`Chief.flush` reads the state under the lock when one is due (trials that ended
were serialised when they ended) and joins and writes the file after releasing the lock.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hmac
import json
import math
import os
import re
import secrets
import stat
import sys
import threading
import time
from concurrent import futures
from typing import Any

import grpc
from keras_tuner.src.engine import oracle as kt_oracle
from keras_tuner.src.engine import trial as trial_module

from mlpf_tf.configbase import atomic_write_text
from tuners.distributed.leases import Lease, LeaseError, LeaseTable
from tuners.distributed.statelog import StateLog
from tuners.faults import fault_point
from tuners.oracles import stop_reason
from tuners.records import RESUME_KEY, TRIALS_FILE, make_record, node_hours, record_line

SERVICE = "mlpf.hpo.Chief"
METHODS = ("Hello", "CreateTrial", "UpdateTrial", "Record", "EndTrial", "EndAndCreate",
           "GiveBack", "Heartbeat", "Status")
SEARCH_ID_KEY = "x-mlpf-search-id"
SECRET_KEY = "x-mlpf-secret"  # the search's secret, on every call
SESSION_KEY = "x-mlpf-session"  # a random id per worker process (who holds which lease)
SECRET_FILE = "chief.secret"  # in the run directory, mode 0600: only the user can read it
SECRET_BYTES = 32  # 256 random bits
REFUSED = "not authorised: missing or wrong search secret"
PROJECT_NAME = "keras_tuner"  # the keras-tuner project directory inside the run directory
PROGRESS_FILE = "progress.json"
RESERVED_PREFIX = "tuner/"
FREEZE_SECONDS = 30.0  # how often the serve loop freezes the long-lived heap (gc.freeze),
FREEZE_TRIALS = 50  # ... or after this many more trials ended, whichever comes first
RERUN_KEY = "tuner/rerun_of"  # in a re-issued trial's values: the trial whose values it re-runs
WORKER_EVENTS = ("trial_start", "epoch", "trial_end")  # the records a worker may send

RUNNING = trial_module.TrialStatus.RUNNING
IDLE = trial_module.TrialStatus.IDLE
STOPPED = trial_module.TrialStatus.STOPPED
COMPLETED = trial_module.TrialStatus.COMPLETED
FAILED = trial_module.TrialStatus.FAILED
INVALID = trial_module.TrialStatus.INVALID
END_STATUSES = (COMPLETED, FAILED, INVALID)

_TUNER_ID = re.compile(r"^worker(?P<worker>[^@#]+)@(?P<search>[^#]+)(?:#(?P<session>[0-9a-f]+))?$")
#: what a trial id may look like (keras-tuner's zero-padded numbers; used in paths)
TRIAL_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
_SESSION = re.compile(r"^[0-9a-f]{16,64}$")


class ChiefError(RuntimeError):
    """The chief cannot start or serve (port in use, bad arguments)."""


LOST_WORKER = re.compile(r"^(lease expired|returned unstarted|no progress for [^ ]+ s|"
                         r"interrupted by a chief restart) "
                         r"\(worker [^)]*\)$")


def is_lost_worker_end(message: str | None) -> bool:
    """Whether a FAILED trial's message is one the chief writes for a lost worker (not a
    failing configuration): lease expired, returned unstarted, no progress."""
    return bool(message) and bool(LOST_WORKER.match(str(message)))


def worker_tuner_id(worker_id: str | int, search_id: str) -> str:
    """The tuner id a worker group asks the oracle with: ``worker<N>@<search id>``."""
    return f"worker{worker_id}@{search_id}"


def parse_tuner_id(tuner_id: str) -> tuple[str, str]:
    """(worker id, search id) of a tuner id (``worker<N>@<search>``, optionally followed by
    ``#<session>``); ValueError naming it if it is not one."""
    match = _TUNER_ID.match(str(tuner_id))
    if not match:
        raise ValueError(f"tuner id {tuner_id!r:.80} is not of the form worker<N>@<search id>")
    return match.group("worker"), match.group("search")


def check_trial_id(trial_id: Any) -> str:
    """``trial_id`` as a string if it matches :data:`TRIAL_ID` (it names directories), else
    ValueError; checked before any use."""
    text = str(trial_id)
    if not TRIAL_ID.match(text):
        raise ValueError(f"trial id {text!r:.80} is not a trial id (letters, digits, '_', '-')")
    return text


def holder_id(tuner_id: str, session: str | None) -> str:
    """Who holds a lease: the tuner id, plus the caller's session when it sent one, so two
    processes started with one worker id never hold (or end) each other's trials."""
    return f"{tuner_id}#{session}" if session else tuner_id


def load_or_create_secret(run_dir: str) -> str:
    """The search's secret in ``<run_dir>/chief.secret``: read it, or create it (256 random
    bits from :mod:`secrets`, a file only this user may read or write, mode 0600)."""
    path = os.path.join(run_dir, SECRET_FILE)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return read_secret(path)
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_hex(SECRET_BYTES) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return read_secret(path)


def read_secret(path: str) -> str:
    """The secret in ``path``; ChiefError if it is readable by others or malformed."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise ChiefError(f"{path}: mode {mode:o} lets other users read the search secret; "
                         "it must be 600 (chmod 600)")
    with open(path) as fh:
        text = fh.read().strip()
    if len(text) < 32 or any(c not in "0123456789abcdef" for c in text):
        raise ChiefError(f"{path}: not a search secret (expected at least 32 hex digits)")
    return text


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ChiefError naming the address when malformed."""
    host, sep, port = str(address).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ChiefError(f"chief address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:8470")
    return host.strip("[]"), int(port)


def _committed(method):
    """A call of the chief: what it logged is on disk before it returns -- one ``fsync`` for
    the whole call (nested calls included), after the chief's lock is released, shared with
    calls that wait for the disk at the same time (group commit)."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        depth = getattr(self._calls, "depth", 0)
        self._calls.depth = depth + 1
        try:
            result = method(self, *args, **kwargs)
        finally:
            self._calls.depth = depth
        if depth == 0 and self.log is not None:
            self.log.sync()
        return result

    return call


class Chief:
    """Serves ``oracle`` to worker groups with leases, a search-id guard, progress and resume.

    Args:
        oracle: any keras-tuner ``Oracle`` (stock or :mod:`tuners.asha`).
        search_id: the id every worker must carry.
        run_dir: the run directory: oracle state in ``<run_dir>/keras_tuner``, records in
            ``trials.jsonl``, the state log ``search.log.jsonl``, ``progress.json``. None:
            nothing is written (the oracle keeps whatever project directory it has).
        resume: replay the state log and reload the oracle state found in ``run_dir``; a
            run directory whose log holds a search must be resumed (ChiefError otherwise).
        lease_timeout: seconds without a heartbeat after which a trial is re-issued.
        nodes_per_worker, ranks_per_worker: a worker group's size, for node-hours and records.
        node_hour_budget: no new trials once the trials used this many node-hours (0: none);
            ignored when ``budget`` is given.
        budget: the search's node-hour budget on allocated node-hours
            (:class:`tuners.budget.AllocationBudget`), what comparisons use.
        default_epochs: ``target_epochs`` recorded for trials without ``tuner/epochs``.
        save_interval: coalesce the oracle's state writes (seconds; 0: every call).
        threads: gRPC server threads.
        progress_interval: seconds between progress lines (0: no lines, file only at the end).
        worker_wait: give up (``serve`` returns "abandoned") when no worker called for this
            many seconds while the search is unfinished (0: wait forever).
        out: stream for the progress lines.
        log_fsync: force every state log append to disk (default; False: benchmarks only).
    """

    def __init__(self, oracle, *, search_id: str, run_dir: str | None = None,
                 resume: bool = False, lease_timeout: float = 30.0,
                 nodes_per_worker: float = 1.0, ranks_per_worker: int = 1,
                 node_hour_budget: float = 0.0, default_epochs: int = 1,
                 save_interval: float = 0.0, threads: int = 16,
                 progress_interval: float = 10.0, worker_wait: float = 600.0,
                 out=None, clock=time.monotonic, secret: str | None = None,
                 stall_timeout: float = 0.0, budget=None, log_fsync: bool = True):
        if not search_id or "@" in search_id:
            raise ChiefError(f"search id {search_id!r}: must be non-empty and contain no '@'")
        if threads < 1:
            raise ChiefError(f"threads={threads!r}: must be >= 1")
        self.oracle = oracle
        self.search_id = str(search_id)
        self.run_dir = os.path.abspath(run_dir) if run_dir else None
        if secret is None and self.run_dir:
            os.makedirs(self.run_dir, exist_ok=True)
            secret = load_or_create_secret(self.run_dir)
        self.secret = secret if secret is not None else secrets.token_hex(SECRET_BYTES)
        self._secret_bytes = self.secret.encode()
        self.clock = clock
        self.leases = LeaseTable(lease_timeout, clock=clock)
        if not (stall_timeout >= 0 and math.isfinite(stall_timeout)):
            raise ChiefError(f"stall_timeout={stall_timeout!r}: must be >= 0 seconds (0: off)")
        self.stall_timeout = float(stall_timeout)
        self.nodes_per_worker = float(nodes_per_worker)
        self.ranks_per_worker = int(ranks_per_worker)
        self.budget = budget
        self.node_hour_budget = float(budget.budget if budget is not None
                                      else node_hour_budget or 0.0)
        self.stop_reason: str | None = None  # which limit ended the search
        self.default_epochs = int(default_epochs)
        self.save_interval = float(save_interval)
        self.threads = int(threads)
        self.progress_interval = float(progress_interval)
        self.worker_wait = float(worker_wait)
        self.out = out if out is not None else sys.stdout
        self.objective = oracle.objective
        self._sign = -1.0 if getattr(self.objective, "direction", "min") == "max" else 1.0
        self._lock = threading.RLock()
        self._calls = threading.local()  # nesting depth of the calls (one fsync per call)
        self._flush_lock = threading.Lock()  # flushes write in the order they snapshot
        self._server: grpc.Server | None = None
        self.port: int | None = None
        self._stop = threading.Event()
        self._reissues: list[dict[str, Any]] = []
        self._reruns = 0  # re-issued trials so far (each raised the oracle's max_trials by 1)
        self._ended_by: dict[str, str] = {}
        self._last_seen: dict[str, float] = {}
        self._told_stopped: set[str] = set()
        self._standby: dict[str, float] = {}
        self._oracle_stopped = False
        self._winding = threading.Event()  # the wall-time signal came: suspend, then exit
        self._continues: list[dict[str, Any]] = []  # suspended trials to continue
        self.aborted: str | None = None
        self._started = clock()
        self._last_call = clock()
        self._dirty = False
        self._last_save = clock()
        self._last_freeze = float("-inf")
        self._ends_at_freeze = 0
        self.counts = {"completed": 0, "failed": 0, "expired": 0}
        self.best: tuple[float, str] | None = None  # (signed value, trial id)
        self._node_hours_past = 0.0
        self._node_hours_ended = 0.0
        # The state log (tuners.distributed.statelog) and what follows from it in memory:
        # the trial_end of every ended trial and who ended it, in end order.
        self.log: StateLog | None = None
        self._logged_ends: dict[str, tuple[dict[str, Any], str]] = {}
        self._end_order: list[str] = []
        # Failure limit: the chief counts consecutive *configuration* failures itself (the
        # FAILED ends workers report), so that lost workers (lease expiry, give-back) never
        # count, whatever the oracle. The oracle's own check (keras-tuner rescans every end and
        # compares with ``==``) is switched off for as long as the chief serves it.
        limit = getattr(oracle, "max_consecutive_failed_trials", None)
        self.max_consecutive_failures = int(limit) if limit else None
        oracle.max_consecutive_failed_trials = sys.maxsize
        self._consecutive_failures = 0
        if hasattr(oracle, "verbose"):
            oracle.verbose = 0  # keras-tuner's per-trial tables; the chief prints progress
        if self.run_dir:
            os.makedirs(self.run_dir, exist_ok=True)
            oracle._set_project_dir(self.run_dir, PROJECT_NAME)
            self.log = StateLog(self.run_dir, fsync=log_fsync)
            if self.log.entries and not resume:
                self.log.close()
                raise ChiefError(f"{self.log.path} holds a search already: resume it "
                                 "(--resume) or choose another run directory")
            if resume:
                try:
                    self._resume()
                    self.log.sync()
                except BaseException:
                    self.log.close()
                    raise
        self._dirty_trials: dict[str, Any] = {}
        # Oracles that journal their state (tuners.asha: O(1) per call, atomic) are left alone.
        # keras-tuner's stock oracles rewrite their files in place: a chief killed mid-write
        # would leave a truncated oracle.json. Their writes go through here instead (instance
        # attributes shadow the methods): atomic, and coalesced when save_interval > 0.
        self._journaled = hasattr(oracle, "journal_fsync") or not self.run_dir
        if self.run_dir and hasattr(oracle, "background_snapshots"):
            oracle.background_snapshots = True  # written by flush(), off the calls' path
        self._coalescing = self.save_interval > 0 and not self._journaled
        if not self._journaled:
            oracle.save = self._mark_dirty if self._coalescing else self._write_state_now
            oracle._save_trial = (self._mark_trial_dirty if self._coalescing
                                  else self._write_trial_now)

    # --- state --------------------------------------------------------------------------------

    def _oracle_file(self) -> str:
        return os.path.join(self.run_dir, PROJECT_NAME, "oracle.json")

    def _resume(self) -> None:
        """Replay the state log; the oracle's own files are a cache the log wins against.

        - ``trials.jsonl`` is rewritten from the log's records (a crash may have cut its last
          append);
        - trials the log ended are ended in the oracle if it never heard (the crash came
          between the log and the oracle), with the logged status and final metrics;
        - trials the log created and did not end are leased again to their holders (which
          reconnect; else the lease expires and they are re-issued);
        - trials running in the oracle that the log never handed out (the chief died between
          the oracle's decision and the log) are ended FAILED and their values re-issued;
        - trials whose last entry is a ``trial_suspend`` (given back at the wall-time signal)
          are held by nobody: they wait, in log order, to be continued under their id from
          the logged epoch;
        - the re-issue queue is every trial ended for a lost worker whose values no later
          trial re-runs (``tuner/rerun_of``); counts, best, node-hours and the failure run
          follow from the logged ends (and suspends, for node-hours).
        """
        entries = self.log.entries
        created: dict[str, dict[str, Any]] = {}
        suspended = _suspended(entries)
        for entry in entries:
            if entry.get("kind") == "create":
                created[entry["trial_id"]] = entry
            elif entry.get("kind") == "record" and entry["record"]["event"] == "trial_end":
                trial_id = entry["record"]["trial_id"]
                if trial_id not in self._logged_ends:
                    self._logged_ends[trial_id] = (entry["record"], entry["holder"])
                    self._end_order.append(trial_id)
        trials_file = os.path.join(self.run_dir, TRIALS_FILE)
        if entries or not os.path.exists(trials_file):
            atomic_write_text(trials_file, "".join(
                record_line(e["record"]) for e in entries if e.get("kind") == "record"))
        project = os.path.dirname(self._oracle_file())
        oracle = self.oracle
        if os.path.isdir(project) and os.listdir(project):
            oracle.reload()  # its running trials go to its retry queue: the log decides them
        for trial_id in list(oracle._retry_queue):
            trial = oracle.trials.get(trial_id)
            if trial is None or trial_id in created or trial_id in self._logged_ends or \
                    trial.status != INVALID:
                oracle._retry_queue.remove(trial_id)
        for trial_id in self._end_order:  # ended in the log: the oracle agrees
            record, holder = self._logged_ends[trial_id]
            trial = oracle.trials.get(trial_id)
            if trial is None or trial.status in END_STATUSES:
                continue
            oracle.ongoing_trials[holder] = trial
            self._end_in_oracle(trial_id, record["status"], record.get("error"),
                                count_failure=False, metrics=record.get("metrics"),
                                step=int(record.get("epochs") or 0))
        for trial_id, holder in ((t, r[1]) for t, r in self._logged_ends.items()):
            self._ended_by[trial_id] = holder
        rerun_of = {str(t.hyperparameters.values[RERUN_KEY]) for t in oracle.trials.values()
                    if t.hyperparameters.values.get(RERUN_KEY) is not None}
        self._reruns = len(rerun_of)
        rerun_of |= {str(e["values"][RERUN_KEY]) for e in created.values()
                     if e["values"].get(RERUN_KEY) is not None}
        for trial_id in self._end_order:
            record = self._logged_ends[trial_id][0]
            values = (created[trial_id]["values"] if trial_id in created else
                      oracle.trials[trial_id].hyperparameters.values
                      if trial_id in oracle.trials else None)
            if is_lost_worker_end(record.get("error")) and trial_id not in rerun_of and \
                    values is not None:
                self._reissues.append({"origin": trial_id, "values": _without_rerun(values)})
        now = self.clock()
        for trial_id, entry in created.items():  # handed out, not ended: lease them again
            if trial_id in self._logged_ends:
                continue
            trial = oracle.trials.get(trial_id)
            if trial_id in suspended and trial is not None and trial.status == RUNNING:
                continue  # held by nobody: continued from its epoch (below, in log order)
            lease = self.leases.grant(trial_id, entry["holder"], dict(entry["values"]))
            if trial is not None and trial.status == RUNNING:
                oracle.ongoing_trials[entry["holder"]] = trial
                continue
            self.leases.release(trial_id)  # the oracle's cache lost it, or ended it unlogged
            if trial is not None and trial.status in END_STATUSES:
                self._log_end(self._end_record(lease, trial.status, trial.message),
                              entry["holder"])
                continue
            self._requeue(lease, "interrupted by a chief restart "
                                 f"(worker {_worker_number(entry['holder'])})")
        self._continues = [{"trial_id": t, "epoch": e} for t, e in suspended.items()
                           if t not in self.leases and t not in self._logged_ends]
        for trial in sorted(oracle.trials.values(), key=lambda t: t.trial_id):
            if trial.status != RUNNING or trial.trial_id in created or \
                    trial.trial_id in self._logged_ends:
                continue
            # RUNNING, but the log never handed it out: nobody runs it, so the chief ends it.
            orphan = Lease(trial_id=trial.trial_id, worker="worker?@" + self.search_id,
                           values=dict(trial.hyperparameters.values), granted=now,
                           renewed=now, wall_start=time.time())
            self._requeue(orphan, "interrupted by a chief restart (worker ?)")
        if oracle.max_trials:
            oracle.max_trials += self._reruns
        self._consecutive_failures = self._count_consecutive_failures()
        self.counts["completed"] = self.counts["failed"] = 0
        for trial in oracle.trials.values():
            if trial.status == COMPLETED:
                self.counts["completed"] += 1
                self._consider_best(trial)
            elif trial.status in (FAILED, INVALID):
                self.counts["failed"] += 1
        ends = [self._logged_ends[t][0] for t in self._end_order]
        self.counts["expired"] = sum(1 for r in ends if str(r.get("error") or "").startswith(
            ("lease expired", "no progress")))
        self._node_hours_past = sum(float(r.get("node_hours") or 0.0) for r in ends) + sum(
            float(e["record"].get("node_hours") or 0.0) for e in entries
            if e.get("kind") == "record" and e["record"]["event"] == "trial_suspend")
        self._say(f"resumed search {self.search_id}: {self.counts['completed']} completed, "
                  f"{self.counts['failed']} failed, {len(self.leases)} running "
                  f"(leased to their workers for {self.leases.timeout:g} s), "
                  f"{len(self._reissues)} to re-issue, {len(self._continues)} to continue")

    def _append(self, *entries: dict[str, Any]) -> None:
        """Append ``entries`` to the state log (in order; on disk before the call that made
        them returns, see :func:`_committed`), then the records among them to
        ``trials.jsonl``, which follows the log (a resume rewrites it whole)."""
        if self.log is None:
            return
        self.log.append(*entries, sync=False)  # forced to disk when the call returns
        text = "".join(record_line(e["record"]) for e in entries if e["kind"] == "record")
        if text:
            fd = os.open(os.path.join(self.run_dir, TRIALS_FILE),
                         os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                view = memoryview(text.encode())
                while view:
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)

    def _log_end(self, record: dict[str, Any], holder: str) -> None:
        """The trial's one ``trial_end``, logged before the oracle hears of it."""
        self._append({"kind": "record", "holder": holder, "record": record})
        self._logged_ends[record["trial_id"]] = (record, holder)
        self._end_order.append(record["trial_id"])

    def _mark_dirty(self) -> None:
        self._dirty = True

    def _save_soon(self) -> None:
        """After a lease expiry: the whole state to disk now, or at the next tick if coalesced."""
        if self._coalescing:
            self._dirty = True
            self._last_save = float("-inf")
        else:
            self.oracle.save()

    def _project(self) -> str:
        return os.path.join(str(self.oracle._directory), self.oracle._project_name)

    def _write_state_now(self) -> None:
        """``oracle.json`` as keras-tuner writes it (``get_state()`` as JSON), atomically."""
        with self._lock:
            _replace_file(os.path.join(self._project(), "oracle.json"),
                          json.dumps(self.oracle.get_state()))

    def _write_trial_now(self, trial) -> None:
        with self._lock:
            _replace_file(os.path.join(self._project(), f"trial_{trial.trial_id}",
                                       "trial.json"), json.dumps(trial.get_state()))

    def _mark_trial_dirty(self, trial) -> None:
        self._dirty_trials[trial.trial_id] = trial

    def flush(self, force: bool = False) -> None:
        """Write the oracle's state if calls were coalesced (every ``save_interval``).

        The state is serialised under the lock (a consistent snapshot) and written after
        releasing it, so workers' calls do not wait for the disk. Trial files first, then
        ``oracle.json`` (what keras-tuner's ``save`` writes: ``json.dumps(get_state())``),
        each atomically (temporary file + rename, no fsync).
        """
        with self._flush_lock:
            with self._lock:
                snapshot = self._snapshot_parts(force)
                if snapshot is None and not (self._dirty or self._dirty_trials):
                    return
                files = []
                if (self._dirty or self._dirty_trials) and (
                        force or self.clock() - self._last_save >= self.save_interval):
                    trials, self._dirty_trials = self._dirty_trials, {}
                    project = self._project()
                    files = [(os.path.join(project, f"trial_{t.trial_id}", "trial.json"),
                              json.dumps(t.get_state())) for t in trials.values()]
                    if self._dirty:
                        files.append((os.path.join(project, "oracle.json"),
                                      json.dumps(self.oracle.get_state())))
                    self._dirty = False
                    self._last_save = self.clock()
            for path, text in files:
                _replace_file(path, text)
            if snapshot is not None:
                self.oracle.write_snapshot(snapshot)

    def freeze_heap(self, interval: float = FREEZE_SECONDS, trials: int = FREEZE_TRIALS) -> None:
        """Every ``interval`` seconds, or once ``trials`` more trials have ended, move the
        objects alive now out of reach of Python's cyclic garbage collector (``gc.freeze``,
        constant time). The oracle's trials and the log's entries live as long as the search;
        without this every full collection walks all of them, a pause of all threads that
        grows with the search (0.86 s at 10,000 ASHA trials, ``benchmark.oracle_latency``);
        with it a collection walks what the last few trials left. Objects freed by reference
        counting are freed as ever; a reference cycle that became garbage only after a freeze
        is not reclaimed (a leak, not measured; the chief's calls make their garbage young)."""
        now = self.clock()
        ended = len(self._end_order)
        if now - self._last_freeze >= interval or ended - self._ends_at_freeze >= trials:
            gc.freeze()
            self._last_freeze, self._ends_at_freeze = now, ended

    def _snapshot_parts(self, force: bool):
        """A journaled oracle's snapshot, if one is due (or ``force`` and the journal grew):
        the part that reads its state, taken under the lock; written by :meth:`flush` after
        releasing it. Calls wait only for the state without its trials to be serialised
        (about 1.3 MB of JSON, 30-75 ms at 10,000 trials); the trials' texts were cached when
        they ended, and joining them and the disk write happen outside the lock."""
        oracle = self.oracle
        if not getattr(oracle, "background_snapshots", False):
            return None
        return oracle.snapshot_parts() if oracle.snapshot_due(any_change=force) else None

    # --- the calls workers make ---------------------------------------------------------------

    def _seen(self, worker: str) -> None:
        _, search = parse_tuner_id(worker)
        if search != self.search_id:
            raise PermissionError(f"worker {worker} belongs to search {search!r}; this chief "
                                  f"serves search {self.search_id!r}")
        now = self.clock()
        self._last_seen[worker] = now
        self._last_call = now

    def hello(self, worker: str) -> dict[str, Any]:
        with self._lock:
            self._seen(worker)
            self.leases.renew(worker)
            return {"search_id": self.search_id, "objective": self.objective.name,
                    "direction": getattr(self.objective, "direction", "min"),
                    "lease_timeout": self.leases.timeout,
                    "leases": [lease.trial_id for lease in self.leases.held_by(worker)]}

    def heartbeat(self, worker: str, trial_id: str | None = None,
                  progress: int | None = None) -> dict[str, Any]:
        """Renew ``worker``'s leases; ``lost`` is True if it runs a trial it no longer holds.

        ``progress``: the worker's progress counter (batches or epochs done); a trial whose
        counter does not move for ``stall_timeout`` seconds is failed and re-issued.
        """
        with self._lock:
            self._seen(worker)
            held = self.leases.renew(worker)
            lost = trial_id is not None and str(trial_id) not in held
            if progress is not None and not lost and trial_id is not None:
                self.leases.advance(str(trial_id), int(progress))
            return {"leases": held, "lost": lost, "wind_down": self._winding.is_set()}

    @_committed
    def create_trial(self, worker: str) -> dict[str, Any]:
        with self._lock:
            self._seen(worker)  # expiry is swept by serve() every tick, not per call
            self._standby.pop(worker, None)
            held = self.leases.held_by(worker)
            if held:  # a retried call whose reply was lost: the same trial again
                held[0].renewed = self.clock()
                return self._running(held[0])
            if self._winding.is_set():  # the wall-time signal: no new work in this job
                self._told_stopped.add(worker)
                return {"status": STOPPED}
            if self.aborted is None and self._continues:
                return self._running(self._continue(worker))
            if self.aborted is None and self._reissues and not self.oracle._retry_queue:
                return self._running(self._reissue(worker))
            if self.aborted is None and not self._oracle_stopped:
                if self._budget_spent():
                    self._oracle_stopped = True
                    self.stop_reason = "node_hour_budget"
                    used = (self.budget.used() if self.budget is not None
                            else self.node_hours_used())
                    self._say(f"node-hour budget spent: {used:.4f} of "
                              f"{self.node_hour_budget:g}; no new trials")
                else:
                    with _unlocked_on_error(self.oracle):
                        trial = self.oracle.create_trial(worker)
                    if trial.status == RUNNING:
                        return self._running(self._hand_out(trial, worker))
                    if trial.status == IDLE:
                        return {"status": IDLE}
                    self._oracle_stopped = True
                    self.stop_reason = stop_reason(self.oracle)
            # No new trials: keep one worker on standby while others run (re-issues may come).
            now = self.clock()
            standby = [w for w, t in self._standby.items() if now - t < self.leases.timeout]
            if self.aborted is None and (self._reissues or (len(self.leases) and not standby)):
                self._standby[worker] = now
                return {"status": IDLE}
            self._told_stopped.add(worker)
            return {"status": STOPPED}

    def update_trial(self, worker: str, trial_id: str, metrics: dict[str, float],
                     step: int = 0) -> dict[str, Any]:
        with self._lock:
            self._seen(worker)
            try:
                lease = self.leases.check(str(trial_id), worker)
            except LeaseError as exc:
                return {"status": STOPPED, "lost": str(exc)}
            metrics = {str(k): float(v) for k, v in dict(metrics).items()}
            with _unlocked_on_error(self.oracle):
                trial = self.oracle.update_trial(str(trial_id), metrics, step=step)
            lease.metrics, lease.step = metrics, int(step)
            lease.progressed = self.clock()  # an epoch reported is progress
            return {"status": trial.status, "wind_down": self._winding.is_set()}

    def record(self, worker: str, trial_id: str, event: str,
               fields: dict[str, Any] | None = None) -> dict[str, Any]:
        """A worker's record (``trial_start``, ``epoch``, ``trial_end``; the
        :mod:`tuners.records` schema) for a trial it holds: appended to the state log, then to
        ``trials.jsonl``. Refused for a trial the caller does not hold. A logged
        ``trial_end`` is the trial's end: if the worker then falls silent, the chief ends the
        trial with it (no FAILED end, no re-run); a repeated one is accepted once.

        Only a ``trial_end`` is forced to disk before the reply: ``trial_start`` and ``epoch``
        records change no state and ride with the next forced write (the log stays a
        prefix: a lost machine can lose its last records, never one before a kept one)."""
        reply = self._record(worker, str(trial_id), event, fields)
        if event == "trial_end" and self.log is not None:
            self.log.sync()
        return reply

    def _record(self, worker: str, trial_id: str, event: str,
                fields: dict[str, Any] | None) -> dict[str, Any]:
        if event not in WORKER_EVENTS:  # a suspend is the chief's, through GiveBack
            raise ValueError(f"Record: event {event!r} is not one of {WORKER_EVENTS}")
        fields = dict(fields or {})
        with self._lock:
            self._seen(worker)
            logged = self._logged_ends.get(trial_id)
            if event == "trial_end" and logged is not None:
                if logged[1] == worker:
                    return {"accepted": True}  # a retried call
                return {"accepted": False, "reason": f"trial {trial_id} has ended"}
            try:
                lease = self.leases.check(trial_id, worker)
            except LeaseError as exc:
                return {"accepted": False, "reason": str(exc)}
            if logged is not None:
                return {"accepted": False, "reason": f"trial {trial_id} has ended"}
            record = make_record(event, trial_id, self.search_id, _worker_number(worker),
                                 time.time(), fields)
            if event == "trial_end":
                self._log_end(record, worker)
            else:
                self._append({"kind": "record", "holder": worker, "record": record})
            if event == "epoch":
                lease.progressed = self.clock()  # an epoch recorded is progress
            return {"accepted": True}

    @_committed
    def end_trial(self, worker: str, trial_id: str, status: str,
                  message: str | None = None, metrics: dict[str, float] | None = None,
                  step: int = 0) -> dict[str, Any]:
        """End ``trial_id``; ``metrics`` (with ``step``), if given, are its last update."""
        if status not in END_STATUSES:
            raise ValueError(f"end_trial: status {status!r} is not one of {END_STATUSES}")
        trial_id = str(trial_id)
        with self._lock:
            self._seen(worker)
            lease = self.leases.get(trial_id)
            if lease is None or lease.worker != worker:
                if self._ended_by.get(trial_id) == worker:
                    return {"accepted": True}  # a retried call: it was ended already
                why = ("it is leased to another worker" if lease is not None else
                       "its lease expired or it has ended")
                return {"accepted": False,
                        "reason": f"trial {trial_id} not ended by {worker}: {why}"}
            if metrics:
                self.update_trial(worker, trial_id, metrics, step)
            logged = self._logged_ends.get(trial_id)
            if logged is None:  # the worker recorded no end: the chief writes it
                self._log_end(self._end_record(lease, status, message), worker)
            else:  # the recorded end is the trial's end
                status, message = logged[0]["status"], logged[0].get("error") or message
            self._end_in_oracle(trial_id, status, message)
            self.leases.release(trial_id)
            self._ended_by[trial_id] = worker
            self._node_hours_ended += self._lease_node_hours(lease)
            return {"accepted": True}

    @_committed
    def end_and_create(self, worker: str, trial_id: str, status: str,
                       message: str | None = None, metrics: dict[str, float] | None = None,
                       step: int = 0) -> dict[str, Any]:
        """:meth:`end_trial` and :meth:`create_trial` in one call (one round trip per trial
        for a busy fleet): ``{"end": <end_trial reply>, "next": <create_trial reply>}``."""
        with self._lock:
            end = self.end_trial(worker, trial_id, status, message, metrics, step)
            return {"end": end, "next": self.create_trial(worker)}

    @_committed
    def give_back(self, worker: str, trial_id: str, epoch: int | None = None) -> dict[str, Any]:
        """A worker returns a trial it was given but will not run (it is stopping): the trial
        ends FAILED and its values go to the next worker, as after a lease expiry.

        With ``epoch`` (the wall-time signal: the worker checkpointed the running trial after
        that many epochs) the trial does not end: it is suspended (a ``trial_suspend``
        record) and the next worker to ask, in this job or a resumed one, continues it under
        the same id from that epoch. Neither is a failure."""
        trial_id = str(trial_id)
        with self._lock:
            self._seen(worker)
            lease = self.leases.get(trial_id)
            if lease is None or lease.worker != worker:
                return {"accepted": False,
                        "reason": f"trial {trial_id} is not leased to {worker}"}
            if epoch is not None:
                values = lease.values
                first = max(int(values.get("tuner/initial_epoch", 0) or 0),
                            int(values.get(RESUME_KEY, 0) or 0))
                last = int(values.get("tuner/epochs", self.default_epochs) or 0)
                if not first <= int(epoch) <= last:
                    raise ValueError(f"give_back: epoch {epoch} is outside trial {trial_id}'s "
                                     "epochs")
            self.leases.release(trial_id)
            self._node_hours_ended += self._lease_node_hours(lease)
            if epoch is not None:
                self._suspend(lease, worker, int(epoch))
                return {"accepted": True}
            self._requeue(lease, f"returned unstarted (worker {_worker_number(worker)})")
            self._say(f"trial {trial_id}: returned unstarted by worker "
                      f"{_worker_number(worker)}; its values go to the next worker")
            self._save_soon()
            return {"accepted": True}

    def status(self) -> dict[str, Any]:
        with self._lock:
            return self.progress()

    # --- decisions ----------------------------------------------------------------------------

    def _running(self, lease: Lease) -> dict[str, Any]:
        return {"status": RUNNING, "trial_id": lease.trial_id, "values": lease.values}

    def _budget_spent(self) -> bool:
        if self.budget is not None:
            return self.budget.spent()
        return bool(self.node_hour_budget) and self.node_hours_used() >= self.node_hour_budget

    def wind_down(self) -> None:
        """The wall-time signal (SIGUSR1 before the SLURM time limit): no new trials; running
        trials are checkpointed at the end of their current epoch and given back (heartbeat
        and update replies carry ``wind_down``); :meth:`serve` returns "suspended" once none
        runs. Only sets a flag, so a signal handler may call it."""
        self._winding.set()

    def _suspend(self, lease: Lease, worker: str, epoch: int) -> None:
        """Log the ``trial_suspend`` record (durable before :meth:`give_back` answers, like
        every logged decision), then take the trial from its worker: it stays RUNNING in the
        oracle, held by nobody, and waits to be continued. A resume finds it in the log."""
        wall = max(0.0, time.time() - lease.wall_start)
        self._append({"kind": "record", "holder": worker, "record": make_record(
            "trial_suspend", lease.trial_id, self.search_id, _worker_number(worker),
            time.time(), dict(epoch=epoch, reason="wall_time", wall_seconds=wall,
                              nodes=self.nodes_per_worker, ranks=self.ranks_per_worker,
                              node_hours=node_hours(wall, self.nodes_per_worker)))})
        for tuner_id, trial in list(self.oracle.ongoing_trials.items()):
            if trial.trial_id == lease.trial_id:
                del self.oracle.ongoing_trials[tuner_id]  # still RUNNING, held by nobody
        self._continues.append({"trial_id": lease.trial_id, "epoch": epoch})
        self._say(f"trial {lease.trial_id}: suspended after epoch {epoch} by worker "
                  f"{_worker_number(worker)}; it continues from there")
        self._save_soon()

    def _continue(self, worker: str) -> Lease:
        """Hand a suspended trial (same id) to ``worker``, to continue from its epoch: logged
        as a hand-out whose values carry ``tuner/resume_epoch``, then leased."""
        item = self._continues.pop(0)
        trial = self.oracle.trials[item["trial_id"]]
        lease = self._hand_out(trial, worker, {**trial.hyperparameters.values,
                                               RESUME_KEY: int(item["epoch"])})
        self.oracle.ongoing_trials[worker] = trial
        self._save_soon()
        self._say(f"trial {trial.trial_id}: continues from epoch {item['epoch']} on {worker}")
        return lease

    def _reissue(self, worker: str) -> Lease:
        """Create a new oracle trial with the values of a trial whose lease expired."""
        item = self._reissues[0]
        values = dict(item["values"])
        oracle = self.oracle
        cap = oracle.max_trials

        def rerun(trial_id):
            if hasattr(oracle, "epochs_allotted"):
                # A re-run trains its epochs again: they count against the epoch budget. The
                # journaling oracle records this as the call's decision, so a reload agrees.
                first = int(values.get("tuner/initial_epoch", 0) or 0)
                last = int(values.get("tuner/epochs", first) or first)
                oracle.epochs_allotted += max(0, last - first)
                if hasattr(oracle, "_decision"):
                    oracle._decision = {"rerun": item["origin"]}
            return {"status": RUNNING, "values": {**values, RERUN_KEY: item["origin"]}}

        oracle.populate_space = rerun
        if cap:
            oracle.max_trials = cap + 1  # a re-run does not use up the trial budget
        try:
            with _unlocked_on_error(oracle):
                trial = oracle.create_trial(worker)
        except BaseException:
            oracle.max_trials = cap
            raise
        finally:
            del oracle.populate_space
        if trial.status != RUNNING:
            oracle.max_trials = cap
            raise RuntimeError(f"re-issuing trial {item['origin']} failed: the oracle "
                               f"answered {trial.status}")
        self._reruns += 1
        self._reissues.pop(0)
        self._say(f"trial {trial.trial_id}: re-runs the values of trial {item['origin']} "
                  f"on {worker}")
        return self._hand_out(trial, worker)

    def _hand_out(self, trial, worker: str, values: dict | None = None) -> Lease:
        """Log that ``trial`` (just created by the oracle, or a suspended one continued with
        ``values``) goes to ``worker``, then lease it. A crash before the log leaves a new
        trial RUNNING in the oracle only: a resume re-issues it."""
        values = dict(trial.hyperparameters.values if values is None else values)
        self._append({"kind": "create", "trial_id": trial.trial_id, "holder": worker,
                      "values": values})
        return self.leases.grant(trial.trial_id, worker, values)

    def _end_in_oracle(self, trial_id: str, status: str, message: str | None,
                       count_failure: bool = True, metrics: dict | None = None,
                       step: int = 0) -> None:
        """End the trial in the oracle; ``count_failure=False`` for ends that say nothing
        about the configuration (a lost worker): they neither count nor reset the failure run.
        ``metrics``: a last update first (a replayed end whose update the oracle missed)."""
        if metrics and self.objective.name in metrics:
            with _unlocked_on_error(self.oracle):
                self.oracle.update_trial(trial_id, {k: float(v) for k, v in metrics.items()},
                                         step=step)
        trial = self.oracle.trials[trial_id]
        trial.status = status
        trial.message = message
        with _unlocked_on_error(self.oracle):
            self.oracle.end_trial(trial)
        if trial.status == COMPLETED:
            self.counts["completed"] += 1
            self._consider_best(trial)
        else:
            self.counts["failed"] += 1
        if not count_failure or trial.status == RUNNING:  # RUNNING: queued for a retry
            return
        if trial.status != FAILED:
            self._consecutive_failures = 0
            return
        self._consecutive_failures += 1
        limit = self.max_consecutive_failures
        if limit and self._consecutive_failures >= limit:
            self._abort(f"{self._consecutive_failures} consecutive trials failed (limit "
                        f"--search.max_consecutive_failed_trials={limit}); the last: "
                        + " ".join(str(message or "no message").split()))
            self._save_soon()

    def _count_consecutive_failures(self) -> int:
        """The run of configuration failures at the end of the logged ends (resume): trials
        the chief ended for a lost worker are skipped, as they were when they ended."""
        count = 0
        for trial_id in reversed(self._end_order):
            record = self._logged_ends[trial_id][0]
            if is_lost_worker_end(record.get("error")):
                continue
            if record["status"] != FAILED:
                break
            count += 1
        return count

    def _abort(self, reason: str) -> None:
        if self.aborted is None:
            self.aborted = reason
            self._say(f"search stopped: {reason}")

    def _consider_best(self, trial) -> None:
        score = getattr(trial, "score", None)
        if score is None or not math.isfinite(float(score)):
            return
        signed = self._sign * float(score)
        if self.best is None or signed < self.best[0]:
            self.best = (signed, trial.trial_id)

    # --- leases -------------------------------------------------------------------------------

    @_committed
    def expire(self) -> list[str]:
        """Handle expired leases now; the trial ids whose lease expired."""
        with self._lock:
            return self._expire_locked()

    def _expire_locked(self) -> list[str]:
        expired = self.leases.pop_expired()
        stalled = self.leases.pop_stalled(self.stall_timeout) if self.stall_timeout else []
        for lease in stalled + expired:
            self._node_hours_ended += self._lease_node_hours(lease)
            worker_id = _worker_number(lease.worker)
            logged = self._logged_ends.get(lease.trial_id)
            if logged is not None:  # the worker recorded its end, then went silent: its word
                record, holder = logged
                self._end_in_oracle(lease.trial_id, record["status"], record.get("error"))
                self._ended_by[lease.trial_id] = holder
                self._say(f"trial {lease.trial_id}: worker {worker_id} went silent after "
                          f"recording it {record['status']}")
                continue
            if lease in stalled:  # alive (heartbeats) but stuck
                error = f"no progress for {self.stall_timeout:g} s (worker {worker_id})"
                why = error
            else:
                error = f"lease expired (worker {worker_id})"
                why = f"{error} after {self.leases.timeout:g} s without a heartbeat"
            self._requeue(lease, error)
            self.counts["expired"] += 1
            self._say(f"trial {lease.trial_id}: {why}; its values go to the next worker")
        if stalled or expired:
            self._save_soon()
        return [lease.trial_id for lease in stalled + expired]

    def _requeue(self, lease: Lease, error: str) -> None:
        """End a trial whose worker will not finish it FAILED (``error``): logged first, then
        the oracle; its values are queued for the next worker (unless the search was
        aborted)."""
        self._log_end(self._end_record(lease, FAILED, error), "chief")
        if lease.trial_id in self.oracle.trials:
            self._end_in_oracle(lease.trial_id, FAILED, error, count_failure=False)
        self._ended_by[lease.trial_id] = "chief"
        if self.aborted is None:
            self._reissues.append({"origin": lease.trial_id,
                                   "values": _without_rerun(lease.values)})

    def _lease_node_hours(self, lease: Lease) -> float:
        return node_hours(max(0.0, self.clock() - lease.granted), self.nodes_per_worker)

    def _end_record(self, lease: Lease, status: str, error: str | None) -> dict[str, Any]:
        """The ``trial_end`` record the chief writes for a trial whose worker recorded none
        (a lost worker, or a worker that keeps no records): its last reported metrics."""
        values = lease.values
        initial = int(values.get("tuner/initial_epoch", 0) or 0)
        parent = values.get("tuner/trial_id")
        rung = values.get("tuner/rung", values.get("tuner/round"))
        wall = max(0.0, time.time() - lease.wall_start)
        return make_record(
            "trial_end", lease.trial_id, self.search_id, _worker_number(lease.worker),
            time.time(), dict(
                status=status, parent_id=str(parent) if parent not in (None, "") else None,
                hyperparameters={k: v for k, v in values.items()
                                 if not k.startswith(RESERVED_PREFIX)},
                rung=None if rung is None else int(rung), initial_epoch=initial,
                epochs=initial if lease.step is None else lease.step,
                metrics=dict(lease.metrics), objective=self.objective.name,
                start_time=lease.wall_start, wall_seconds=wall, nodes=self.nodes_per_worker,
                ranks=self.ranks_per_worker, node_hours=node_hours(wall, self.nodes_per_worker),
                error=error, target_epochs=int(values.get("tuner/epochs", self.default_epochs))))

    # --- progress -----------------------------------------------------------------------------

    def node_hours_used(self) -> float:
        """Node-hours of the trials: ended ones plus the running ones so far."""
        running = sum(self._lease_node_hours(lease) for lease in self.leases.leases())
        return self._node_hours_past + self._node_hours_ended + running

    def suspended(self) -> bool:
        """The wall-time signal came and no trial runs any more."""
        with self._lock:
            return self._winding.is_set() and not len(self.leases)

    def finished(self) -> bool:
        """The oracle has no more trials, nothing runs and nothing waits to be re-issued."""
        with self._lock:
            return self._finished_locked()

    def progress(self) -> dict[str, Any]:
        used = self.node_hours_used()
        budget: dict[str, Any] = {}
        if self.budget is not None and self.node_hour_budget:
            budget["node_hours_left"] = self.budget.left()  # allocated node-hours
        elif self.node_hour_budget:
            budget["node_hours_left"] = max(0.0, self.node_hour_budget - used)
        if getattr(self.oracle, "max_trials", None):
            budget["trials_left"] = max(0, self.oracle.max_trials - len(self.oracle.trials))
        epoch_budget = getattr(self.oracle, "epoch_budget", None)
        if epoch_budget:
            budget["epochs_left"] = max(0, epoch_budget - self.oracle.epochs_allotted)
        best = None
        if self.best is not None:
            best = {"trial_id": self.best[1], "objective": self.objective.name,
                    "value": self._sign * self.best[0]}
        state = ("aborted" if self.aborted else "finished" if self._finished_locked()
                 else "running")
        return {"search_id": self.search_id, "time": time.time(),
                "elapsed_seconds": self.clock() - self._started, "state": state,
                "completed": self.counts["completed"], "failed": self.counts["failed"],
                "running": len(self.leases), "lease_expired": self.counts["expired"],
                "to_reissue": len(self._reissues), "trials": len(self.oracle.trials),
                "best": best, "node_hours_used": used, "budget_left": budget,
                "workers_seen": len(self._last_seen), "error": self.aborted}

    def _finished_locked(self) -> bool:
        stopped = self._oracle_stopped or self.aborted is not None
        return stopped and not len(self.leases) and not (
            (self._reissues or self._continues) and self.aborted is None)

    def progress_line(self, info: dict[str, Any]) -> str:
        best = info["best"]
        best_text = (f"best {best['objective']} {best['value']:.5g} (trial {best['trial_id']})"
                     if best else "no completed trial yet")
        left = ", ".join(f"{v:.4g} {k.removesuffix('_left').replace('_', '-')}"
                         for k, v in info["budget_left"].items()) or "no budget set"
        return (f"[chief {info['elapsed_seconds']:.0f} s] trials: {info['completed']} done, "
                f"{info['running']} running, {info['failed']} failed"
                f"{', %d to re-issue' % info['to_reissue'] if info['to_reissue'] else ''} | "
                f"{best_text} | node-hours {info['node_hours_used']:.4f} used | left: {left}")

    def report_progress(self, print_line: bool = True) -> dict[str, Any]:
        with self._lock:
            info = self.progress()
        if self.run_dir:
            atomic_write_text(os.path.join(self.run_dir, PROGRESS_FILE),
                              json.dumps(info, indent=1) + "\n")
        if print_line:
            self._say(self.progress_line(info))
        return info

    def _say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # --- serving ------------------------------------------------------------------------------

    def start(self, address: str = "127.0.0.1:0", tls_cert: str | None = None,
              tls_key: str | None = None) -> int:
        """Start the gRPC server on ``HOST:PORT`` (port 0: a free one); the bound port.

        ``tls_cert`` and ``tls_key`` (PEM files): serve over TLS, so the secret and the
        results are not readable on the network (workers then need the certificate, see
        :class:`tuners.distributed.worker.ChiefClient`); without them the port is plain TCP and the secret
        only keeps out callers who cannot read the run directory.
        """
        host, port = split_address(address)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.threads,
                                                        thread_name_prefix="chief-rpc"),
                             options=[("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((_generic_handler(self),))
        try:
            if tls_cert or tls_key:
                if not (tls_cert and tls_key):
                    raise ChiefError("TLS needs both a certificate and its key")
                with open(tls_key, "rb") as fh:
                    key = fh.read()
                with open(tls_cert, "rb") as fh:
                    cert = fh.read()
                credentials = grpc.ssl_server_credentials(((key, cert),))
                bound = server.add_secure_port(f"{host}:{port}", credentials)
            else:
                bound = server.add_insecure_port(f"{host}:{port}")
        except RuntimeError:
            bound = 0
        if not bound:
            raise ChiefError(f"cannot listen on {host}:{port}: port {port} is in use (or "
                             f"{host} is not an address of this machine); choose another "
                             "port in --chief_address")
        server.start()
        self._server, self.port = server, bound
        with self._lock:  # leases a resumed chief gave back count from when it can be reached
            now = self.clock()
            for lease in self.leases.leases():
                lease.renewed = lease.progressed = now
        return bound

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving and write the final state (idempotent)."""
        self._stop.set()
        if self._server is not None:
            self._server.stop(grace).wait(grace + 5.0)
            self._server = None
        self.flush(force=True)
        if self.log is not None:
            self.log.sync()
            self.log.close()  # no write after the end; a resume opens it again

    def request_stop(self) -> None:
        """Make :meth:`serve` return at its next tick (e.g. from a signal handler)."""
        self._stop.set()

    def serve(self, address: str = "127.0.0.1:0", tick: float = 0.2,
              drain: float | None = None) -> str:
        """Serve until the search is finished; "finished", "aborted", "stopped" or "abandoned".

        After the search finished it keeps answering STOPPED for up to ``drain`` seconds
        (default: the lease timeout) until every worker heard from recently was told so.
        """
        if self._server is None:
            self.start(address)
        outcome = "stopped"
        last_progress = self.clock()
        try:
            while not self._stop.is_set():
                self.expire()
                self.flush()
                self.freeze_heap()
                now = self.clock()
                if self.progress_interval and now - last_progress >= self.progress_interval:
                    self.report_progress()
                    last_progress = now
                if self.finished() or self.suspended():
                    outcome = ("aborted" if self.aborted else "finished" if self.finished()
                               else "suspended")
                    self._drain(drain if drain is not None else self.leases.timeout, tick)
                    break
                if self.worker_wait and now - self._last_call > self.worker_wait:
                    outcome = "abandoned"
                    self._say(f"no worker has called for {self.worker_wait:g} s; the search "
                              "is not finished (restart the chief on this run directory to "
                              "resume it)")
                    break
                self._stop.wait(tick)
        finally:
            self.stop()
            self.report_progress(print_line=True)
        return outcome

    def _drain(self, seconds: float, tick: float) -> None:
        deadline = self.clock() + seconds
        while self.clock() < deadline and not self._stop.is_set():
            with self._lock:
                now = self.clock()
                waiting = [w for w, t in self._last_seen.items()
                           if w not in self._told_stopped and now - t < self.leases.timeout]
            if not waiting:
                return
            self._stop.wait(tick)


@contextlib.contextmanager
def _unlocked_on_error(oracle):
    """keras-tuner's ``@synchronized`` keeps its lock when the method raises (no ``finally``):
    every later call from another thread would then block forever. Release it on error."""
    try:
        yield
    except BaseException:
        if kt_oracle.THREADS[oracle] == threading.current_thread().name:
            kt_oracle.THREADS[oracle] = None
            kt_oracle.LOCKS[oracle].release()
        raise


def _replace_file(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (no fsync)."""
    fault_point("oracle.save")
    atomic_write_text(path, text, fsync=False)
    fault_point("oracle.save+")


def _without_rerun(values: dict) -> dict:
    return {k: v for k, v in values.items() if k not in (RERUN_KEY, RESUME_KEY)}


def _suspended(entries) -> dict[str, int]:
    """From the state log: the trials whose last entry is a ``trial_suspend`` (given back at
    the wall-time signal; neither handed out again nor ended since), {trial id: epoch} in the
    order they were suspended."""
    out: dict[str, int] = {}
    for entry in entries:
        if entry.get("kind") == "create":
            out.pop(entry["trial_id"], None)
        elif entry.get("kind") == "record" and entry["record"]["event"] == "trial_end":
            out.pop(entry["record"]["trial_id"], None)
        elif entry.get("kind") == "record" and entry["record"]["event"] == "trial_suspend":
            out[entry["record"]["trial_id"]] = int(entry["record"]["epoch"])
    return out


def _worker_number(tuner_id: str) -> str:
    try:
        return parse_tuner_id(tuner_id)[0]
    except ValueError:
        return str(tuner_id)


_CALLS = {"Hello": "hello", "CreateTrial": "create_trial", "UpdateTrial": "update_trial",
          "Record": "record", "EndTrial": "end_trial", "EndAndCreate": "end_and_create",
          "GiveBack": "give_back", "Heartbeat": "heartbeat", "Status": "status"}


def _generic_handler(chief: Chief):
    def make(name: str):
        method = getattr(chief, _CALLS[name])

        def call(request: bytes, context: grpc.ServicerContext) -> bytes:
            metadata = dict(context.invocation_metadata())
            # The secret first, in constant time; a refusal names neither the search nor the
            # secret (the search id alone is public, e.g. a SLURM job id).
            given = metadata.get(SECRET_KEY, "")
            if not hmac.compare_digest(given.encode() if isinstance(given, str) else b"",
                                       chief._secret_bytes):
                context.abort(grpc.StatusCode.UNAUTHENTICATED, REFUSED)
            search = metadata.get(SEARCH_ID_KEY)
            if search != chief.search_id:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                              f"wrong search: the caller belongs to search {search!r:.80}, "
                              "this chief serves another one")
            session = metadata.get(SESSION_KEY) or None
            if session is not None and not _SESSION.match(session):
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"{name}: session id is not 16 to 64 hex digits")
            try:
                args = json.loads(request.decode() or "{}")
                if not isinstance(args, dict):
                    raise TypeError("the request is not a JSON object")
                if "trial_id" in args and args["trial_id"] is not None:
                    args["trial_id"] = check_trial_id(args["trial_id"])
                if "worker" in args:
                    parse_tuner_id(args["worker"])
                    if "#" in str(args["worker"]):
                        raise ValueError("a worker id may not carry a session; send it as "
                                         "metadata")
                    args["worker"] = holder_id(args["worker"], session)
                result = method(**args)
            except PermissionError as exc:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"wrong search: {exc}")
            except (ValueError, KeyError, TypeError) as exc:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"{name}: {type(exc).__name__}: {exc}")
            except Exception as exc:  # noqa: BLE001 - reported to the caller, chief goes on
                context.abort(grpc.StatusCode.INTERNAL, f"{name}: {type(exc).__name__}: {exc}")
            return json.dumps(result).encode()

        return grpc.unary_unary_rpc_method_handler(call)

    return grpc.method_handlers_generic_handler(SERVICE, {name: make(name) for name in METHODS})
