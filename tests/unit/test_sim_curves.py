"""Learning-curve sources: the parametric surrogate and the recorded table."""

import math
import time

import keras_tuner
import numpy as np
import pandas as pd
import pytest

from benchmark.sim.curves import (
    CurveError,
    CurveTable,
    Surrogate,
    fit_power_law,
    load_curves,
    write_curves,
)
from tuners.space import build_space


def space():
    hp = keras_tuner.HyperParameters()
    hp.Float("lr", 1e-4, 3e-2, sampling="log")
    hp.Int("batch_size", 4, 32, step=4)
    hp.Int("output_dim", 64, 512, step=64)
    hp.Float("dropout", 0.0, 0.5)
    hp.Boolean("layernorm")
    hp.Choice("bin_size", [16, 64, 160])
    return hp


def random_configs(hp, n, seed=0):
    rng = np.random.default_rng(seed)
    hps = {p.name: p for p in hp.space}
    return [{name: p.prob_to_value(float(rng.uniform())) for name, p in hps.items()}
            for _ in range(n)]


def test_surrogate_noiseless_curve_decreases_strictly_in_epoch():
    sur = Surrogate(space(), noise=0.0)
    for values in random_configs(sur.space, 50):
        losses = np.array(sur.val_losses(values, 0, 100))
        assert losses.shape == (100,)
        assert np.all(np.diff(losses) < 0)
        a, b, c = sur.params(values)
        assert losses[-1] > a and b > 0 and c > 0
        assert losses[0] == pytest.approx(a + b)


def test_surrogate_continuation_equals_the_parent_curve_and_noise_is_seeded():
    sur = Surrogate(space(), noise=0.01, noise_seed=3)
    values = random_configs(sur.space, 1)[0]
    whole = sur.val_losses(values, 0, 40)
    assert sur.val_losses({**values, "tuner/epochs": 40, "tuner/initial_epoch": 10,
                           "tuner/trial_id": "7"}, 10, 40) == whole[10:]
    assert Surrogate(space(), noise=0.01, noise_seed=3).val_losses(values, 0, 40) == whole
    other = Surrogate(space(), noise=0.01, noise_seed=4).val_losses(values, 0, 40)
    assert other != whole
    # The noise is relative and small: the noisy curve stays within 5 sigma of the clean one.
    clean = np.array(Surrogate(space(), noise=0.0).val_losses(values, 0, 40))
    assert np.max(np.abs(np.array(whole) / clean - 1.0)) < 0.05


