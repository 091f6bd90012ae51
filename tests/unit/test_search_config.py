"""The ``search`` config section (validation messages naming the flag) and ``make_oracle``
building each of the four oracles over one search space and producing trials."""

import keras_tuner as kt
import pytest
import yaml

from mlpf_tf.configbase import ConfigError
from tuners.asha import ASHABOOracle, ASHAOracle
from tuners.config import SearchConfig
from tuners.hyperband import LadderHyperbandOracle
from tuners.oracles import LastEpochRandomOracle, make_oracle


def test_defaults_validate_and_round_trip_through_yaml():
    cfg = SearchConfig()
    cfg.validate()
    assert (cfg.tuner, cfg.objective, cfg.direction) == ("asha", "val_loss", "min")
    assert SearchConfig.SECTION == "search"
    again = SearchConfig.from_dict(yaml.safe_load(yaml.safe_dump(cfg.to_dict())))
    assert again == cfg


@pytest.mark.parametrize("changes, message", [
    (dict(tuner="bohb"), "--search.tuner='bohb': must be one of random, hyperband, asha, asha_bo"),
    (dict(direction="up"), "--search.direction='up': must be one of min, max"),
    (dict(reduction_factor=1), "--search.reduction_factor=1: must be >= 2"),
    (dict(min_epochs=0), "--search.min_epochs=0: must be >= 1"),
    (dict(node_hour_budget=-1.0), "--search.node_hour_budget=-1.0: must be >= 0.0"),
    (dict(max_trials=2.5), "--search.max_trials=2.5: expected an integer"),
    (dict(seed=0), "--search.seed=0: must be >= 1"),
    (dict(space="huge"), "--search.space='huge': must be one of reference, reduced"),
    (dict(objective=" "), "--search.objective=' ': must name a metric, e.g. val_loss"),
    (dict(min_epochs=10, max_epochs=5), "--search.min_epochs=10: must be <= --search.max_epochs (5)"),
    (dict(brackets=5, min_epochs=1, max_epochs=27),
     "--search.brackets=5: must be <= the number of rungs (4) for --search.min_epochs=1, "
     "--search.max_epochs=27, --search.reduction_factor=3"),
    (dict(tuner="asha_bo", max_trials=0),
     "--search.max_trials=0: --search.tuner=asha_bo needs a limit: set --search.max_trials, "
     "--search.node_hour_budget, --search.epoch_budget above 0"),
    (dict(tuner="random", max_trials=0),
     "--search.max_trials=0: --search.tuner=random needs a limit: set --search.max_trials, "
     "--search.node_hour_budget above 0"),
    (dict(tuner="hyperband", max_trials=0, hyperband_iterations=0),
     "--search.max_trials=0: --search.tuner=hyperband needs a limit: set --search.max_trials, "
     "--search.node_hour_budget or --search.hyperband_iterations above 0"),
])
def test_bad_values_name_the_flag(changes, message):
    cfg = SearchConfig().replace(**changes)
    with pytest.raises(ConfigError) as err:
        cfg.validate()
    assert str(err.value) == message


def test_budget_alone_is_enough_for_every_tuner():
    SearchConfig(tuner="asha", max_trials=0, node_hour_budget=2.0).validate()
    SearchConfig(tuner="asha", max_trials=0, epoch_budget=500).validate()
    SearchConfig(tuner="random", max_trials=0, node_hour_budget=2.0).validate()
    SearchConfig(tuner="hyperband", max_trials=0, hyperband_iterations=0,
                 node_hour_budget=2.0).validate()


def space():
    hp = kt.HyperParameters()
    hp.Float("lr", 1e-4, 3e-2, sampling="log")
    hp.Int("batch_size", 4, 32, step=4)
    hp.Boolean("layernorm")
    return hp


@pytest.mark.parametrize("tuner, kind", [
    ("random", LastEpochRandomOracle),
    ("hyperband", LadderHyperbandOracle),
    ("asha", ASHAOracle),
    ("asha_bo", ASHABOOracle),
])
def test_make_oracle_builds_each_tuner_and_it_produces_trials(tmp_path, tuner, kind):
    cfg = SearchConfig(tuner=tuner, max_trials=12, max_epochs=9, min_epochs=1,
                       reduction_factor=3, num_initial_points=3, seed=5)
    hp = space()
    oracle = make_oracle(cfg, hp)
    assert type(oracle) is kind
    assert oracle.objective == kt.Objective("val_loss", "min")
    assert oracle.max_trials == 12
    oracle._set_project_dir(str(tmp_path), tuner)
    oracle.verbose = 0
    epochs = []
    for i in range(12):
        trial = oracle.create_trial("w0")
        assert trial.status == "RUNNING", (tuner, i)
        values = trial.hyperparameters.values
        assert 1e-4 <= values["lr"] <= 3e-2 and values["batch_size"] % 4 == 0
        assert isinstance(values["layernorm"], bool)
        epochs.append(values.get("tuner/epochs", cfg.max_epochs))
        oracle.update_trial(trial.trial_id, {"val_loss": values["lr"] * 10 + 1 / epochs[-1]})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)
    assert oracle.create_trial("w0").status == "STOPPED"
    assert len(oracle.trials) == 12
    if tuner == "random":
        assert epochs == [9] * 12
    else:
        assert max(epochs) <= 9 and min(epochs) <= 3  # multi-fidelity budgets are handed out
    if tuner in ("asha", "asha_bo"):
        assert (oracle.min_epochs, oracle.max_epochs, oracle.reduction_factor) == (1, 9, 3)
        assert sum(oracle.rung_sizes()) == 12


def test_make_oracle_passes_the_budgets_and_direction():
    cfg = SearchConfig(tuner="asha_bo", direction="max", objective="val_acc", max_trials=0,
                       node_hour_budget=4.5, epoch_budget=300, brackets=2,
                       bo_max_fit_points=64, bo_gp_restarts=0)
    oracle = make_oracle(cfg, space())
    assert oracle.objective == kt.Objective("val_acc", "max")
    # the node-hour budget is charged on allocated hours by the issuer, not the oracle
    assert (oracle.max_trials, oracle.node_hour_budget, oracle.epoch_budget) == (None, None, 300)
    assert oracle.ladder.brackets == 2 and oracle.ladder.budgets == [5, 15, 45, 100]
    assert (oracle.sampler.max_fit_points, oracle.sampler.gp_restarts) == (64, 0)
    with pytest.raises(ConfigError, match="--search.brackets=7"):
        make_oracle(cfg.replace(brackets=7), space())
