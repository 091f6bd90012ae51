"""ASHAOracle driven through keras-tuner's create_trial / update_trial / end_trial with
synthetic scores (no training): exact rungs and promotions, workers reporting out of order,
min/max, ties, failures, budgets, argument checks and save/reload determinism."""

import heapq
import json
import os
import random
import shutil

import keras_tuner as kt
import pytest

from tuners.asha import ASHAOracle

RUNNING, STOPPED, IDLE = "RUNNING", "STOPPED", "IDLE"


def space():
    hp = kt.HyperParameters()
    hp.Float("x", 0.0, 1.0)
    hp.Float("y", 0.0, 1.0)
    hp.Int("units", 8, 64, step=8)
    hp.Choice("act", ["relu", "elu"])
    return hp


def new_oracle(directory, project="p", direction="min", **kwargs):
    args = dict(min_epochs=1, max_epochs=27, reduction_factor=3, seed=7)
    args.update(kwargs)
    oracle = ASHAOracle(kt.Objective("val_loss", direction), space(), **args)
    oracle._set_project_dir(str(directory), project)
    oracle.verbose = 0
    return oracle


def finish(oracle, trial, score, status="COMPLETED", **metrics):
    if status == "COMPLETED":
        oracle.update_trial(trial.trial_id, {"val_loss": score, **metrics})
    trial.status = status
    oracle.end_trial(trial)


def synthetic_loss(values):
    """A learning curve: distance to an optimum plus a term falling with epochs."""
    return ((values["x"] - 0.3) ** 2 + (values["y"] - 0.6) ** 2
            + 0.001 * values["units"] / 8 + 1.0 / values["tuner/epochs"])


def describe(trial):
    if trial.status != RUNNING:
        return (trial.status,)
    v = trial.hyperparameters.values
    parent = v.get("tuner/trial_id")
    return (int(trial.trial_id), None if parent is None else int(parent), v["tuner/rung"],
            v["tuner/initial_epoch"], v["tuner/epochs"])


def test_27_configurations_give_9_3_1_promotions_with_the_right_parents(tmp_path):
    oracle = new_oracle(tmp_path)
    trials = [oracle.create_trial(f"w{i}") for i in range(27)]
    assert all(describe(t)[1:] == (None, 0, 0, 1) for t in trials)
    assert all("tuner/trial_id" not in t.hyperparameters.values for t in trials)
    scores = {t.trial_id: float((i * 11) % 27) for i, t in enumerate(trials)}
    for t in reversed(trials):  # reported in reverse order of creation
        finish(oracle, t, scores[t.trial_id])

    def promote(n, workers):
        out = [oracle.create_trial(w) for w in workers[:n]]
        return out

    rung1 = promote(9, [f"v{i}" for i in range(9)])
    best9 = sorted(scores, key=scores.get)[:9]
    assert [t.hyperparameters.values["tuner/trial_id"] for t in rung1] == best9
    for t in rung1:
        v = t.hyperparameters.values
        parent = oracle.get_trial(v["tuner/trial_id"]).hyperparameters.values
        assert (v["tuner/epochs"], v["tuner/initial_epoch"], v["tuner/rung"],
                v["tuner/bracket"]) == (3, 1, 1, 0)
        assert {k: parent[k] for k in ("x", "y", "units", "act")} == \
            {k: v[k] for k in ("x", "y", "units", "act")}
    scores1 = {t.trial_id: 50.0 - i for i, t in enumerate(rung1)}  # reverses the order
    for t in rung1:
        finish(oracle, t, scores1[t.trial_id])
    rung2 = promote(3, ["u0", "u1", "u2"])
    assert [t.hyperparameters.values["tuner/trial_id"] for t in rung2] == \
        sorted(scores1, key=scores1.get)[:3]
    assert all(describe(t)[2:] == (2, 3, 9) for t in rung2)
    for t, s in zip(rung2, [3.0, 1.0, 2.0]):
        finish(oracle, t, s)
    (top,) = promote(1, ["z"])
    assert describe(top)[1:] == (int(rung2[1].trial_id), 3, 9, 27)
    finish(oracle, top, 0.1)
    assert oracle.rung_sizes() == [27, 9, 3, 1]
    nxt = oracle.create_trial("z")
    assert describe(nxt)[1:] == (None, 0, 0, 1)  # nothing promotable: a new configuration


