"""Compare the four search algorithms on one budget and write the report (``make run``).

    python -m benchmark.compare --output_dir runs/make_run [--scales 1] [--seeds 1,2,3]
        [--tuners random,hyperband,asha,asha_bo] [--experiment compare] [--concurrency 0]

One search per (tuner, scale, seed), each a ``python -m benchmark.run`` child process in its own
run directory ``<output_dir>/runs/<experiment>-<tuner>-w<workers>-s<seed>`` (log in
``<output_dir>/logs/``). A scale is a number of worker groups (``--workers``), each one rank on
one node (``launch.ranks_per_node=1``), so a search at scale W holds W nodes.

Fairness: every search of the comparison gets the same budget of allocated node-hours (the
experiment's ``search.node_hour_budget``, or ``--budget_node_hours`` for all of them), charged on
every node it holds from its start, idle or not, and no other limit (the ``compare`` preset sets
no trial cap and lets Hyperband iterate until the budget ends it). No new trial starts once the
budget is spent; trials running then finish (a search overruns by at most one trial per
worker; the report shows the node-hours really used and which limit stopped each search).
Seeds are paired: seed s of every tuner trains with the same data order (``--train.seed=s``)
and draws the same first configurations.

Several searches run side by side (``--concurrency``; default: the cores over the largest
scale's workers), started in plan order (scale by scale, seed by seed, every tuner), so rivals
share the machine alike; each search's wall and CPU seconds are its own (``wait4``).

A search that fails (non-zero exit, or longer than ``--search_timeout``) is recorded in
``<output_dir>/compare.json`` and the next one starts. After each successful search the best
trial's physics is written into ``<run_dir>/best/`` if ``benchmark.run`` did not already
(:mod:`tuners.best_model`). Rerunning skips every search whose run directory is complete
(``best.json`` written) and continues an interrupted one with ``--resume``. Finally
:mod:`reports.report` writes ``<output_dir>/report`` (``report.md``, ``anytime.png``, ...),
headed by a section on this comparison (budgets, searches, wall and CPU seconds). Before that
section comes the simulated comparison (:mod:`benchmark.sim.paper`): the reference study's
search replayed for every tuner on the shipped curve table with ``--simulated_seeds`` seeds
(20; 0 leaves it out), written to ``<output_dir>/simulated`` and marked simulated.

Progress, one line per search while it runs: ``[i/N] tuner wW sS: T trials, best val_loss L,
E s`` and the overall ETA (remaining searches at the measured seconds per budgeted node-second,
or the budget's wall time plus start-up before any search has finished).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from absl import app, flags

from mlpf_tf.configbase import atomic_write_text

BEST_FILE = "best.json"
PARAMS_FILE = "params.yaml"
TRIALS_FILE = "trials.jsonl"
STATE_FILE = "compare.json"
RUNS_SUBDIR, LOGS_SUBDIR, REPORT_SUBDIR = "runs", "logs", "report"
#: start-up seconds of a search (interpreter, TensorFlow, dataset) assumed before one finished
STARTUP_SECONDS = 30.0

OK, FAILED, TIMEOUT, SKIPPED = "ok", "failed", "timeout", "skipped"


@dataclasses.dataclass(frozen=True)
class Search:
    """One search of the comparison."""

    experiment: str
    tuner: str
    workers: int
    seed: int

    @property
    def run_name(self) -> str:
        return f"{self.experiment}-{self.tuner}-w{self.workers}-s{self.seed}"

    def label(self) -> str:
        return f"{self.tuner} w{self.workers} s{self.seed}"


@dataclasses.dataclass
class Outcome:
    """How one search went (what compare.json lists)."""

    run_name: str
    status: str
    returncode: int | None = None
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    trials: int = 0
    best: float | None = None
    physics: str | None = None
    log: str | None = None
    message: str | None = None


def plan(experiment: str, tuners: Sequence[str], scales: Sequence[int],
         seeds: Sequence[int]) -> list[Search]:
    """Searches in run order: scale by scale, seed by seed, every tuner."""
    return [Search(experiment, t, w, s) for w in scales for s in seeds for t in tuners]


def is_complete(run_dir: str) -> bool:
    """The search in ``run_dir`` finished (``best.json`` is written last)."""
    return os.path.isfile(os.path.join(run_dir, BEST_FILE))


def progress_of(run_dir: str, objective: str = "val_loss") -> tuple[int, float | None]:
    """(trials ended, best finite trial result so far) from ``trials.jsonl``; a trial's result
    is its objective at its last epoch (its ``trial_end`` metrics).

    Tolerates a line being written while it is read (it is skipped).
    """
    ended, best = 0, None
    try:
        with open(os.path.join(run_dir, TRIALS_FILE), "rb") as fh:
            lines = fh.read().split(b"\n")
    except OSError:
        return 0, None
    for raw in lines:
        try:
            record = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        if record.get("event") != "trial_end":
            continue
        ended += 1
        value = (record.get("metrics") or {}).get(objective) if record.get(
            "status") == "COMPLETED" else None
        if isinstance(value, (int, float)) and math.isfinite(value):
            best = value if best is None else min(best, value)
    return ended, best


def expected_seconds(budget_node_hours: float, workers: int) -> float:
    """Wall seconds a search should take: its budget spread over its nodes, plus start-up."""
    return budget_node_hours * 3600.0 / max(1, workers) + STARTUP_SECONDS


def eta_seconds(remaining: Sequence[float], running_expected: float, running_elapsed: float,
                done_expected: float, done_actual: float) -> float:
    """Seconds left: the expected times of the searches still to run and of the running one,
    scaled by how finished searches compared with their expectation (actual / expected)."""
    ratio = done_actual / done_expected if done_expected > 0 and done_actual > 0 else 1.0
    running_left = max(0.0, running_expected * ratio - running_elapsed)
    return running_left + ratio * sum(remaining)


def fmt_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def progress_line(index: int, total: int, search: Search, trials: int, best: float | None,
                  elapsed: float, eta: float, objective: str = "val_loss") -> str:
    best_text = f"{best:.4g}" if best is not None else "-"
    return (f"[{index}/{total}] {search.label()}: {trials} trials done, best {objective} "
            f"{best_text}, {fmt_seconds(elapsed)} elapsed | overall ETA {fmt_seconds(eta)}")


def search_command(search: Search, runs_dir: str, resume: bool,
                   extra: Sequence[str] = (), python: str = sys.executable) -> list[str]:
    """``python -m benchmark.run`` for ``search`` (``--resume`` continues a partial run)."""
    cmd = [python, "-m", "benchmark.run", f"--experiment={search.experiment}",
           f"--tuner={search.tuner}", f"--workers={search.workers}", f"--seed={search.seed}",
           f"--train.seed={search.seed}",  # paired seeds: the same data order for every tuner
           f"--output_dir={runs_dir}", f"--run_name={search.run_name}", *extra]
    return cmd + ["--resume"] if resume else cmd


def physics_command(run_dir: str, python: str = sys.executable) -> list[str]:
    return [python, "-m", "tuners.best_model", f"--run_dir={run_dir}"]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(cmd: Sequence[str], log_path: str, *, timeout: float | None = None,
              on_poll: Callable[[], None] | None = None, poll_seconds: float = 2.0
              ) -> tuple[int | None, float, float]:
    """Run ``cmd`` (its own process group, output appended to ``log_path``).

    Returns (exit code or None on timeout, wall seconds, CPU seconds of it and everything it
    waited for). On timeout the whole process group gets SIGTERM, then SIGKILL.
    """
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    cpu0, start = _children_cpu(), time.monotonic()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "ab") as log:
        log.write(("$ " + " ".join(cmd) + "\n").encode())
        log.flush()
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        code: int | None = None
        try:
            while True:
                try:
                    code = proc.wait(poll_seconds)
                    break
                except subprocess.TimeoutExpired:
                    if on_poll is not None:
                        on_poll()
                    if timeout is not None and time.monotonic() - start > timeout:
                        _stop_group(proc)
                        code = None
                        break
        except BaseException:
            _stop_group(proc)
            raise
    return code, time.monotonic() - start, _children_cpu() - cpu0


def _stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the child's process group (it leads its own session), SIGKILL after grace."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue


class Display:
    """Progress lines: rewritten in place on a terminal; otherwise one line per change of a
    search's state, or every ``min_interval`` seconds per search (``slot``: which search)."""

    def __init__(self, out: TextIO, min_interval: float = 15.0):
        self.out = out
        self.tty = bool(getattr(out, "isatty", lambda: False)())
        self.min_interval = min_interval
        self._last: dict[Any, tuple[Any, float]] = {}  # slot -> (key, time printed)

    def update(self, text: str, key: Any = None, slot: Any = None) -> None:
        if self.tty:
            self.out.write("\r\033[K" + text)
            self.out.flush()
            return
        now = time.monotonic()
        last_key, last_time = self._last.get(slot, (object(), -math.inf))
        if key != last_key or now - last_time >= self.min_interval:
            print(text, file=self.out, flush=True)
            self._last[slot] = (key, now)

    def finish(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\033[K")
        print(text, file=self.out, flush=True)


@dataclasses.dataclass
class _Running:
    """A search whose child process is running."""

    index: int
    search: Search
    run_dir: str
    log: str
    proc: subprocess.Popen
    log_file: Any
    start: float


def _spawn(cmd: Sequence[str], log_path: str) -> tuple[subprocess.Popen, Any]:
    """Start ``cmd`` in its own process group, output appended to ``log_path``."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - closed when the child is reaped
    log.write(("$ " + " ".join(cmd) + "\n").encode())
    log.flush()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    return proc, log


def _reap(proc: subprocess.Popen) -> tuple[int, float] | None:
    """(exit code, CPU seconds of the child and everything it waited for) once it has ended,
    else None. ``wait4`` gives this child's own resource usage, so concurrent searches are
    charged separately."""
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_utime + usage.ru_stime


def run_searches(searches: Sequence[Search], output_dir: str, *, budget_node_hours: float,
                 command: Callable[[Search, str, bool], list[str]] | None = None,
                 physics: Callable[[str], list[str]] | None = physics_command,
                 timeout: float | None = None, objective: str = "val_loss",
                 out: TextIO = sys.stdout, poll_seconds: float = 2.0,
                 concurrency: int = 1) -> list[Outcome]:
    """Run every search not yet complete, up to ``concurrency`` at once, in plan order; write
    compare.json after each.

    ``command(search, runs_dir, resume)`` gives the child's argv (default
    :func:`search_command`); ``physics(run_dir)`` the best-model step's (None: skip it).
    Searches run side by side in plan order (seed by seed, every tuner), so rivals share the
    machine alike; each search's wall and CPU seconds are its own.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency!r}")
    command = command or search_command
    runs_dir = os.path.join(output_dir, RUNS_SUBDIR)
    logs_dir = os.path.join(output_dir, LOGS_SUBDIR)
    os.makedirs(runs_dir, exist_ok=True)
    display = Display(out)
    earlier = _read_state(output_dir)
    outcomes: dict[int, Outcome] = {}
    done = [0.0, 0.0]  # expected, actual seconds of the searches finished here
    expected = [expected_seconds(budget_node_hours, s.workers) for s in searches]
    total = len(searches)

    def record(i: int, outcome: Outcome) -> None:
        outcomes[i] = outcome
        _write_state(output_dir, searches, [outcomes[k] for k in sorted(outcomes)])

    def eta(running: Sequence[_Running]) -> float:
        waiting = [expected[k] for k in range(total) if k not in outcomes
                   and all(r.index != k for r in running)]
        now = time.monotonic()
        left = max((eta_seconds([], expected[r.index], now - r.start, *done)
                    for r in running), default=0.0)
        return left + eta_seconds(waiting, 0.0, 0.0, *done) / concurrency

    pending = list(range(total))
    running: list[_Running] = []
    while pending or running:
        while pending and len(running) < concurrency:
            i = pending.pop(0)
            search = searches[i]
            run_dir = os.path.join(runs_dir, search.run_name)
            log = os.path.join(logs_dir, f"{search.run_name}.log")
            if is_complete(run_dir):
                record(i, _skipped(search, run_dir, log, earlier, physics, timeout, objective))
                o = outcomes[i]
                display.finish(f"[{i + 1}/{total}] {search.label()}: complete, skipped "
                               f"({o.trials} trials, best {objective} {_num(o.best)}; "
                               f"physics {o.physics})")
                continue
            resume = os.path.isfile(os.path.join(run_dir, PARAMS_FILE))
            proc, handle = _spawn(command(search, runs_dir, resume), log)
            running.append(_Running(i, search, run_dir, log, proc, handle, time.monotonic()))
        if not running:
            continue
        time.sleep(poll_seconds)
        for r in list(running):
            reaped = _reap(r.proc)
            elapsed = time.monotonic() - r.start
            if reaped is None and timeout is not None and elapsed > timeout:
                _stop_group(r.proc)
                reaped = (None, 0.0)
            if reaped is None:
                trials, best = progress_of(r.run_dir, objective)
                display.update(progress_line(r.index + 1, total, r.search, trials, best,
                                             elapsed, eta(running), objective),
                               key=(trials, best), slot=r.index)
                continue
            running.remove(r)
            r.log_file.close()
            code, cpu = reaped
            trials, best = progress_of(r.run_dir, objective)
            status = OK if code == 0 and is_complete(r.run_dir) else (
                TIMEOUT if code is None else FAILED)
            outcome = Outcome(r.search.run_name, status, code, elapsed, cpu, trials, best,
                              log=r.log)
            if status == OK:
                outcome.physics = _physics(r.run_dir, physics, r.log, timeout)
                done[0] += expected[r.index]
                done[1] += elapsed
            else:
                outcome.message = (f"exit code {code}" if code is not None else
                                   f"stopped after --search_timeout={timeout:g} s"
                                   ) + f"; see {r.log}"
            record(r.index, outcome)
            display.finish(f"[{r.index + 1}/{total}] {r.search.label()}: {status.upper()} - "
                           f"{trials} trials, best {objective} {_num(best)}, "
                           f"{fmt_seconds(elapsed)} wall, {cpu:.0f} s CPU"
                           + (f" ({outcome.message})" if outcome.message else "")
                           + f" | overall ETA {fmt_seconds(eta(running))}")
    return [outcomes[k] for k in sorted(outcomes)]


def _skipped(search: Search, run_dir: str, log: str, earlier: dict, physics, timeout,
             objective: str) -> Outcome:
    before = earlier.get(search.run_name, {})
    outcome = Outcome(search.run_name, SKIPPED, before.get("returncode"),
                      float(before.get("wall_seconds") or 0.0),
                      float(before.get("cpu_seconds") or 0.0), log=log,
                      message="complete before this run (times from then)")
    outcome.trials, outcome.best = progress_of(run_dir, objective)
    outcome.physics = _physics(run_dir, physics, log, timeout)
    return outcome


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _physics(run_dir: str, physics, log: str, timeout: float | None) -> str:
    """'written' (by benchmark.run or now), 'failed (see log)' or 'skipped'."""
    from tuners.best_model import has_best_physics

    if has_best_physics(run_dir):
        return "written"
    if physics is None:
        return "skipped"
    code, _, _ = run_child(physics(run_dir), log, timeout=timeout)
    return "written" if code == 0 and has_best_physics(run_dir) else f"failed (see {log})"


def _read_state(output_dir: str) -> dict[str, dict]:
    """run_name -> outcome of an earlier compare.json (empty if none or unreadable)."""
    try:
        with open(os.path.join(output_dir, STATE_FILE), encoding="utf-8") as fh:
            state = json.load(fh)
        return {o["run_name"]: o for o in state.get("searches", []) if o.get("status") in (
            OK, SKIPPED)}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {}


def _write_state(output_dir: str, searches: Sequence[Search],
                 outcomes: Sequence[Outcome]) -> None:
    state = {"updated": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
             "planned": [s.run_name for s in searches],
             "searches": [dataclasses.asdict(o) for o in outcomes]}
    atomic_write_text(os.path.join(output_dir, STATE_FILE), json.dumps(state, indent=1) + "\n")


def setup_section(experiment: str, budget_node_hours: float, scales: Sequence[int],
                  outcomes: Sequence[Outcome], wall: float, seeds: Sequence[int] = (),
                  concurrency: int = 1) -> list[str]:
    """The report's section on how the comparison was run."""
    cpu = sum(o.cpu_seconds for o in outcomes)
    lines = ["## Comparison setup", "",
             f"Experiment `{experiment}`; scales (worker groups of one rank, one node each): "
             f"{', '.join(map(str, scales))}; seeds {', '.join(map(str, seeds)) or '-'} per "
             "tuner and scale (seed s of every tuner: the same data order and the same first "
             "configurations). Every search had the same budget of "
             f"{budget_node_hours:g} allocated node-hours ({budget_node_hours * 3600:g} "
             "node-seconds: every node held from the search's start, idle or not, model "
             "building, tracing and restores included) and no other limit: no trial starts "
             "once it is spent, trials already running finish (at most one trial per worker "
             f"over). {concurrency} search(es) ran side by side, in plan order (seed by seed, "
             "every tuner), so rivals shared the machine alike.",
             "", f"This run of benchmark.compare: {fmt_seconds(wall)} wall; {cpu:.0f} s CPU "
             "summed over the searches below (a skipped search shows the times of the run "
             "that completed it).", "",
             "| search | status | trials | best | wall s | CPU s | physics |",
             "|---|---|---|---|---|---|---|"]
    for o in outcomes:
        lines.append(f"| {o.run_name} | {o.status} | {o.trials} | {_num(o.best)} | "
                     f"{o.wall_seconds:.0f} | {o.cpu_seconds:.0f} | {o.physics or '-'} |")
    return lines + [""]


def write_report(output_dir: str, experiment: str, setup: list[str]) -> tuple[int, str]:
    """reports.report over the run directories; the setup section goes under the title."""
    from reports import report

    out = os.path.join(output_dir, REPORT_SUBDIR)
    code = report.run(["--runs", os.path.join(output_dir, RUNS_SUBDIR), "--out", out,
                       "--scale", "workers", "--experiment", experiment])
    path = os.path.join(out, "report.md")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        head = 4 if len(lines) > 4 else len(lines)  # title, blank, "Generated ...", blank
        atomic_write_text(path, "\n".join(lines[:head] + setup + lines[head:]))
    return code, path


def budget_of(experiment: str, override: float | None) -> float:
    """The node-hour budget every search gets; ValueError if there is none."""
    from benchmark import experiments

    if override is not None:
        budget = override
    else:
        budget = float(experiments.get(experiment).overrides.get("search", {}).get(
            "node_hour_budget", 0.0))
    if not budget > 0:
        raise ValueError(f"--experiment={experiment}: no search.node_hour_budget in the preset; "
                         "a fair comparison needs one: pass --budget_node_hours")
    return budget


FLAGS = flags.FLAGS


def define_flags() -> None:
    flags.DEFINE_string("output_dir", None, "directory of the comparison (runs, logs, report)")
    flags.DEFINE_list("scales", ["1"], "worker counts to compare at")
    flags.DEFINE_list("tuners", ["random", "hyperband", "asha", "asha_bo"], "tuners to compare")
    flags.DEFINE_list("seeds", ["1", "2", "3"], "search seeds (one search per tuner, scale and "
                      "seed; seed s of every tuner sees the same data order and the same first "
                      "configurations)")
    flags.DEFINE_integer("concurrency", 0, "searches run at once (0: as many as the cores hold "
                         "at the largest scale, one core per worker)", lower_bound=0)
    flags.DEFINE_string("experiment", "compare", "experiment preset of every search")
    flags.DEFINE_float("budget_node_hours", None, "node-hour budget of every search (default: "
                       "the preset's search.node_hour_budget)")
    flags.DEFINE_float("search_timeout", 1800.0, "seconds after which a search is stopped and "
                       "recorded as failed")
    flags.DEFINE_integer("simulated_seeds", 20, "seeds per tuner of the simulated comparison "
                         "(the reference study's search replayed on the shipped curve table, "
                         "benchmark.sim.paper; 0: none)", lower_bound=0)
    flags.mark_flag_as_required("output_dir")


def _ints(name: str, values: Sequence[str]) -> list[int]:
    try:
        out = [int(v) for v in values]
    except ValueError:
        raise ValueError(f"--{name}={','.join(values)}: expected integers") from None
    if not out or min(out) < 1 or len(set(out)) != len(out):
        raise ValueError(f"--{name}={','.join(values)}: expected distinct integers >= 1")
    return out


def auto_concurrency(scales: Sequence[int], requested: int, cores: int | None = None) -> int:
    """Searches to run at once: ``requested``, or (0) the cores over the largest scale's
    workers (one core each), at least 1."""
    if requested:
        return requested
    cores = cores or os.cpu_count() or 1
    return max(1, cores // max(scales))


def check_flags() -> tuple[list[Search], float, list[int]]:
    """The planned searches, budget and scales; ValueError naming the flag if one is off."""
    from benchmark import experiments
    from tuners.config import TUNERS

    try:
        experiments.get(FLAGS.experiment)
    except experiments.UnknownExperiment as exc:
        raise ValueError(str(exc)) from None
    unknown = [t for t in FLAGS.tuners if t not in TUNERS]
    if unknown or not FLAGS.tuners:
        raise ValueError(f"--tuners={','.join(FLAGS.tuners)}: unknown {', '.join(unknown)}; "
                         f"known: {', '.join(TUNERS)}")
    scales, seeds = _ints("scales", FLAGS.scales), _ints("seeds", FLAGS.seeds)
    if FLAGS.budget_node_hours is not None and not FLAGS.budget_node_hours > 0:
        raise ValueError(f"--budget_node_hours={FLAGS.budget_node_hours}: must be > 0")
    if not FLAGS.search_timeout > 0:
        raise ValueError(f"--search_timeout={FLAGS.search_timeout}: must be > 0")
    budget = budget_of(FLAGS.experiment, FLAGS.budget_node_hours)
    return plan(FLAGS.experiment, FLAGS.tuners, scales, seeds), budget, scales


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print(f"benchmark.compare: error: unexpected arguments {' '.join(argv[1:])}",
              file=sys.stderr)
        return 2
    try:
        searches, budget, scales = check_flags()
    except ValueError as exc:
        print(f"benchmark.compare: error: {exc}", file=sys.stderr)
        return 2
    output_dir = os.path.abspath(FLAGS.output_dir)
    extra = ([f"--budget_node_hours={FLAGS.budget_node_hours}"]
             if FLAGS.budget_node_hours is not None else [])
    concurrency = auto_concurrency(scales, FLAGS.concurrency)
    print(f"comparing {len(FLAGS.tuners)} tuner(s) at scale(s) {', '.join(map(str, scales))}: "
          f"{len(searches)} searches of {budget:g} allocated node-hours each, {concurrency} at "
          f"a time, into {output_dir}", flush=True)
    start, cpu0 = time.monotonic(), _children_cpu()
    outcomes = run_searches(
        searches, output_dir, budget_node_hours=budget, timeout=FLAGS.search_timeout,
        command=lambda s, runs, resume: search_command(s, runs, resume, extra),
        concurrency=concurrency)
    wall = time.monotonic() - start
    bad = [o for o in outcomes if o.status in (FAILED, TIMEOUT)]
    code, report_md = write_report(output_dir, FLAGS.experiment,
                                   setup_section(FLAGS.experiment, budget, scales, outcomes,
                                                 wall, sorted({s.seed for s in searches}),
                                                 concurrency))
    sim_ok = True
    if FLAGS.simulated_seeds and os.path.isfile(report_md):
        from benchmark.sim import paper

        sim_ok, lines = paper.run_simulated(output_dir, FLAGS.simulated_seeds, FLAGS.tuners)
        paper.insert_section(report_md, lines)
    cpu = _children_cpu() - cpu0
    print(f"{len(outcomes) - len(bad)} of {len(outcomes)} searches ok"
          + (f"; failed: {', '.join(o.run_name for o in bad)}" if bad else "")
          + f"; {fmt_seconds(wall)} wall, {cpu:.0f} s CPU (children)", flush=True)
    png = os.path.join(os.path.dirname(report_md), "anytime.png")
    print(f"report: {report_md}")
    print(f"main plot: {png}" if os.path.isfile(png) else "main plot: none (no finite losses)")
    return 0 if code == 0 and not bad and sim_ok else 1


def run() -> None:
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
