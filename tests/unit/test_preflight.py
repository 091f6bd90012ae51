"""Bad input to the command lines: one line on stderr, exit code 2, before any compute."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from benchmark import preflight
from benchmark.config import LaunchConfig
from mlpf_tf.configbase import ConfigError
from mlpf_tf.data.config import DataConfig

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_cores_x_threads_beyond_the_machine_is_refused_unless_oversubscribed():
    launch = LaunchConfig(workers=2, ranks_per_worker=2, ranks_per_node=2, threads_per_rank=1)
    preflight.check_cores(launch, cores=4)
    with pytest.raises(ConfigError) as err:
        preflight.check_cores(launch, cores=3)
    assert str(err.value) == (
        "--launch.workers=2 x --launch.ranks_per_worker=2 x --launch.threads_per_rank=1 needs "
        "4 cores; this machine has 3: lower them or pass --launch.oversubscribe")
    with pytest.raises(ConfigError, match="threads_per_rank=0 needs 6 cores; this machine "
                                          "has 3"):
        preflight.check_cores(launch.replace(workers=1, threads_per_rank=0), cores=3)
    preflight.check_cores(launch.replace(oversubscribe=True), cores=1)
    preflight.check_cores(launch.replace(workers=1, ranks_per_worker=1, ranks_per_node=1,
                                         threads_per_rank=0), cores=3)  # one rank, all cores


def test_output_dir_must_hold_a_run_directory_and_nothing_is_left_behind(tmp_path):
    preflight.check_output_dir(str(tmp_path / "a" / "b"))
    assert os.listdir(tmp_path) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError) as err:
        preflight.check_output_dir(str(tmp_path / "file" / "runs"))
    assert str(err.value) == (f"--launch.output_dir={tmp_path}/file/runs: {tmp_path}/file is "
                              "not a directory")
    with pytest.raises(ConfigError) as err:
        preflight.check_output_dir("/proc/x")
    assert str(err.value).startswith("--launch.output_dir=/proc/x: cannot create a run "
                                     "directory there (")
    assert sorted(os.listdir(tmp_path)) == ["file"]


def test_delphes_data_must_be_built_or_at_hand(tmp_path):
    missing = DataConfig(dataset="delphes_pf", config="default", data_dir=str(tmp_path / "no"))
    with pytest.raises(ConfigError) as err:
        preflight.check_data(missing)
    assert str(err.value) == (f"--data.data_dir={tmp_path}/no: no such directory (no built "
                              "delphes_pf dataset and no Delphes *.pkl.bz2 files)")
    empty = missing.replace(data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match=r"downloads/manual \(where the Delphes \*\.pkl\.bz2 "
                                          r"files go\) does not exist$"):
        preflight.check_data(empty)
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"downloads/manual holds no \*\.pkl\.bz2 files$"):
        preflight.check_data(empty)
    (manual / "tev14_pythia8_ttbar_0_0.pkl.bz2").write_bytes(b"")
    preflight.check_data(empty)  # raw files at hand: the dataset can be built
    built = tmp_path / "b" / "delphes_pf" / "default" / "1.0.0"
    built.mkdir(parents=True)
    (built / "dataset_info.json").write_text("{}")
    preflight.check_data(missing.replace(data_dir=str(tmp_path / "b")))
    preflight.check_data(SimpleNamespace(dataset="synthetic_pf"))  # generated: nothing needed


CASES = {
    "simulate_workers": (["benchmark.sim.replay", "--workers=0"],
                         "benchmark.sim.replay: error: --workers=0: must be >= 1"),
    "simulate_curves": (["benchmark.sim.replay", "--curves={table}"],
                        "benchmark.sim.replay: error: --curves={table}: not a learning-curve "
                        "table: {table}: missing column(s) config_id, epoch, val_loss, "
                        "epoch_seconds; a curve table has config_id, epoch, val_loss, "
                        "epoch_seconds and one column per hyperparameter"),
    "run_output_dir": (["benchmark.run", "--output_dir=/proc/x"],
                       "benchmark.run: error: --launch.output_dir=/proc/x: cannot create a run "
                       "directory there (No such file or directory)"),
    "run_data_dir": (["benchmark.run", "--experiment=delphes_paper",
                      "--data.data_dir={tmp}/missing", "--output_dir={tmp}/out"],
                     "benchmark.run: error: --data.data_dir={tmp}/missing: no such directory "
                     "(no built delphes_pf dataset and no Delphes *.pkl.bz2 files)"),
    "run_empty_data_dir": (["benchmark.run", "--experiment=delphes_paper",
                            "--data.data_dir={tmp}/empty", "--output_dir={tmp}/out"],
                           "benchmark.run: error: --data.data_dir={tmp}/empty: no built "
                           "delphes_pf dataset, and {tmp}/empty/downloads/manual (where the "
                           "Delphes *.pkl.bz2 files go) does not exist"),
    # the command: an unactivated venv (no horovodrun on PATH), 2 x 2 ranks x 2 threads
    "run_ranks_unactivated": (["benchmark.run", "--workers=2", "--ranks_per_worker=2",
                               "--output_dir={tmp}/out"],
                              "benchmark.run: error: --launch.workers=2 x "
                              "--launch.ranks_per_worker=2 x --launch.threads_per_rank=2 needs 8 "
                              "cores; this machine has {cores}: lower them or pass "
                              "--launch.oversubscribe"),
    "run_cores": (["benchmark.run", "--workers=64", "--output_dir={tmp}/out"],
                  "benchmark.run: error: --launch.workers=64 x --launch.ranks_per_worker=1 x "
                  "--launch.threads_per_rank=2 needs 128 cores; this machine has {cores}: "
                  "lower them or pass --launch.oversubscribe"),
}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", sorted(CASES))
def test_command_line_errors_are_one_line_exit_2_and_fast(case, tmp_path):
    """One line on stderr (TensorFlow's own start-up lines included: the checks come before
    any TensorFlow import), exit 2, no traceback, in < 10 s, nothing written."""
    table = tmp_path / "table.csv"
    table.write_text("a,b\n1,2\n")
    (tmp_path / "empty").mkdir()
    fill = dict(table=table, tmp=tmp_path, cores=preflight.usable_cores())
    if case == "run_ranks_unactivated" and fill["cores"] >= 8:
        pytest.skip("this machine has the cores for 2 x 2 ranks x 2 threads")
    argv, expected = CASES[case]
    argv = [a.format(**fill) for a in argv]
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "VIRTUAL_ENV")}
    env.update(MLPF_DISABLE_HOROVOD="1", PATH="/usr/bin:/bin")  # no venv on PATH
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=100)
    elapsed = time.monotonic() - started
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == expected.format(**fill)  # the whole of stderr: one line
    assert elapsed < 10.0, elapsed
    assert "Traceback" not in proc.stdout
    assert not (tmp_path / "out").exists()  # nothing written
