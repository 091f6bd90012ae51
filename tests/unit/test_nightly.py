"""benchmark.nightly / benchmark.regression with cheap fake providers: flags, tables, files."""

import io
import itertools
import json
import os
import subprocess
import sys
import textwrap

import pytest

from benchmark import nightly, regression


def cycling(values):
    it = itertools.cycle(values)
    return lambda: next(it)


def fake_suite():
    """Throughput, latency and loss with +-2 % noise, far inside their thresholds."""
    reg = nightly.Registry()
    reg.register("train_tp", cycling([1000.0, 1020.0, 985.0]), "bigger", 0.15, "events/s")
    reg.register("latency", cycling([2.0, 2.04, 1.97]), "smaller", 0.30, "ms")
    reg.register("smoke_loss", cycling([0.500, 0.505, 0.498]), "smaller", 0.05, "val_loss",
                 nightly.QUALITY)
    return reg.metrics()


def go(tmp_path, metrics=None, **kw):
    out, err = io.StringIO(), io.StringIO()
    code = nightly.run_nightly(metrics or fake_suite(), str(tmp_path / "baseline.json"),
                               history_path=str(tmp_path / "history.jsonl"), out=out, err=err,
                               **kw)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def baselined(tmp_path):
    code, out, _ = go(tmp_path, update_baseline=True)
    assert code == 0 and "baseline written" in out
    return tmp_path


def test_baseline_update_writes_medians_atomically(baselined):
    data = json.loads((baselined / "baseline.json").read_text())
    assert data["version"] == 1
    # 5 repeats by default: 1000, 1020, 985, 1000, 1020 -> median 1000
    assert data["metrics"]["train_tp"]["value"] == 1000.0
    assert data["metrics"]["train_tp"]["values"] == [1000.0, 1020.0, 985.0, 1000.0, 1020.0]
    assert data["metrics"]["latency"] == {"value": 2.0, "direction": "smaller",
                                          "threshold": 0.3, "unit": "ms",
                                          "values": [2.0, 2.04, 1.97, 2.0, 2.04]}
    assert not [f for f in os.listdir(baselined) if f.startswith(".tmp")]


def test_three_clean_reruns_flag_nothing(baselined):
    for _ in range(3):
        code, out, _ = go(baselined)
        assert code == 0, out
        assert "REGRESSION" not in out
        assert out.count(" ok") == 3
    lines = (baselined / "history.jsonl").read_text().splitlines()
    assert len(lines) == 4  # the baseline run + three reruns
    last = json.loads(lines[-1])
    assert last["regressions"] == [] and last["exit_status"] == 0
    assert {r["name"]: r["status"] for r in last["results"]} == {
        "train_tp": "ok", "latency": "ok", "smoke_loss": "ok"}


def test_injected_slowdown_is_flagged(baselined):
    code, out, _ = go(baselined, slowdown=1.5)
    assert code == 1
    rows = {line.split()[0]: line for line in out.splitlines() if line[:1].isalpha()}
    assert rows["train_tp"].endswith("REGRESSION") and "-33.3%" in rows["train_tp"]
    assert rows["latency"].endswith("REGRESSION") and "+50.0%" in rows["latency"]
    assert rows["smoke_loss"].endswith("ok")
    assert "REGRESSION in train_tp, latency" in out
    entry = json.loads((baselined / "history.jsonl").read_text().splitlines()[-1])
    assert entry["regressions"] == ["train_tp", "latency"] and entry["exit_status"] == 1
    assert entry["injected"] == {"slowdown": 1.5, "quality_drop": 0.0}


def test_injected_quality_drop_is_flagged(baselined):
    code, out, _ = go(baselined, quality_drop=0.1)
    assert code == 1
    assert "REGRESSION in smoke_loss" in out
    row = next(line for line in out.splitlines() if line.startswith("smoke_loss"))
    assert "+10.0%" in row and "<= +5.0%" in row
    # a drop inside the threshold passes
    assert go(baselined, quality_drop=0.02)[0] == 0


def test_no_baseline_written_with_injection(baselined):
    before = (baselined / "baseline.json").read_text()
    code, _, err = go(baselined, slowdown=2.0, update_baseline=True)
    assert code == 2 and "not writing a baseline" in err
    assert (baselined / "baseline.json").read_text() == before


def test_missing_and_corrupt_baseline_are_clear_errors(tmp_path):
    calls = []
    reg = nightly.Registry()
    reg.register("x", lambda: calls.append(1) or 1.0, "bigger", 0.1)
    code, out, err = go(tmp_path, reg.metrics())
    assert code == 2 and calls == []  # nothing measured before the baseline is checked
    assert err.strip() == (f"error: baseline file {tmp_path}/baseline.json does not exist; "
                           "create it with --update_baseline")
    (tmp_path / "baseline.json").write_text('{"version": 1, "metrics": {"x": {"val')
    code, _, err = go(tmp_path, reg.metrics())
    assert code == 2 and f"baseline file {tmp_path}/baseline.json is not valid JSON" in err
    (tmp_path / "baseline.json").write_text('{"version": 1, "metrics": {"x": {"value": "a"}}}')
    code, _, err = go(tmp_path, reg.metrics(), update_baseline=True)
    assert code == 2 and "metric 'x' has no finite 'value'" in err
    assert calls == []