def test_sequential_decisions_match_hand_computed_sequence(tmp_path):
    oracle = new_oracle(tmp_path, max_epochs=9)
    scores = iter([5.0, 3.0, 4.0, 2.5, 6.0, 7.0, 1.0, 8.0, 9.0])
    log = []
    for _ in range(9):
        t = oracle.create_trial("w")
        log.append(describe(t))
        finish(oracle, t, next(scores))
    # 00:5 01:3 02:4 -> promote 01 (rung 1: 2.5); 04:6 05:7 (n0=5, top1=01 done);
    # 06:1 (n0=6 -> top 2 = 06, 01 -> promote 06: 8.0); n1=2; 08: new -> 9.0
    assert log == [(0, None, 0, 0, 1), (1, None, 0, 0, 1), (2, None, 0, 0, 1),
                   (3, 1, 1, 1, 3), (4, None, 0, 0, 1), (5, None, 0, 0, 1),
                   (6, None, 0, 0, 1), (7, 6, 1, 1, 3), (8, None, 0, 0, 1)]
    assert oracle.rung_sizes() == [7, 2, 0]
    t = oracle.create_trial("w")  # n0=7 (top 2: 06, 01 promoted) ; n1=2 -> new
    assert describe(t)[1] is None


def _run_sequence(oracle, scores, sign=1.0):
    log = []
    for s in scores:
        t = oracle.create_trial("w")
        log.append(describe(t))
        finish(oracle, t, sign * s)
    return log


def test_maximise_mirrors_minimise(tmp_path):
    rng = random.Random(3)
    scores = [rng.choice([0.5, 1.0, 1.5, 2.0, 2.5]) for _ in range(60)]  # with ties
    lo = _run_sequence(new_oracle(tmp_path, "min"), scores)
    hi = _run_sequence(new_oracle(tmp_path, "max", direction="max"), scores, sign=-1.0)
    assert lo == hi
    assert any(d[1] is not None for d in lo)


def test_ties_promote_the_earliest_result(tmp_path):
    oracle = new_oracle(tmp_path)
    trials = [oracle.create_trial(f"w{i}") for i in range(6)]
    for t in trials[3:] + trials[:3]:  # ends 3,4,5 first, then 0,1,2: all tied
        finish(oracle, t, 1.0)
    promoted = [oracle.create_trial(f"p{i}").hyperparameters.values["tuner/trial_id"]
                for i in range(2)]
    assert promoted == [trials[3].trial_id, trials[4].trial_id]  # earliest *recorded*


def test_failed_and_invalid_trials_are_not_rung_results(tmp_path):
    oracle = new_oracle(tmp_path, max_retries_per_trial=1, max_consecutive_failed_trials=5)
    a, b, c, d = (oracle.create_trial(f"w{i}") for i in range(4))
    finish(oracle, a, 0.1, status="FAILED")
    finish(oracle, b, 2.0)
    finish(oracle, c, 3.0)
    assert oracle.rung_sizes()[0] == 2
    # INVALID with a retry left: the same trial is handed out again, then completes
    finish(oracle, d, None, status="INVALID")
    again = oracle.create_trial("w3")
    assert again.trial_id == d.trial_id
    assert oracle.rung_sizes()[0] == 2
    finish(oracle, again, 1.0)
    assert oracle.rung_sizes()[0] == 3
    p = oracle.create_trial("w9")
    assert p.hyperparameters.values["tuner/trial_id"] == d.trial_id  # not the failed 'a'


def test_running_trials_do_not_block_promotions_and_workers_never_idle(tmp_path):
    oracle = new_oracle(tmp_path)
    trials = [oracle.create_trial(f"w{i}") for i in range(40)]
    assert all(t.status == RUNNING for t in trials)  # 40 busy workers, no results: no IDLE
    for t, s in zip(trials[:3], [3.0, 1.0, 2.0]):
        finish(oracle, t, s)
    t = oracle.create_trial("w0")
    assert t.hyperparameters.values["tuner/trial_id"] == trials[1].trial_id


