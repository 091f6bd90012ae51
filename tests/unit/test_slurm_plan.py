"""SLURM launch plan: node-list parsing and the exact dry-run commands for a faked 3-node job."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmark.slurm_plan import SlurmJob, SlurmPlanError, expand_nodelist, main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("text, hosts", [
    ("jwb[0001-0003]", ["jwb0001", "jwb0002", "jwb0003"]),
    ("n[1-2,7],login3", ["n1", "n2", "n7", "login3"]),
    ("a[08-10]-ib", ["a08-ib", "a09-ib", "a10-ib"]),
    ("solo", ["solo"]),
])
def test_expand_nodelist(text, hosts):
    assert expand_nodelist(text) == hosts


@pytest.mark.parametrize("text, message", [
    ("n[3-1]", "empty range '3-1'"),
    ("n[a-b]", "bad range 'a-b'"),
    ("n[1-2", "cannot parse 'n[1-2'"),
])
def test_bad_nodelist(text, message):
    with pytest.raises(SlurmPlanError, match=re.escape(message)):
        expand_nodelist(text)


def fake_env(**extra):
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "jwb[0001-0003]", "SLURM_NNODES": "3",
           "MLPF_RANKS_PER_NODE": "4", "MLPF_GPUS_PER_NODE": "4", "MLPF_PYTHON": "python",
           "MLPF_CHIEF_PORT": "9000", "MLPF_OUTPUT_DIR": "/scratch/runs"}
    env.update(extra)
    return env


COMMON = ("--launch.workers=3 --launch.ranks_per_worker=4 --launch.ranks_per_node=4 "
          "--launch.accelerators_per_node=4 --launch.output_dir=/scratch/runs "
          "--launch.run_name=slurm-4242 --launch.system=slurm --search_id=4242 "
          "--chief_address=jwb0001:9000 --tuner=asha_bo --seed=3")
EXPECTED = [
    "srun --nodes=1 --ntasks=1 --nodelist=jwb0001 --overlap --cpus-per-task=1 "
    "--signal=USR1@600 python -m benchmark.run --role=chief " + COMMON,
] + [
    f"srun --gpus-per-node=4 --nodes=1 --ntasks=1 --nodelist=jwb000{i + 1} --overlap "
    f"--kill-on-bad-exit=1 horovodrun -np 4 -H localhost:4 --gloo python -m benchmark.run --role=worker "
    f"--worker_id={i} " + COMMON
    for i in range(3)
]


def test_dry_run_prints_exact_commands(capsys):
    assert main(["--dry_run", "--", "--tuner=asha_bo", "--seed=3"], env=fake_env()) == 0
    assert capsys.readouterr().out.splitlines() == EXPECTED


def test_srun_launcher_starts_ranks_itself():
    job = SlurmJob.from_env(fake_env(MLPF_LAUNCHER="srun", MLPF_GPUS_PER_NODE="0"))
    worker = job.commands([])[1]
    assert worker[:7] == ["srun", "--nodes=1", "--ntasks=4", "--ntasks-per-node=4",
                          "--nodelist=jwb0001", "--overlap", "--kill-on-bad-exit=1"]
    assert "horovodrun" not in worker


@pytest.mark.parametrize("change, message", [
    ({"SLURM_JOB_NODELIST": ""}, "SLURM_JOB_NODELIST or SLURM_NODELIST is not set"),
    ({"SLURM_NNODES": "4"}, "SLURM_NNODES=4 but the node list names 3 nodes"),
    ({"MLPF_RANKS_PER_NODE": "0"}, "MLPF_RANKS_PER_NODE=0: must be >= 1"),
    ({"MLPF_LAUNCHER": "mpirun"}, "MLPF_LAUNCHER='mpirun': must be horovodrun or srun"),
])
def test_bad_environment_is_named(change, message, capsys):
    assert main(["--dry_run"], env=fake_env(**change)) == 2
    assert message in capsys.readouterr().err


def test_sbatch_script_dry_run_against_faked_slurm():
    """The sbatch template itself, sourced system profile included, in a faked 3-node job."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(SLURM_JOB_ID="4242", SLURM_JOB_NODELIST="jwb[0001-0003]", SLURM_NNODES="3",
               SYSTEM="juwels_booster", DRY_RUN="1", MLPF_ROOT=str(ROOT),
               MLPF_PYTHON=sys.executable, MLPF_OUTPUT_DIR="/scratch/runs")
    out = subprocess.run(["bash", str(ROOT / "launch/slurm/run_search.sbatch"), "--tuner=asha_bo",
                          "--seed=3"], env=env, capture_output=True, text=True, timeout=120,
                         check=True).stdout.splitlines()
    assert out == [line.replace("python -m", f"{sys.executable} -m").replace(":9000", ":8470")
                   for line in EXPECTED]