def test_failing_provider_and_new_metric(baselined):
    metrics = fake_suite()
    reg = nightly.Registry()
    reg.register("broken", nightly.lazy_provider("benchmark.no_such_module", "f"), "bigger", 0.1)
    reg.register("fresh", lambda: 7.0, "smaller", 0.1)
    code, out, _ = go(baselined, metrics + reg.metrics())
    assert code == 1
    assert ("ERROR (RuntimeError: provider benchmark.no_such_module.f not available "
            "(No module named 'benchmark.no_such_module'))") in out
    assert next(line for line in out.splitlines() if line.startswith("fresh")).endswith("new")


def test_compare_folds_direction_into_the_ratio():
    # bigger is better: worse ratio = baseline / value; 100 / 80 = 1.25 > 1.2 regresses
    assert regression.compare("t", 80.0, 100.0, "bigger", 0.2).status == "REGRESSION"
    assert regression.compare("t", 83.0, 100.0, "bigger", 0.2).status == "REGRESSION"  # 1.205
    assert regression.compare("t", 84.0, 100.0, "bigger", 0.2).status == "ok"  # 1.19
    assert regression.compare("t", 80.0, 100.0, "bigger", 0.2).ratio == pytest.approx(1.25)
    assert regression.compare("t", 121.0, 100.0, "smaller", 0.2).status == "REGRESSION"
    assert regression.compare("t", 80.0, 100.0, "smaller", 0.2).status == "improved"
    assert regression.compare("t", 125.0, 100.0, "bigger", 0.2).status == "improved"
    assert regression.compare("t", 110.0, 100.0, "bigger", 0.2).status == "ok"
    with pytest.raises(ValueError, match="direction must be one of"):
        regression.worse_ratio(1.0, 1.0, "up")


def test_cli_with_providers_module_and_env_slowdown(tmp_path):
    (tmp_path / "fake_nightly_providers.py").write_text(textwrap.dedent("""
        from benchmark import nightly
        nightly.register("fake_tp", lambda: 500.0, "bigger", 0.1, "events/s")
    """))
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.getcwd()}")
    cmd = [sys.executable, "-m", "benchmark.nightly", f"--baseline={tmp_path}/b.json",
           "--providers=fake_nightly_providers", "--metrics=fake_tp", "--repeats=2",
           f"--history={tmp_path}/h.jsonl"]
    first = subprocess.run(cmd + ["--update_baseline"], env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    slow = subprocess.run(cmd, env=dict(env, MLPF_NIGHTLY_INJECT_SLOWDOWN="1.25"),
                          capture_output=True, text=True)
    assert slow.returncode == 1, slow.stderr
    assert "REGRESSION in fake_tp" in slow.stdout
    assert len((tmp_path / "h.jsonl").read_text().splitlines()) == 2
    bad = subprocess.run(cmd + ["--metrics=nope"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown metric(s) nope" in bad.stderr


def test_a_change_inside_the_noise_is_not_a_regression():
    """Runs spreading by +-20%: a median 20% worse is inside the band (3 robust spreads)."""
    base = [100.0, 80.0, 120.0, 95.0, 110.0]
    new = [80.0, 64.0, 96.0, 76.0, 88.0]  # every repeat 20% lower, same spread
    c = regression.compare("tp", 80.0, 100.0, "bigger", 0.10, values=new, baseline_values=base)
    assert c.band > 0.2 and c.status == regression.OK


def test_a_steady_20_percent_slowdown_is_caught_and_one_outlier_is_not():
    base = [100.0, 101.0, 99.0, 100.5, 99.5]
    slow = [83.0, 84.0, 82.5, 83.5, 84.5]  # 1 / 1.2 = 0.833
    c = regression.compare("tp", 83.5, 100.0, "bigger", 0.10, values=slow, baseline_values=base)
    assert c.status == regression.REGRESSION
    assert c.ratio == pytest.approx(100.0 / 83.5)
    assert c.band == pytest.approx(0.10)  # noise far below the threshold
    assert c.p_value == pytest.approx(1 / 252)  # exact one-sided U test, 5 vs 5, all worse
    one_bad = [100.0, 60.0, 99.0, 101.0, 100.0]
    c = regression.compare("tp", 100.0, 100.0, "bigger", 0.10, values=one_bad,
                           baseline_values=base)
    assert c.status == regression.OK
    # medians 15% worse but the repeats overlap: the test does not confirm it
    mixed = [86.0, 101.0, 85.0, 99.0, 87.0]
    c = regression.compare("tp", 87.0, 100.0, "bigger", 0.10, values=mixed,
                           baseline_values=base)
    assert c.ratio > 1.1 + 1e-9 and c.status == regression.OK and c.p_value > 0.05
    assert regression.compare("lat", 1.25, 1.0, "smaller", 0.10, values=[1.25, 1.24, 1.26],
                              baseline_values=[1.0, 1.01, 0.99]).status == regression.REGRESSION


def test_slowdown_switch_burns_cpu_time(monkeypatch):
    import time

    from benchmark import slowdown

    monkeypatch.setenv(slowdown.ENV, "0.5")
    assert slowdown.fraction() == 0.5
    t0 = time.process_time()
    slowdown.pad(0.04)
    assert time.process_time() - t0 >= 0.02
    monkeypatch.setenv(slowdown.ENV, "fast")
    with pytest.raises(ValueError, match="MLPF_BENCH_SLOWDOWN='fast' is not a number"):
        slowdown.fraction()