def test_surrogate_optimum_is_where_asked_and_learnable_from_samples():
    hp = space()
    optimum = {"lr": 1e-3, "batch_size": 16, "output_dim": 256, "dropout": 0.1,
               "layernorm": True, "bin_size": 64}
    sur = Surrogate(hp, noise=0.0, optimum=optimum)
    best_a = sur.params(optimum)[0]
    assert best_a == pytest.approx(sur.a_min)
    configs = random_configs(hp, 400, seed=1)
    assert all(sur.params(v)[0] >= best_a for v in configs)
    # Learnable: a quadratic fitted per dimension to noisy long-run losses (where the b, c terms
    # have decayed) of random configs puts the optimum of the two most important
    # (heaviest-weighted) numeric dimensions within 0.1 of the truth.
    noisy = Surrogate(hp, noise=0.005, optimum=optimum, noise_seed=2)
    u = np.stack([noisy.normalise(v) for v in configs])
    y = np.array([noisy.val_losses(v, 9999, 10000)[0] for v in configs])
    design = np.concatenate([np.ones((len(u), 1)), u, u * u], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    n = u.shape[1]
    lin, quad = coef[1:1 + n], coef[1 + n:]
    numeric = [noisy.names.index(n) for n in ("lr", "batch_size", "output_dim", "dropout")]
    for i in sorted(numeric, key=lambda i: noisy.weights[i])[-2:]:
        assert quad[i] > 0
        assert abs(-lin[i] / (2 * quad[i]) - noisy.u_star[i]) < 0.1


def test_surrogate_epoch_time_grows_with_size_and_falls_with_batch():
    sur = Surrogate(space(), noise=0.0, base_epoch_seconds=60.0)
    base = {"lr": 1e-3, "batch_size": 16, "output_dim": 256, "dropout": 0.1, "layernorm": True,
            "bin_size": 64}
    t = sur.epoch_seconds(base)
    assert sur.epoch_seconds({**base, "output_dim": 512}) > t
    assert sur.epoch_seconds({**base, "batch_size": 32}) < t
    assert sur.epoch_seconds({**base, "lr": 1e-2}) == pytest.approx(t)
    assert 20.0 < t < 180.0


def test_surrogate_rejects_values_outside_the_space():
    sur = Surrogate(space())
    with pytest.raises(CurveError, match=r"hyperparameter bin_size=17 is not in the search"):
        sur.val_losses({"bin_size": 17}, 0, 3)
    with pytest.raises(CurveError, match="need 0 <= initial_epoch <= epochs"):
        sur.val_losses({}, 5, 3)


def table_rows():
    rows = []
    for cid, (lr, dim, scale) in enumerate([(1e-3, 64, 1.0), (1e-2, 512, 2.0)]):
        for epoch in range(1, 6):
            rows.append({"config_id": f"c{cid}", "lr": lr, "output_dim": dim, "epoch": epoch,
                         "val_loss": scale * (1.0 + 1.0 / epoch), "epoch_seconds": 10.0 * scale})
    return rows


def test_table_round_trip_nearest_lookup_and_extrapolation(tmp_path):
    path = tmp_path / "curves.csv"
    write_curves(path, table_rows())
    header = path.read_text().splitlines()[0]
    assert header == "config_id,lr,output_dim,epoch,val_loss,epoch_seconds"
    table = load_curves(path, space=space())
    assert [c.config_id for c in table.curves] == ["c0", "c1"]
    near0 = {"lr": 1.2e-3, "batch_size": 8, "output_dim": 128, "dropout": 0.0,
             "layernorm": False, "bin_size": 16}
    near1 = {**near0, "lr": 8e-3, "output_dim": 448}
    assert table.nearest(near0).config_id == "c0"
    assert table.nearest(near1).config_id == "c1"
    assert table.val_losses(near0, 0, 5) == pytest.approx([1.0 + 1.0 / e for e in range(1, 6)])
    assert table.val_losses(near1, 2, 4) == pytest.approx([2.0 * (1 + 1 / 3), 2.0 * 1.25])
    assert table.epoch_seconds(near1) == 20.0
    # Beyond the recording: refused unless asked for ...
    with pytest.raises(CurveError, match="configuration c0 is recorded for 5 epochs, 30 asked; "
                       "refusing to extrapolate"):
        table.val_losses(near0, 0, 30)
    # ... then the fitted power law, joined continuously, still decreasing.
    table = load_curves(path, space=space(), extrapolate="power_law")
    longer = table.val_losses(near0, 0, 30)
    assert longer[:5] == pytest.approx(table.val_losses(near0, 0, 5))
    assert np.all(np.diff(longer) < 0)
    assert longer[-1] == pytest.approx(1.0 + 1.0 / 30, abs=0.01)
    # Without a space: min-max normalised table columns.
    free = load_curves(path)
    assert free.nearest({"lr": 2e-3, "output_dim": 100}).config_id == "c0"


def test_extrapolation_never_passes_the_best_recorded_curve(tmp_path):
    # c0 has the lowest recorded loss; c1 is worse over its 5 recorded epochs but falls so
    # steeply (8 / epoch) that its own power law would end far below c0 by epoch 30.
    rows = []
    for cid, lr, curve in (("c0", 1e-3, lambda e: 1.0 + 1.0 / e), ("c1", 1e-2, lambda e: 8.0 / e)):
        rows += [{"config_id": cid, "lr": lr, "epoch": e, "val_loss": curve(e),
                  "epoch_seconds": 1.0} for e in range(1, 6)]
    path = tmp_path / "curves.csv"
    write_curves(path, rows)
    table = load_curves(path, extrapolate="power_law")
    best = table.val_losses({"lr": 1e-3}, 0, 30)
    steep = table.val_losses({"lr": 1e-2}, 0, 30)
    assert steep[:5] == pytest.approx([8.0 / e for e in range(1, 6)])
    a, b, c = fit_power_law([8.0 / e for e in range(1, 6)])
    assert a + b * 30.0 ** -c < 0.5  # unbounded, c1 would extrapolate to half of c0's loss
    assert steep[-1] == pytest.approx(best[-1]) and best[-1] == pytest.approx(1.0 + 1.0 / 30,
                                                                              abs=0.01)
    assert np.all(np.asarray(steep[5:]) >= np.asarray(best[5:]) - 1e-12)
    assert np.all(np.diff(steep) <= 0)


def test_power_law_fit_recovers_parameters():
    e = np.arange(1, 21, dtype=float)
    a, b, c = fit_power_law(0.7 + 1.5 * e ** -0.8)
    assert (a, b, c) == (pytest.approx(0.7, abs=0.02), pytest.approx(1.5, abs=0.05),
                         pytest.approx(0.8, rel=0.06))


@pytest.mark.parametrize("mutate, message", [
    (lambda rows: [{k: v for k, v in r.items() if k != "val_loss"} for r in rows],
     "missing column(s) val_loss"),
    (lambda rows: [r for r in rows if not (r["config_id"] == "c1" and r["epoch"] == 3)],
     "config_id 'c1': epochs must run 1..n"),
    (lambda rows: [{**r, "lr": 0.5} if (r["config_id"] == "c0" and r["epoch"] == 2) else r
                   for r in rows], "config_id 'c0': hyperparameter 'lr' changes"),
    (lambda rows: [{**r, "val_loss": "oops"} if r["epoch"] == 4 else r for r in rows],
     "line 5: val_loss='oops' is not a finite number"),
])
def test_table_errors_name_the_file_and_the_problem(tmp_path, mutate, message):
    path = tmp_path / "bad.csv"
    pd.DataFrame(mutate(table_rows())).to_csv(path, index=False)
    with pytest.raises(CurveError) as err:
        load_curves(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_table_errors_for_missing_file_and_foreign_space(tmp_path):
    with pytest.raises(CurveError, match="no such curve table"):
        load_curves(tmp_path / "none.csv")
    path = tmp_path / "curves.csv"
    write_curves(path, table_rows())
    other = keras_tuner.HyperParameters()
    other.Float("momentum", 0.0, 1.0)
    with pytest.raises(CurveError, match="none of the search space's hyperparameters"):
        load_curves(path, space=other)
    assert isinstance(load_curves(path), CurveTable)
    assert math.isfinite(load_curves(path).val_losses({"lr": 1e-3}, 0, 2)[1])


class FakeResult:
    def __init__(self, losses):
        self.history = [{"epoch": i, "val_loss": v} for i, v in enumerate(losses)]
        self.epoch_seconds = [2.0] * len(losses)


def test_record_curves_writes_the_table_resumes_and_leaves_out_failures(tmp_path):
    from benchmark.sim import record as record_curves

    calls = []

    def fake_train(data_cfg, model_cfg, train_cfg, *, run_dir, initial_epoch, epochs,
                   context, on_epoch_end):
        calls.append(train_cfg.lr)
        if len(calls) == 2:
            raise FloatingPointError("loss became nan")
        return FakeResult([1.0 / train_cfg.lr * 1e-3 + 1.0 / (e + 1) for e in range(epochs)])

    out = tmp_path / "curves.csv"
    logs = []
    rows = record_curves.record("smoke", "reduced", 3, 4, 7, str(out), train_fn=fake_train,
                                log=logs.append)
    assert [line.split(":")[0] for line in logs] == ["[1/3] c000", "[2/3] c001", "[3/3] c002"]
    assert "left out (FloatingPointError: loss became nan)" in logs[1]
    table = load_curves(out, space=build_space("reduced"))
    assert [c.config_id for c in table.curves] == ["c000", "c002"]
    assert len(rows) == 8 and all(len(c.losses) == 4 for c in table.curves)
    drawn = record_curves.sample_configurations(build_space("reduced"), 3, 7)
    assert table.curves[0].values["lr"] == pytest.approx(drawn[0]["lr"])
    assert table.curves[0].losses[0] == pytest.approx(1e-3 / drawn[0]["lr"] + 1.0)
    assert table.curves[1].epoch_seconds == 2.0
    # A rerun skips what is complete and retries the configuration that failed.
    calls.clear()
    logs.clear()
    record_curves.record("smoke", "reduced", 3, 4, 7, str(out), train_fn=fake_train,
                         log=logs.append)
    assert logs[:2] == ["c000: already recorded", "c002: already recorded"]
    assert logs[2].startswith("[1/1] c001: 4 epochs in ")
    assert len(calls) == 1


def test_record_curves_runs_jobs_at_once_and_writes_the_table_in_order(tmp_path, monkeypatch):
    import threading

    from benchmark.sim import record as record_curves

    running, peak, lock = [0], [0], threading.Lock()

    def fake_child(index, experiment, space_name, configs, epochs, seed, threads):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05 * (3 - index))  # later configurations finish first
        with lock:
            running[0] -= 1
        return [{"config_id": f"c{index:03d}", "lr": 0.01, "batch_size": 8, "epoch": e,
                 "val_loss": 1.0 + index + 1.0 / e, "epoch_seconds": 1.0}
                for e in range(1, epochs + 1)]

    monkeypatch.setattr(record_curves, "record_in_child", fake_child)
    out = tmp_path / "curves.csv"
    logs = []
    record_curves.record("smoke", "reduced", 3, 2, 7, str(out), isolate=True, jobs=3,
                         log=logs.append)
    assert peak[0] == 3
    assert [line.split(":")[0] for line in logs] == ["[1/3] c002", "[2/3] c001", "[3/3] c000"]
    from benchmark.sim.curves import table_frame

    header, frame = table_frame(out)
    assert header["shard"] == "0/1" and header["configs"] == 3
    assert list(zip(frame.config_id, frame.epoch)) == [
        ("c000", 1), ("c000", 2), ("c001", 1), ("c001", 2), ("c002", 1), ("c002", 2)]
    with pytest.raises(CurveError, match=r"--jobs=2: must be >= 1, and > 1 needs --isolate"):
        record_curves.record("smoke", "reduced", 3, 2, 7, str(out), jobs=2)


def test_configuration_draws_depend_on_seed_and_index_only():
    from benchmark.sim import record as record_curves

    space = build_space("reduced")
    five = record_curves.sample_configurations(space, 5, 3)
    assert record_curves.sample_configurations(space, 2, 3) == five[:2]
    assert record_curves.sample_configurations(space, 2, 4) != five[:2]


@pytest.mark.slow
def test_record_curves_trains_the_real_model_in_a_child_process(tmp_path):
    """A real MLPF training on synthetic events (minutes on two cores)."""
    from benchmark.sim import record as record_curves

    out = tmp_path / "real.csv"
    logs = []
    record_curves.record("smoke", "reduced", 1, 2, 1, str(out), threads=2, isolate=True,
                         log=logs.append)
    table = load_curves(out, space=build_space("reduced"))
    assert logs[0].startswith("[1/1] c000: 2 epochs in")
    assert len(table.curves) == 1 and len(table.curves[0].losses) == 2
    assert table.curves[0].restore_seconds > table.curves[0].setup_seconds > 0
    assert np.all(np.isfinite(table.curves[0].losses)) and table.curves[0].epoch_seconds > 0


def test_extrapolation_of_a_steep_positive_curve_stays_positive_and_decreasing():
    from benchmark.sim.curves import RecordedCurve

    steep = np.array([2619.0, 1500.0, 1100.0, 900.0, 760.0, 660.0, 590.0, 540.0, 500.0, 475.0])
    a, b, c = fit_power_law(steep)
    assert a >= 0 and b > 0
    tail = RecordedCurve("x", {}, steep, 1.0).losses_until(100)
    assert tail[9] == 475.0 and np.all(np.diff(tail) < 0) and tail[-1] > 0