def test_sbatch_unknown_system():
    env = dict(os.environ, SYSTEM="nope", MLPF_ROOT=str(ROOT))
    proc = subprocess.run(["bash", str(ROOT / "launch/slurm/run_search.sbatch")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "no system profile" in proc.stderr and "nope.env" in proc.stderr


def test_signal_lead_and_resume_job(capsys):
    """The chief's step gets SIGUSR1 --signal_lead seconds before the time limit; a job that
    resumes another one's search uses its run directory and search id, the chief --resume."""
    chief = SlurmJob.from_env(fake_env()).commands([])[0]
    assert "--signal=USR1@600" in chief and "--resume" not in chief
    assert main(["--dry_run", "--signal_lead=900", "--resume_job=4000", "--", "--seed=3"],
                env=fake_env()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("srun --nodes=1 --ntasks=1 --nodelist=jwb0001 --overlap "
                               "--cpus-per-task=1 --signal=USR1@900 python -m benchmark.run "
                               "--role=chief ")
    assert lines[0].endswith(" --seed=3 --resume")
    for line in lines:
        assert "--launch.run_name=slurm-4000 " in line and " --search_id=4000 " in line
    assert all("--signal" not in line and "--resume" not in line for line in lines[1:])
    assert main(["--dry_run", "--signal_lead=0"], env=fake_env()) == 0
    assert "--signal" not in capsys.readouterr().out


def test_requeued_job_resumes_its_own_search():
    chief = SlurmJob.from_env(fake_env(SLURM_RESTART_COUNT="1")).commands([])[0]
    assert chief[-1] == "--resume" and "--search_id=4242" in chief


@pytest.mark.parametrize("argv, message", [
    (["--signal_lead=-5"], "error: --signal_lead='-5': expected whole seconds >= 0 (0: no "
     "wall-time signal)"),
    (["--signal_lead=ten"], "error: --signal_lead='ten': expected whole seconds >= 0 (0: no "
     "wall-time signal)"),
    (["--resume_job=../x"], "error: --resume_job='../x': expected a SLURM job id, e.g. 4242"),
])
def test_bad_plan_options_are_named(argv, message, capsys):
    assert main(["--dry_run", *argv], env=fake_env()) == 2
    assert capsys.readouterr().err.splitlines() == [message]


def test_sigusr1_to_the_plan_reaches_the_chief():
    """execute() passes the batch shell's SIGUSR1 on to the chief; the chief's exit code is
    the plan's and the worker is stopped."""
    chief = [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGUSR1, "
             "lambda *_: sys.exit(7)); print('ready', flush=True); time.sleep(60)"]
    worker = [sys.executable, "-c", "import time; time.sleep(60)"]
    script = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
              "from benchmark.slurm_plan import execute; "
              f"sys.exit(execute([{chief!r}, {worker!r}]))")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    started = time.monotonic()
    proc.send_signal(signal.SIGUSR1)
    assert proc.wait(30) == 7
    assert time.monotonic() - started < 20  # not the workers' 60 s sleep
