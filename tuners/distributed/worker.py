"""The worker side of a distributed search: a client of the chief (:mod:`tuners.distributed.chief`).

:class:`ChiefClient` stands in for the oracle on rank 0 of a worker group (the
:class:`tuners.horovod_tuner.HorovodTuner` calls ``create_trial`` / ``update_trial`` /
``end_trial`` on it as on a local oracle) and adds what a long search on many nodes needs:

- a heartbeat thread renewing the group's lease every ``heartbeat_interval`` seconds, so the
  chief can tell a slow trial from a dead worker;
- reconnects: a call that finds the chief unreachable is retried with exponential backoff
  (``backoff_initial`` doubling up to ``backoff_max``) for ``retry_for`` seconds, then
  :class:`ChiefUnreachable` names the address. A restarted chief is found again this way;
  every call is safe to repeat (the chief answers a repeated ``create_trial`` with the same
  trial, a repeated ``end_trial`` with "accepted");
- the search's secret (``secret`` or ``secret_file``, the chief's ``<run_dir>/chief.secret``),
  the search id and a random per-process session id on every call (gRPC metadata); a chief
  that refuses the secret raises :class:`NotAuthorised`, one of another search
  :class:`WrongSearch`; trial ids the chief sends are checked before any use;
- records over RPC: workers never write ``trials.jsonl``. Rank 0 sends each record
  (``trial_start``, ``epoch``, ``trial_end``) to the chief (``Record``,
  :meth:`ChiefClient.record`), the single writer of the search state, which appends it to its
  state log and refuses it for a trial the caller no longer holds (its lease expired: the
  chief already ended it FAILED and re-issued its values), so no trial is recorded twice.
  :class:`RemoteRecorder` stands in for a :class:`tuners.records.TrialRecorder`;
- the SLURM wall-time signal: the chief's heartbeat and update replies say ``wind_down`` once
  it got SIGUSR1 (or this process did, :meth:`ChiefClient.wind_down_on`); the group then
  checkpoints the running trial at the end of its current epoch and gives it back with that
  epoch (:meth:`ChiefClient.suspend`; the chief logs a ``trial_suspend`` record), and the next
  worker continues it under the same id (its values carry ``tuner/resume_epoch``);
- one round trip per trial for busy fleets (``prefetch``): ``end_trial`` may carry the trial's
  last metrics, and the same call (``EndAndCreate``) brings the worker's next trial, which
  ``create_trial`` then returns without calling; a worker that stops with such a trial unused
  gives it back (``GiveBack``: the chief re-issues its values at once).

:func:`run_sleep_worker` is a stand-in worker whose "training" is a sleep, used by the fleet
benchmark (:mod:`benchmark.fleet_busy`) and the fault tests; ``python -m tuners.distributed.worker`` runs
one as a process. This module imports no TensorFlow.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import re
import secrets
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import grpc

from tuners.faults import fault_point
from tuners.records import RESUME_KEY, json_default

SERVICE = "mlpf.hpo.Chief"  # must match tuners.distributed.chief.SERVICE
METHODS = ("Hello", "CreateTrial", "UpdateTrial", "Record", "EndTrial", "EndAndCreate",
           "GiveBack", "Heartbeat", "Status")  # must match tuners.distributed.chief.METHODS
SEARCH_ID_KEY = "x-mlpf-search-id"  # these four must match tuners.distributed.chief
SECRET_KEY = "x-mlpf-secret"
SESSION_KEY = "x-mlpf-session"
SECRET_FILE = "chief.secret"
TRIAL_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
RUNNING, IDLE, STOPPED = "RUNNING", "IDLE", "STOPPED"
_RETRY_CODES = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ChiefUnreachable(ConnectionError):
    """The chief did not answer within the retry period."""


class WrongSearch(RuntimeError):
    """The chief at the address serves another search."""


class NotAuthorised(WrongSearch):
    """The chief refused the secret (missing, wrong, or another search's)."""


class ChiefCallError(RuntimeError):
    """The chief refused a call (bad arguments, an oracle error)."""


def read_secret_file(path: str) -> str:
    """The search secret the chief wrote (mode 0600); PermissionError if others may read it."""
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:
        raise PermissionError(f"{path}: mode {mode:o} lets other users read the search "
                              "secret; it must be 600")
    with open(path) as fh:
        return fh.read().strip()


def checked_trial_id(trial_id: Any) -> str:
    """A trial id from the chief, checked before it is used in any path."""
    text = str(trial_id)
    if not TRIAL_ID.match(text):
        raise ChiefCallError(f"the chief sent a malformed trial id {text!r:.80}")
    return text


def tuner_id(worker_id: str | int, search_id: str) -> str:
    """``worker<N>@<search id>``, the id a worker group asks the oracle with."""
    return f"worker{worker_id}@{search_id}"


@dataclasses.dataclass
class Values:
    """Holds a trial's values like ``keras_tuner.HyperParameters`` does (``.values``)."""

    values: dict


@dataclasses.dataclass
class RemoteTrial:
    """A trial as the chief describes it; what the Horovod tuner reads of a keras-tuner Trial."""

    trial_id: str | None
    status: str
    hyperparameters: Values
    message: str | None = None
    score: float | None = None


@dataclasses.dataclass(frozen=True)
class Objective:
    name: str
    direction: str = "min"


class _NoSecretYet(Exception):
    """The chief has not written its secret file yet (it is starting): retried."""

    @staticmethod
    def as_rpc_error(details: str) -> grpc.RpcError:
        error = grpc.RpcError()
        error.code = lambda: grpc.StatusCode.UNAVAILABLE
        error.details = lambda: details
        return error


class ChiefClient:
    """Talks to the chief for one worker group (use it on rank 0 only).

    Args:
        address: ``HOST:PORT`` of the chief.
        worker_id: this group's number (``--worker_id``).
        search_id: the search this group belongs to (``--search_id``).
        heartbeat_interval: seconds between heartbeats (started by the first trial).
        retry_for: seconds to keep retrying an unreachable chief before giving up.
        backoff_initial, backoff_max: the first and the largest wait between retries.
        rpc_timeout: seconds one call may take.
        objective: the search objective (default: what the chief says in ``hello``).
        log: callable taking a message line (default: print to stderr).
        secret: the search's secret (sent on every call), or
        secret_file: where to read it (``<run_dir>/chief.secret``); read at the first call,
            and retried like an unreachable chief while the chief has not written it yet.
        tls_ca: PEM certificate(s) to check a chief serving TLS against (None: plain TCP).
    """

    def __init__(self, address: str, worker_id: str | int, search_id: str, *,
                 heartbeat_interval: float = 2.0, retry_for: float = 300.0,
                 backoff_initial: float = 0.5, backoff_max: float = 15.0,
                 rpc_timeout: float = 60.0, objective: Any = None,
                 log: Callable[[str], None] | None = None, prefetch: bool = True,
                 secret: str | None = None, secret_file: str | None = None,
                 tls_ca: str | None = None,
                 on_lost: Callable[[str], None] | None = None):
        if not search_id or "@" in str(search_id) or "#" in str(search_id):
            raise ValueError(f"--search_id={search_id!r}: must be non-empty without '@', '#'")
        self.secret = secret
        self.secret_file = secret_file
        self.session = secrets.token_hex(16)  # this process's claim on its leases
        self.progress = 0  # batches/epochs done, sent with every heartbeat (stall check)
        self.on_lost = on_lost  # called (heartbeat thread) when the running trial is lost
        self.lost_grace = 2.0 * float(heartbeat_interval)  # ... and no progress after that
        self._lost_seen: tuple[str, int, float] | None = None
        self.address = address
        self.worker_id = str(worker_id)
        self.search_id = str(search_id)
        self.tuner_id = tuner_id(worker_id, search_id)
        self.heartbeat_interval = float(heartbeat_interval)
        self.retry_for = float(retry_for)
        self.backoff_initial = float(backoff_initial)
        self.backoff_max = float(backoff_max)
        self.rpc_timeout = float(rpc_timeout)
        self._objective = objective
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        # gRPC's own reconnect backoff grows to 120 s by default; keep it within ours so a
        # restarted chief is found again promptly.
        options = [
            ("grpc.initial_reconnect_backoff_ms", int(1000 * self.backoff_initial) or 100),
            ("grpc.min_reconnect_backoff_ms", int(1000 * self.backoff_initial) or 100),
            ("grpc.max_reconnect_backoff_ms", int(1000 * self.backoff_max) or 1000)]
        if tls_ca:
            with open(tls_ca, "rb") as fh:
                credentials = grpc.ssl_channel_credentials(root_certificates=fh.read())
            self._channel = grpc.secure_channel(address, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(address, options=options)
        self._stubs = {name: self._channel.unary_unary(f"/{SERVICE}/{name}")
                       for name in METHODS}
        self.prefetch = bool(prefetch)
        self._next: dict[str, Any] | None = None  # the chief's answer to our next create
        self._lock = threading.Lock()
        self._current: str | None = None
        self._lost: set[str] = set()
        self._closed = threading.Event()
        self._heartbeat: threading.Thread | None = None
        self._last_reply = float("-inf")
        self.winding_down = threading.Event()  # the wall-time signal: suspend after this epoch
        self.heartbeats_sent = 0
        self._progress_sent = 0
        self.retries = 0

    # --- plumbing -----------------------------------------------------------------------------

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        if self.secret is None and self.secret_file:
            try:
                self.secret = read_secret_file(self.secret_file)
            except FileNotFoundError:
                raise _NoSecretYet(f"no secret file {self.secret_file} yet") from None
        return ((SEARCH_ID_KEY, self.search_id), (SECRET_KEY, self.secret or ""),
                (SESSION_KEY, self.session))

    def _call(self, method: str, retry: bool = True, timeout: float | None = None,
              **args: Any) -> dict[str, Any]:
        request = json.dumps(args).encode()
        delay, first_failure, attempts = self.backoff_initial, None, 0
        while True:
            attempts += 1
            try:
                reply = self._stubs[method](request, timeout=timeout or self.rpc_timeout,
                                            metadata=self._metadata())
                self._last_reply = time.monotonic()
                if first_failure is not None:
                    self.log(f"worker {self.worker_id}: chief at {self.address} reachable "
                             f"again after {time.monotonic() - first_failure:.1f} s")
                answer = json.loads(reply.decode())
                if isinstance(answer, dict) and answer.get("wind_down"):
                    self.winding_down.set()
                return answer
            except (grpc.RpcError, _NoSecretYet) as exc:
                if isinstance(exc, _NoSecretYet):
                    exc = _NoSecretYet.as_rpc_error(str(exc))
                code = exc.code()
                if code == grpc.StatusCode.UNAUTHENTICATED:
                    raise NotAuthorised(f"chief at {self.address} refused worker "
                                        f"{self.tuner_id}: {exc.details()}") from None
                if code == grpc.StatusCode.FAILED_PRECONDITION:
                    raise WrongSearch(f"chief at {self.address} refused worker "
                                      f"{self.tuner_id}: {exc.details()}") from None
                if code not in _RETRY_CODES:
                    raise ChiefCallError(f"chief at {self.address}: {method} failed "
                                         f"({code.name}): {exc.details()}") from None
                if not retry or self._closed.is_set():
                    raise ChiefUnreachable(f"chief at {self.address} unreachable "
                                           f"({code.name}): {exc.details()}") from None
                now = time.monotonic()
                if first_failure is None:
                    first_failure = now
                    self.log(f"worker {self.worker_id}: chief at {self.address} unreachable "
                             f"({code.name}); retrying with backoff for {self.retry_for:g} s")
                if now - first_failure + delay > self.retry_for:
                    raise ChiefUnreachable(
                        f"cannot reach the chief at {self.address}: {attempts} attempts over "
                        f"{now - first_failure:.1f} s failed ({code.name}: {exc.details()}); "
                        "is the chief running and is --chief_address right?") from None
                self.retries += 1
                time.sleep(delay)
                delay = min(delay * 2.0, self.backoff_max)

    # --- the oracle interface the Horovod tuner uses ------------------------------------------

    @property
    def objective(self):
        if self._objective is None:
            info = self.hello()
            self._objective = Objective(info["objective"], info.get("direction", "min"))
        return self._objective

    def hello(self) -> dict[str, Any]:
        """Check the chief serves our search (WrongSearch otherwise); its description."""
        return self._call("Hello", worker=self.tuner_id)

    def create_trial(self, tuner_id: str | None = None) -> RemoteTrial:
        reply, self._next = self._next, None
        if reply is None:
            reply = self._call("CreateTrial", worker=self.tuner_id)
        trial_id = reply.get("trial_id")
        trial = RemoteTrial(trial_id=None if trial_id is None else checked_trial_id(trial_id),
                            status=reply["status"],
                            hyperparameters=Values(dict(reply.get("values") or {})))
        if trial.status == RUNNING:
            with self._lock:
                self._current = trial.trial_id
            self.start_heartbeats()
        return trial

    def update_trial(self, trial_id: str, metrics: dict, step: int = 0) -> RemoteTrial:
        reply = self._call("UpdateTrial", worker=self.tuner_id, trial_id=str(trial_id),
                           metrics={k: float(v) for k, v in metrics.items()}, step=int(step))
        if reply.get("lost"):
            self._mark_lost(str(trial_id), reply["lost"])
        return RemoteTrial(trial_id=str(trial_id), status=reply["status"],
                           hyperparameters=Values({}))

    def record(self, event: str, trial_id: str, **fields: Any) -> bool:
        """Send one record of ``trial_id`` to the chief's state log; False (and the trial
        marked lost) if the chief refused it because this group no longer holds the trial."""
        trial_id = str(trial_id)
        if trial_id in self._lost:
            return False
        reply = self._call("Record", worker=self.tuner_id, trial_id=trial_id, event=event,
                           fields=json.loads(json.dumps(fields, default=json_default)))
        if not reply["accepted"]:
            self._mark_lost(trial_id, reply.get("reason", ""))
        return bool(reply["accepted"])

    def end_trial(self, trial, metrics: dict | None = None, step: int = 0) -> bool:
        """Report the trial's final status; False if the chief had already ended it.

        ``metrics`` (with ``step``) are sent as the trial's last update in the same call.
        With ``prefetch`` the call also asks for the next trial, which the following
        :meth:`create_trial` returns without another round trip (its lease starts now and
        the heartbeats keep it; :meth:`close` gives an unused one back).
        """
        trial_id = str(trial.trial_id)
        with self._lock:
            if self._current == trial_id:
                self._current = None
        if trial_id in self._lost:
            return False
        args: dict[str, Any] = dict(worker=self.tuner_id, trial_id=trial_id,
                                    status=str(trial.status),
                                    message=getattr(trial, "message", None))
        if metrics:
            args.update(metrics={k: float(v) for k, v in metrics.items()}, step=int(step))
        if self.prefetch:
            both = self._call("EndAndCreate", **args)
            reply, self._next = both["end"], both["next"]
            if self._next.get("status") == RUNNING:
                with self._lock:
                    self._current = checked_trial_id(self._next["trial_id"])
                self.start_heartbeats()
        else:
            reply = self._call("EndTrial", **args)
        if not reply["accepted"]:
            self._mark_lost(trial_id, reply.get("reason", ""))
        return bool(reply["accepted"])

    def advance(self, steps: int = 1) -> None:
        """Count training progress (a batch, an epoch); heartbeats carry the counter, and the
        chief fails a trial whose counter stops moving for its ``--stall_timeout``."""
        self.progress += steps

    def suspend(self, trial_id: str, epoch: int) -> bool:
        """Give the running trial back at the wall-time signal, checkpointed after ``epoch``
        epochs: the chief keeps it unended and a later worker continues it from there."""
        trial_id = str(trial_id)
        with self._lock:
            if self._current == trial_id:
                self._current = None
        reply = self._call("GiveBack", worker=self.tuner_id, trial_id=trial_id, epoch=int(epoch))
        if not reply["accepted"]:
            self._mark_lost(trial_id, reply.get("reason", ""))
        return bool(reply["accepted"])

    def wind_down_on(self, signum: int) -> None:
        """Treat signal ``signum`` (SIGUSR1 from SLURM) to this process as the wall-time
        signal too (main thread only)."""
        signal.signal(signum, lambda *_: self.winding_down.set())

    def lease_lost(self, trial_id: str) -> bool:
        return str(trial_id) in self._lost

    def status(self) -> dict[str, Any]:
        return self._call("Status", retry=False)

    def save(self) -> None:
        """The chief keeps the search state; nothing to save on a worker."""

    def reload(self) -> None:
        """The chief keeps the search state; nothing to reload on a worker."""

    def _mark_lost(self, trial_id: str, reason: str) -> None:
        if trial_id not in self._lost:
            self._lost.add(trial_id)
            self.log(f"worker {self.worker_id}: trial {trial_id} is no longer ours ({reason}); "
                     "its result will not be recorded")

    # --- heartbeats ---------------------------------------------------------------------------

    def start_heartbeats(self) -> None:
        if self._heartbeat is None and self.heartbeat_interval > 0:
            self._heartbeat = threading.Thread(target=self._beat, daemon=True,
                                               name=f"heartbeat-{self.worker_id}")
            self._heartbeat.start()

    def _beat(self) -> None:
        while not self._closed.wait(self.heartbeat_interval):
            with self._lock:
                current = self._current
            if time.monotonic() - self._last_reply < 0.5 * self.heartbeat_interval and \
                    self.progress == self._progress_sent:
                continue  # any call renews the lease: a heartbeat would add nothing
            self._progress_sent = self.progress
            try:
                reply = self._call("Heartbeat", retry=False,
                                   timeout=max(1.0, self.heartbeat_interval),
                                   worker=self.tuner_id, trial_id=current,
                                   progress=self.progress)
            except (ChiefUnreachable, ChiefCallError, WrongSearch):
                continue  # the main thread's calls retry and report
            self.heartbeats_sent += 1
            if reply.get("lost") and current is not None:
                self._mark_lost(current, "the chief no longer holds its lease")
                self._check_hung(current)

    def _check_hung(self, trial_id: str) -> None:
        """The chief failed ``trial_id`` while we still run it. A main thread that goes on
        training notices at its next report and moves on; one that makes no progress for
        ``lost_grace`` seconds after that is hung (or blocked in a collective): call
        ``on_lost``, which ends the process (and with it the group)."""
        if self.on_lost is None:
            return
        now = time.monotonic()
        seen = self._lost_seen
        if seen is None or seen[0] != trial_id or seen[1] != self.progress:
            self._lost_seen = (trial_id, self.progress, now)
            return
        if now - seen[2] >= self.lost_grace:
            self.on_lost(trial_id)

    def give_back(self) -> str | None:
        """Return a prefetched trial this worker will not run; its id, or None."""
        pending, self._next = self._next, None
        if not pending or pending.get("status") != RUNNING:
            return None
        trial_id = str(pending["trial_id"])
        with self._lock:
            if self._current == trial_id:
                self._current = None
        try:
            self._call("GiveBack", retry=False, worker=self.tuner_id, trial_id=trial_id)
        except (ChiefUnreachable, ChiefCallError):
            return None  # its lease expires and the chief re-issues it
        return trial_id

    def close(self) -> None:
        if not self._closed.is_set():
            self.give_back()
        self._closed.set()
        if self._heartbeat is not None:
            self._heartbeat.join(timeout=5.0)
        self._channel.close()

    def __enter__(self) -> ChiefClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RemoteRecorder:
    """What the trial runner writes records with on a worker: each record goes to the chief
    (:meth:`ChiefClient.record`), none to a file. Records of a trial whose lease was lost
    are dropped (the chief refuses them)."""

    def __init__(self, client: ChiefClient):
        self.client = client

    def append(self, event: str, trial_id: str, **fields: Any) -> bool:
        return self.client.record(event, trial_id, **fields)


# --- a stand-in worker whose trials are sleeps ------------------------------------------------


def synthetic_objective(values: dict, epochs: int, rng: random.Random) -> float:
    """A loss that depends on the numeric hyperparameters and falls with the epochs trained."""
    numeric = [float(v) for k, v in sorted(values.items())
               if not k.startswith("tuner/") and isinstance(v, (int, float))
               and not isinstance(v, bool)]
    shape = sum((math.log10(abs(x) + 1e-6) % 1.0 - 0.4) ** 2 for x in numeric) / max(
        len(numeric), 1)
    return shape + 1.0 / (1.0 + epochs) + 0.01 * rng.random()


@dataclasses.dataclass
class WorkerLog:
    """What a stand-in worker did: its time in trials and in total."""

    worker_id: str
    started: float = 0.0
    finished: float = 0.0
    busy_seconds: float = 0.0
    trials: int = 0
    idle_answers: int = 0
    lost: int = 0
    suspended: int = 0
    error: str | None = None


def run_sleep_worker(client: ChiefClient, *, trial_seconds: Callable[[dict], float],
                     objective: str = "val_loss", records: bool = False,
                     idle_wait: float = 0.5,
                     deadline: float | None = None, seed: int = 0,
                     epoch_updates: bool = False, clock=time.monotonic,
                     hang_after_epochs: int | None = None,
                     default_epochs: int = 1) -> WorkerLog:
    """Ask for trials until STOPPED; each trial sleeps ``trial_seconds(values)`` seconds.

    Reports the synthetic objective at the trial's last epoch (``tuner/epochs``, else
    ``default_epochs`` past ``tuner/initial_epoch``), or after every epoch when
    ``epoch_updates`` (the sleep is split evenly); sends ``trial_start`` and ``trial_end``
    records to the chief when ``records``.
    ``deadline`` (clock time) ends the loop and cuts a sleep short. Each epoch advances the
    client's progress counter; ``hang_after_epochs`` (fault tests) makes the main thread
    block forever after that many epochs while the heartbeat thread goes on. With
    ``epoch_updates`` and ``records`` an ``epoch`` record follows each epoch; at the wall-time
    signal (``client.winding_down``) the trial is given back after the epoch in progress
    (:meth:`ChiefClient.suspend`), and a trial whose values carry ``tuner/resume_epoch``
    continues from there (no second ``trial_start``).
    """
    rng = random.Random(seed)
    log = WorkerLog(worker_id=client.worker_id, started=clock())
    recorder = RemoteRecorder(client) if records else None
    try:
        while deadline is None or clock() < deadline:
            trial = client.create_trial()
            if trial.status == STOPPED:
                break
            if trial.status == IDLE:
                log.idle_answers += 1
                time.sleep(idle_wait)
                continue
            values = trial.hyperparameters.values
            first = int(values.get("tuner/initial_epoch", 0) or 0)
            last = int(values.get("tuner/epochs", first + default_epochs)
                       or first + default_epochs)
            resume = int(values.get(RESUME_KEY, 0) or 0)  # a suspended trial continues
            seconds = float(trial_seconds(values))
            start_wall = time.time()
            if recorder is not None and not resume:
                recorder.append("trial_start", trial.trial_id, parent_id=values.get(
                    "tuner/trial_id"), hyperparameters=_searched(values),
                    rung=values.get("tuner/rung"), initial_epoch=first, target_epochs=last,
                    nodes=1.0, ranks=1)
            epochs = (list(range(max(first, resume) + 1, last + 1)) if epoch_updates
                      else [last])
            status, metrics, last_update, suspended = "COMPLETED", {}, None, False
            for n, epoch in enumerate(epochs, start=1):
                pause = seconds / (max(1, last - first) if epoch_updates else 1)
                if deadline is not None:
                    pause = max(0.0, min(pause, deadline - clock()))
                slept = clock()
                time.sleep(pause)
                log.busy_seconds += clock() - slept  # "training" only, not the calls
                client.advance()
                if hang_after_epochs is not None and client.progress >= hang_after_epochs:
                    threading.Event().wait()  # a hung main thread; heartbeats go on
                metrics = {objective: synthetic_objective(values, epoch, rng)}
                if recorder is not None and epoch_updates:
                    recorder.append("epoch", trial.trial_id, epoch=epoch, metrics=metrics,
                                    wall_seconds=pause, nodes=1.0, ranks=1,
                                    node_hours=pause / 3600.0)
                if n == len(epochs) and recorder is None:
                    last_update = metrics  # sent with the end of the trial, in one call
                    break
                reply = client.update_trial(trial.trial_id, metrics, step=epoch)
                if reply.status == STOPPED:
                    break
                if client.winding_down.is_set() and n < len(epochs):
                    suspended = client.suspend(trial.trial_id, epoch)
                    break
            if suspended:
                log.suspended += 1
                continue
            if client.lease_lost(trial.trial_id):
                log.lost += 1
                continue
            if recorder is not None:
                wall = time.time() - start_wall
                fault_point("worker.record_end")
                recorder.append("trial_end", trial.trial_id, status=status,
                               parent_id=values.get("tuner/trial_id"),
                               hyperparameters=_searched(values),
                               rung=values.get("tuner/rung"), initial_epoch=first,
                               epochs=epochs[-1], metrics=metrics, objective=objective,
                               start_time=start_wall, wall_seconds=wall, nodes=1.0, ranks=1,
                               node_hours=wall / 3600.0, error=None, target_epochs=last)
                fault_point("worker.record_end+")
            fault_point("worker.end_call")
            if client.end_trial(RemoteTrial(trial.trial_id, status, Values(values)),
                                metrics=last_update, step=epochs[-1]):
                log.trials += 1
            fault_point("worker.end_call+")
    except Exception as exc:  # noqa: BLE001 - reported in the log and by the caller
        log.error = f"{type(exc).__name__}: {exc}"
    log.finished = clock()
    return log


def _searched(values: dict) -> dict:
    return {k: v for k, v in values.items() if not k.startswith("tuner/")}


EXIT_LOST = 3


def _exit_lost(trial_id: str) -> None:
    """The chief failed our running trial (no progress, or lease lost) while this process may
    be hung: end the whole process now, so that a Horovod group fails together (the launcher
    and ``horovodrun`` / ``srun --kill-on-bad-exit`` stop the other ranks)."""
    print(f"worker: trial {trial_id} was failed by the chief; exiting", file=sys.stderr,
          flush=True)
    os._exit(EXIT_LOST)


def main(argv: list[str] | None = None) -> int:
    """``python -m tuners.distributed.worker``: one stand-in (sleeping) worker process."""
    parser = argparse.ArgumentParser(prog="python -m tuners.distributed.worker", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--chief_address", required=True)
    parser.add_argument("--search_id", required=True)
    parser.add_argument("--worker_id", required=True)
    parser.add_argument("--run_dir", default="", help="the search's run directory: read the "
                        "secret there and send trial_start/trial_end records to the chief")
    parser.add_argument("--trial_seconds", type=float, default=0.5)
    parser.add_argument("--epochs", type=int, default=1,
                        help="epochs of a trial whose values set no tuner/epochs")
    parser.add_argument("--heartbeat_interval", type=float, default=2.0)
    parser.add_argument("--retry_for", type=float, default=300.0)
    parser.add_argument("--idle_wait", type=float, default=0.5)
    parser.add_argument("--objective", default="val_loss")
    parser.add_argument("--hang_after_epochs", type=int, default=None,
                        help="fault tests: the main thread blocks after this many epochs")
    parser.add_argument("--exit_on_lost", action="store_true",
                        help="exit (code 3) when the chief fails the running trial")
    parser.add_argument("--secret_file", default="",
                        help="the search secret (default: <run_dir>/chief.secret)")
    args = parser.parse_args(argv)
    secret_file = args.secret_file or (os.path.join(args.run_dir, SECRET_FILE)
                                       if args.run_dir else None)
    client = ChiefClient(args.chief_address, args.worker_id, args.search_id,
                         heartbeat_interval=args.heartbeat_interval, retry_for=args.retry_for,
                         backoff_initial=0.2, backoff_max=2.0, secret_file=secret_file,
                         on_lost=_exit_lost if args.exit_on_lost else None)
    client.wind_down_on(signal.SIGUSR1)  # SLURM's wall-time signal may come here too
    with client:
        log = run_sleep_worker(client, trial_seconds=lambda values: args.trial_seconds,
                               objective=args.objective, records=bool(args.run_dir),
                               idle_wait=args.idle_wait, seed=int(
                                   "".join(c for c in args.worker_id if c.isdigit()) or 0),
                               epoch_updates=True, hang_after_epochs=args.hang_after_epochs,
                               default_epochs=args.epochs)
    print(json.dumps(dataclasses.asdict(log)), flush=True)
    if log.error:
        print(f"worker {args.worker_id}: {log.error}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
