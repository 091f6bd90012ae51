"""One result per trial (its last epoch) in every oracle and in best.json; Hyperband's ladder;
paired seeds (the same first configurations for every tuner)."""

import keras_tuner as kt
import pytest

from benchmark.config import Config
from benchmark.run import summarize
from tuners.config import SearchConfig
from tuners.hyperband import LadderHyperbandOracle
from tuners.oracles import make_oracle, stop_reason
from tuners.records import TrialRecorder

# Trial "dip" reports 0.3 then 0.9: its best epoch is the best value seen, its last epoch the
# worst. Trial "steady" reports 0.6 then 0.5. Ranked by the last epoch, steady (0.5) wins.
DIP, STEADY = (0.3, 0.9), (0.6, 0.5)


def space():
    hp = kt.HyperParameters()
    hp.Float("lr", 1e-4, 3e-2, sampling="log")
    hp.Int("batch_size", 4, 32, step=4)
    return hp


def run_two_trials(oracle):
    """Create two trials, report DIP and STEADY over their epochs, end them; their ids."""
    ids = []
    for curve in (DIP, STEADY):
        trial = oracle.create_trial("w0")
        assert trial.status == "RUNNING"
        start = int(trial.hyperparameters.values.get("tuner/initial_epoch", 0))
        for step, value in enumerate(curve, start=start + 1):
            oracle.update_trial(trial.trial_id, {"val_loss": value}, step=step)
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
        ids.append(trial.trial_id)
    return ids


def ready(oracle, tmp_path, name):
    """The oracle with a project directory (keras-tuner writes trial files there)."""
    oracle._set_project_dir(str(tmp_path), name)
    oracle.verbose = 0
    return oracle


def new_oracle(tmp_path, tuner, **kw):
    cfg = SearchConfig(tuner=tuner, max_trials=0, node_hour_budget=1.0, seed=3,
                       num_initial_points=2, **kw)
    return ready(make_oracle(cfg, space()), tmp_path, tuner)


@pytest.mark.parametrize("tuner", ["asha", "asha_bo", "random", "hyperband"])
def test_a_trial_that_dips_then_rises_is_scored_by_its_last_epoch(tmp_path, tuner):
    oracle = new_oracle(tmp_path, tuner, min_epochs=2, max_epochs=4, reduction_factor=2)
    dip, steady = run_two_trials(oracle)
    assert oracle.trials[dip].score == pytest.approx(0.9)
    assert oracle.trials[steady].score == pytest.approx(0.5)
    assert oracle.trials[dip].best_step == 2 or tuner in ("asha", "asha_bo", "hyperband")
    assert [t.trial_id for t in oracle.get_best_trials(2)] == [steady, dip]
    if tuner in ("asha", "asha_bo", "hyperband"):
        # two results at the 2-epoch rung, eta 2: one promotion, and it is "steady"
        promotion = oracle.create_trial("w1")
        values = promotion.hyperparameters.values
        assert values["tuner/trial_id"] == steady
        assert (values["tuner/initial_epoch"], values["tuner/epochs"]) == (2, 4)


def test_stock_keras_tuner_would_promote_the_dip(tmp_path):
    """The bias this fixes: keras-tuner's own Hyperband scores by the best epoch."""
    oracle = kt.oracles.HyperbandOracle(objective=kt.Objective("val_loss", "min"),
                                        hyperparameters=space(), max_epochs=2, factor=2, seed=3)
    oracle._set_project_dir(str(tmp_path), "stock")
    oracle.verbose = 0
    dip, _ = run_two_trials(oracle)
    assert oracle.trials[dip].score == pytest.approx(0.3)
    assert oracle.create_trial("w1").hyperparameters.values["tuner/trial_id"] == dip


