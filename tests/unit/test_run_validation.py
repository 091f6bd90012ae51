"""benchmark.run: flag filling order and validation before any compute (exact messages)."""

import os
import subprocess
import sys

import pytest
from absl import flags

from benchmark import experiments, run
from mlpf_tf import distributed
from mlpf_tf.configbase import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def resolve(*argv):
    fv = flags.FlagValues()
    run.define_run_flags(fv)
    fv(["benchmark.run", *argv])
    return run.resolve_config(fv)


def error_of(*argv) -> str:
    with pytest.raises(ConfigError) as err:
        resolve(*argv)
    return str(err.value)


def test_defaults_are_the_smoke_preset():
    cfg = resolve()
    smoke = experiments.get("smoke").overrides
    assert cfg.experiment == "smoke"
    assert cfg.search.tuner == smoke["search"]["tuner"] == "asha"
    assert cfg.search.space == "reduced" and cfg.data.config == "gun"
    assert cfg.model.hidden_dim == smoke["model"]["hidden_dim"]
    assert cfg.launch.run_name == "smoke-asha-w1-s1"


def test_order_defaults_preset_flagfile_flags(tmp_path):
    flagfile = tmp_path / "search.cfg"
    flagfile.write_text("--model.bin_size=64\n--train.lr=0.005\n--tuner=hyperband\n")
    cfg = resolve(f"--flagfile={flagfile}", "--train.lr=0.002", "--max_trials=7",
                  "--experiment=delphes_paper", "--workers=1")
    assert cfg.model.bin_size == 64  # flagfile over preset (640)
    assert cfg.train.lr == 0.002  # command line over flagfile
    assert cfg.search.tuner == "hyperband" and cfg.search.max_trials == 7
    assert cfg.search.min_epochs == 5 and cfg.search.reduction_factor == 3  # preset
    assert cfg.model.distance_dim == 128 and cfg.launch.ranks_per_worker == 4  # preset
    assert cfg.launch.run_name == "delphes_paper-hyperband-w1-s1"


def test_unknown_experiment():
    assert error_of("--experiment=nope") == (
        "--experiment='nope': unknown experiment; known: compare, curves, delphes_paper, scaling, smoke")


def test_unknown_tuner():
    assert error_of("--tuner=grid") == (
        "--tuner='grid': unknown tuner; known: random, hyperband, asha, asha_bo")
    assert error_of("--search.tuner=grid") == (
        "--search.tuner='grid': must be one of random, hyperband, asha, asha_bo")


def test_negative_budget():
    assert error_of("--budget_node_hours=-1") == (
        "--budget_node_hours=-1.0: must be a finite number >= 0 (0 = no budget)")
    assert error_of("--search.node_hour_budget=-2") == (
        "--search.node_hour_budget=-2.0: must be >= 0.0")


def test_ranks_that_do_not_fit_the_nodes():
    assert error_of("--ranks_per_worker=3", "--ranks_per_node=2") == (
        "--launch.ranks_per_worker=3: does not fit the nodes: 3 ranks per worker with "
        "--launch.ranks_per_node=2 would split a node between workers; use a multiple of "
        "ranks_per_node")
    assert error_of("--ranks_per_worker=0") == "--ranks_per_worker=0: must be >= 1"


def test_several_workers_go_to_the_distributed_launcher():
    # --workers > 1 is a chief plus worker groups (benchmark.launcher), not an error
    cfg = resolve("--workers=4")
    assert cfg.launch.workers == 4 and cfg.launch.run_name == "smoke-asha-w4-s1"


def test_entry_point_rules():
    assert error_of("--search.executions_per_trial=2") == (
        "--search.executions_per_trial=2: the Horovod tuner trains each trial once; set it to 1")
    assert error_of("--run_name=a/b") == "--launch.run_name='a/b': must be a plain directory name"


def test_short_and_long_flags_must_agree():
    assert error_of("--tuner=asha", "--search.tuner=random") == (
        "--tuner='asha' conflicts with --search.tuner='random'; give one of them")
    assert resolve("--tuner=random", "--search.tuner=random").search.tuner == "random"


def test_run_dir_must_be_new_unless_resuming(tmp_path):
    cfg = resolve(f"--output_dir={tmp_path}", "--run_name=r1")
    run_dir, search_id = run.check_run_dir(cfg, resume=False)
    assert run_dir == str(tmp_path / "r1") and search_id.startswith("r1-")
    with pytest.raises(ConfigError, match=r"^--resume: .*params.yaml does not exist; nothing "
                                          r"to resume$"):
        run.check_run_dir(cfg, resume=True)
    (tmp_path / "r1").mkdir()
    (tmp_path / "r1" / "trials.jsonl").write_text("")
    with pytest.raises(ConfigError) as err:
        run.check_run_dir(cfg, resume=False)
    assert str(err.value) == (f"--launch.run_name='r1': run directory {tmp_path / 'r1'} already "
                              "exists; choose another --run_name or pass --resume")


def test_rank_count_must_match_the_launch(tmp_path):
    cfg = resolve(f"--output_dir={tmp_path}", "--ranks_per_worker=2", "--ranks_per_node=2")
    with pytest.raises(ConfigError) as err:
        run.plan_run(cfg, distributed.LOCAL)
    assert str(err.value) == (
        "--launch.ranks_per_worker=2, but this worker group has 1 rank(s): start it with "
        "horovodrun -np 2 (or set the flag to the number of ranks started)")
    assert not os.listdir(tmp_path)


def test_command_line_exits_2_before_compute(tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MLPF_DISABLE_HOROVOD="1")
    proc = subprocess.run(
        [sys.executable, "-m", "benchmark.run", f"--output_dir={tmp_path / 'out'}",
         "--budget_node_hours=-3"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().endswith(
        "benchmark.run: error: --budget_node_hours=-3.0: must be a finite number >= 0 "
        "(0 = no budget)")
    assert "tensorflow" not in proc.stderr.lower()  # nothing heavy was even imported
    assert not (tmp_path / "out").exists()


def test_every_config_field_is_a_documented_flag():
    import dataclasses

    from benchmark.config import SECTIONS

    fv = flags.FlagValues()
    run.define_run_flags(fv)
    for section in SECTIONS:
        for field in dataclasses.fields(section):
            flag = fv[f"{section.SECTION}.{field.name}"]
            assert field.metadata["help"] in flag.help
    for name in [*run.SHORT_FLAGS, "experiment", "resume"]:
        assert fv[name].help