def test_exhausted_discrete_space_idles_only_while_trials_run(tmp_path):
    hp = kt.HyperParameters()
    hp.Choice("a", [1, 2])
    oracle = ASHAOracle("val_loss", hp, min_epochs=1, max_epochs=9, reduction_factor=3, seed=1)
    oracle._set_project_dir(str(tmp_path), "d")
    oracle.verbose = 0
    t1, t2 = oracle.create_trial("w1"), oracle.create_trial("w2")
    assert {t1.hyperparameters.values["a"], t2.hyperparameters.values["a"]} == {1, 2}
    assert oracle.create_trial("w3").status == IDLE
    finish(oracle, t1, 1.0)
    finish(oracle, t2, 2.0)
    assert oracle.create_trial("w3").status == STOPPED


class Reference:
    """Naive ASHA (sort everything at every decision) to check the oracle against."""

    def __init__(self, eta, top):
        self.eta, self.top = eta, top
        self.results = {k: [] for k in range(top + 1)}
        self.promoted = {k: set() for k in range(top + 1)}
        self.seq = 0

    def record(self, rung, key, loss):
        self.results[rung].append((loss, self.seq, key))
        self.seq += 1

    def decide(self):
        for k in range(self.top - 1, -1, -1):
            ranked = sorted(self.results[k])
            for _, _, key in ranked[:len(ranked) // self.eta]:
                if key not in self.promoted[k]:
                    self.promoted[k].add(key)
                    return key, k + 1
        return None, 0


def simulate(oracle, n_decisions, workers, seed, loss=synthetic_loss, reference=None,
             sign=1.0, running=None):
    """Workers with random trial durations report out of order; returns the decision log.

    ``running``: a heap of (finish time, order, worker, trial) to continue from.
    """
    rng = random.Random(seed)
    log, now = [], 0.0
    order = 1_000_000 if running else 0

    def start(worker):
        nonlocal order
        trial = oracle.create_trial(f"w{worker}")
        log.append(describe(trial))
        if reference is not None and trial.status == RUNNING:
            v = trial.hyperparameters.values
            assert (v.get("tuner/trial_id"), v["tuner/rung"]) == reference.decide()
        if trial.status == RUNNING:
            v = trial.hyperparameters.values
            duration = (v["tuner/epochs"] - v["tuner/initial_epoch"]) * rng.uniform(0.2, 3.0)
            heapq.heappush(running, (now + duration, order, worker, trial))
            order += 1

    if running is None:
        running = []
        for w in range(workers):
            start(w)
    while running and len(log) < n_decisions:
        now, _, worker, trial = heapq.heappop(running)
        score = loss(trial.hyperparameters.values)
        finish(oracle, trial, sign * score)
        if reference is not None:
            reference.record(trial.hyperparameters.values["tuner/rung"], trial.trial_id, score)
        start(worker)
    return log, running


@pytest.mark.parametrize("eta, workers", [(3, 4), (2, 7)])
def test_out_of_order_workers_match_the_naive_reference(tmp_path, eta, workers):
    oracle = new_oracle(tmp_path, reduction_factor=eta, max_epochs=27)
    reference = Reference(eta, oracle.ladder.top_rung)
    log, running = simulate(oracle, 150, workers, seed=eta, reference=reference)
    assert len(log) == 150
    promotions = sum(d[1] is not None for d in log)
    running_promotions = sum("tuner/trial_id" in r[3].hyperparameters.values for r in running)
    assert promotions == sum(oracle.rung_sizes()[1:]) + running_promotions > 20


def test_save_reload_resumes_with_identical_decisions(tmp_path):
    a = new_oracle(tmp_path / "a")
    log_a, running = simulate(a, 60, 3, seed=11)
    for _, _, _, trial in sorted(running):  # drain: a quiet point to restart at
        finish(a, trial, synthetic_loss(trial.hyperparameters.values))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    b = new_oracle(tmp_path / "b")
    b.reload()
    def comparable(state):
        state = json.loads(json.dumps(state))
        state["tried_so_far"] = sorted(state["tried_so_far"])  # a set in keras-tuner
        return state

    assert comparable(b.get_state()) == comparable(a.get_state())
    assert b.rung_sizes() == a.rung_sizes()
    rest_a, _ = simulate(a, 80, 3, seed=12)
    rest_b, _ = simulate(b, 80, 3, seed=12)
    assert rest_a == rest_b
    values = [a.get_trial(f"{d[0]:04d}").hyperparameters.values for d in rest_a]
    assert values == [b.get_trial(f"{d[0]:04d}").hyperparameters.values for d in rest_b]
    assert os.path.exists(tmp_path / "b" / "p" / "oracle.json")


def test_restart_with_running_trials_resumes_with_identical_decisions(tmp_path):
    """The chief restarts while 4 trials run; their workers get them back and carry on."""
    a = new_oracle(tmp_path / "a")
    _, running = simulate(a, 70, 4, seed=21)
    assert len(running) == 4
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    b = new_oracle(tmp_path / "b")
    b.reload()
    finish_at = {trial.trial_id: (t, order) for t, order, _, trial in running}
    running_b = []
    for _, _, worker, _ in sorted(running):
        again = b.create_trial(f"w{worker}")  # keras-tuner re-issues the interrupted trials
        assert again.trial_id in finish_at
        running_b.append((*finish_at[again.trial_id], worker, again))
    heapq.heapify(running_b)
    assert sorted(t[3].trial_id for t in running_b) == sorted(t[3].trial_id for t in running)
    rest_a, _ = simulate(a, 60, 4, seed=22, running=list(running))
    rest_b, _ = simulate(b, 60, 4, seed=22, running=running_b)
    assert rest_a == rest_b and len(rest_a) == 60


def test_reload_reissues_running_trials_first(tmp_path):
    a = new_oracle(tmp_path)
    t0, t1 = a.create_trial("w0"), a.create_trial("w1")
    finish(a, t0, 1.0)
    b = new_oracle(tmp_path)
    b.reload()
    again = b.create_trial("w5")
    assert again.trial_id == t1.trial_id and again.hyperparameters.values == \
        t1.hyperparameters.values


def test_max_trials_counts_configurations_and_promotions(tmp_path):
    oracle = new_oracle(tmp_path, max_trials=10)
    log = _run_sequence(oracle, [float(i % 4) for i in range(10)])
    assert sum(d[1] is not None for d in log) >= 2  # promotions count as trials
    assert oracle.create_trial("w").status == STOPPED


def test_epoch_budget_stops_after_allotting_it(tmp_path):
    oracle = new_oracle(tmp_path, max_epochs=9, epoch_budget=12)
    log = []
    while (t := oracle.create_trial("w")).status == RUNNING:
        log.append(describe(t))
        finish(oracle, t, float(len(log) % 3))
    allotted = sum(d[4] - d[3] for d in log)
    assert allotted == oracle.epochs_allotted >= 12
    assert allotted - (log[-1][4] - log[-1][3]) < 12  # stopped at the first trial past it


def test_node_hour_budget_from_metrics_and_record_cost(tmp_path):
    oracle = new_oracle(tmp_path, node_hour_budget=1.0)
    t0 = oracle.create_trial("w0")
    oracle.update_trial(t0.trial_id, {"val_loss": 2.0, "node_hours": 0.2}, step=0)
    oracle.update_trial(t0.trial_id, {"val_loss": 1.0, "node_hours": 0.5}, step=1)
    t0.status = "COMPLETED"
    oracle.end_trial(t0)
    assert oracle.node_hours_spent == pytest.approx(0.5)  # cumulative: latest value counts
    t1 = oracle.create_trial("w1")
    oracle.record_cost(t1.trial_id, 0.3)
    assert oracle.create_trial("w2").status == RUNNING  # 0.8 < 1.0
    oracle.record_cost(t1.trial_id, 0.6)  # 0.5 + 0.6 = 1.1
    assert oracle.node_hours_spent == pytest.approx(1.1)
    assert oracle.create_trial("w3").status == STOPPED
    with pytest.raises(ValueError, match="node_hours of trial 0001 must be finite and >= 0"):
        oracle.record_cost(t1.trial_id, -1)
    with pytest.raises(KeyError, match="unknown trial id 'nope'"):
        oracle.record_cost("nope", 1.0)
    reloaded = new_oracle(tmp_path)
    reloaded.reload()
    assert reloaded.node_hours_spent == pytest.approx(1.1)


def test_consecutive_failures_still_end_the_search(tmp_path):
    oracle = new_oracle(tmp_path, max_consecutive_failed_trials=2)
    t = oracle.create_trial("w")
    finish(oracle, t, None, status="FAILED")
    t = oracle.create_trial("w")
    with pytest.raises(RuntimeError, match="Number of consecutive failures exceeded the limit"):
        finish(oracle, t, None, status="FAILED")


@pytest.mark.parametrize("kwargs, message", [
    (dict(min_epochs=30, max_epochs=27), "min_epochs (30) must be <= max_epochs (27)"),
    (dict(reduction_factor=1), "reduction_factor must be an integer >= 2, got 1"),
    (dict(sampler="grid"), "unknown sampler 'grid'; expected one of: random, bayesian"),
    (dict(brackets=9), "brackets (9) must be <= the number of rungs (4) for min_epochs=1, "
                       "max_epochs=27, reduction_factor=3"),
    (dict(epoch_budget=-3), "epoch_budget must be a whole number >= 0 (0 or None: no budget), "
                            "got -3"),
])
def test_argument_errors(kwargs, message):
    args = dict(min_epochs=1, max_epochs=27, reduction_factor=3)
    args.update(kwargs)
    with pytest.raises(ValueError) as err:
        ASHAOracle("val_loss", space(), **args)
    assert str(err.value) == message


@pytest.mark.parametrize("hp", [None, kt.HyperParameters()])
def test_empty_space_is_an_error(hp):
    with pytest.raises(ValueError) as err:
        ASHAOracle("val_loss", hp, min_epochs=1, max_epochs=9)
    assert str(err.value) == ("the search space is empty: pass hyperparameters with at least "
                              "one hyperparameter (keras_tuner.HyperParameters)")


def test_brackets_deal_new_configurations_round_robin(tmp_path):
    oracle = new_oracle(tmp_path, brackets=2)
    trials = [oracle.create_trial(f"w{i}") for i in range(6)]
    assert [(t.hyperparameters.values["tuner/bracket"], describe(t)[2:]) for t in trials] == \
        [(0, (0, 0, 1)), (1, (1, 0, 3))] * 3
    for t, s in zip(trials, [5.0, 3.0, 4.0, 1.0, 6.0, 2.0]):
        finish(oracle, t, s)
    # bracket 0 rung 0 has 3 results (best: trial 2 with 4.0); bracket 1 rung 1 has 3 (best:
    # trial 3 with 1.0). Higher rungs are served first.
    p1, p2 = oracle.create_trial("a"), oracle.create_trial("b")
    assert describe(p1)[1:] == (3, 2, 3, 9) and p1.hyperparameters.values["tuner/bracket"] == 1
    assert describe(p2)[1:] == (2, 1, 1, 3) and p2.hyperparameters.values["tuner/bracket"] == 0
    assert oracle.rung_sizes() == [3, 3, 0, 0]


def test_space_copy_equals_keras_tuners_copy_and_is_independent():
    from tuners.asha import _FastCopyHyperParameters

    space = _FastCopyHyperParameters()
    space.Float("lr", 1e-4, 1e-1, sampling="log")
    space.Choice("opt", ["adam", "sgd"])
    with space.conditional_scope("opt", ["sgd"]):
        space.Float("momentum", 0.0, 0.9)
    space.values["lr"] = 0.01
    fast = space.copy()
    stock = kt.HyperParameters.from_config(space.get_config())
    assert type(fast) is _FastCopyHyperParameters
    assert fast.get_config() == stock.get_config()
    fast.values["lr"] = 0.02
    fast.Int("units", 8, 64)
    fast.values["opt"] = "sgd"
    assert space.values == {"lr": 0.01, "opt": "adam"}
    assert [hp.name for hp in space.space] == ["lr", "opt", "momentum"]
    assert [hp.name for hp in fast.space] == ["lr", "opt", "momentum", "units"]
    assert fast.is_active("momentum") and not space.is_active("momentum")