def test_hyperband_ladder_starts_at_min_epochs(tmp_path):
    oracle = ready(LadderHyperbandOracle(objective=kt.Objective("val_loss", "min"),
                                         hyperparameters=space(), min_epochs=5, max_epochs=100,
                                         factor=3, seed=1), tmp_path, "hb")
    assert oracle.rung_epochs == [5, 15, 45, 100]
    assert oracle._get_num_brackets() == 4
    # the most aggressive bracket (3 halvings) starts at min_epochs, every bracket ends at max
    assert [oracle._get_epochs(3, r) for r in range(4)] == [5, 15, 45, 100]
    assert [oracle._get_epochs(b, b) for b in range(4)] == [100] * 4
    assert [oracle._get_size(3, r) for r in range(4)] == [27, 9, 3, 1]
    assert [oracle._get_size(0, 0)] == [4]
    first = oracle.create_trial("w0").hyperparameters.values
    assert first["tuner/epochs"] == 5 and first["tuner/initial_epoch"] == 0


def test_hyperband_ladder_equals_keras_tuner_when_min_epochs_is_one():
    ours = LadderHyperbandOracle(objective="val_loss", hyperparameters=space(), min_epochs=1,
                                 max_epochs=27, factor=3, seed=1)
    stock = kt.oracles.HyperbandOracle(objective="val_loss", hyperparameters=space(),
                                       max_epochs=27, factor=3, seed=1)
    assert ours._get_num_brackets() == stock._get_num_brackets() == 4
    for b in range(4):
        for r in range(b + 1):
            assert ours._get_epochs(b, r) == stock._get_epochs(b, r), (b, r)
            assert ours._get_size(b, r) == stock._get_size(b, r), (b, r)


def test_hyperband_state_round_trip_keeps_the_ladder(tmp_path):
    oracle = new_oracle(tmp_path, "hyperband", min_epochs=2, max_epochs=8, reduction_factor=2,
                        hyperband_iterations=0)
    state = oracle.get_state()
    again = LadderHyperbandOracle(objective="val_loss", hyperparameters=space(), max_epochs=3,
                                  factor=3)
    again.set_state(state)
    assert again.rung_epochs == [2, 4, 8] and again.hyperband_iterations == float("inf")


def test_best_json_ranks_by_the_last_epoch(tmp_path):
    rec = TrialRecorder(tmp_path, "s1")
    for trial, curve in (("dip", DIP), ("steady", STEADY)):
        for epoch, value in enumerate(curve, start=1):
            rec.append("epoch", trial, epoch=epoch, metrics={"val_loss": value})
        rec.append("trial_end", trial, status="COMPLETED", metrics={"val_loss": curve[-1]},
                   hyperparameters={}, epochs=len(curve), initial_epoch=0, node_hours=0.1)
    summary = summarize(str(tmp_path), Config())
    assert summary["best"]["trial_id"] == "steady"
    assert summary["best"]["val_loss"] == pytest.approx(0.5)


@pytest.mark.parametrize("tuner", ["hyperband", "asha", "asha_bo"])
def test_seed_s_gives_every_tuner_the_same_first_configurations(tmp_path, tuner):
    """Paired seeds: the first random configurations of a seed are Random Search's."""
    def first(name, n=3):
        cfg = SearchConfig(tuner=name, max_trials=0, node_hour_budget=1.0, seed=7,
                           min_epochs=1, max_epochs=9, reduction_factor=3, num_initial_points=3)
        oracle = ready(make_oracle(cfg, space()), tmp_path, name)
        out = []
        for i in range(n):
            values = oracle.create_trial(f"w{i}").hyperparameters.values
            out.append({k: v for k, v in values.items() if not k.startswith("tuner/")})
        return out

    assert first(tuner) == first("random")


def test_stop_reason_names_each_limit(tmp_path):
    capped = ready(make_oracle(SearchConfig(tuner="random", max_trials=1), space()), tmp_path,
                   "capped")
    capped.create_trial("w0")
    assert stop_reason(capped) == "max_trials"
    assert stop_reason(capped, budget_spent=True) == "node_hour_budget"
    finite = make_oracle(SearchConfig(tuner="hyperband", max_trials=0, hyperband_iterations=1,
                                      max_epochs=2, min_epochs=1, reduction_factor=2), space())
    assert stop_reason(finite) == "hyperband_iterations"
