"""The simulated comparison of ``make run``: the Delphes preset replayed on the shipped table.

``benchmark.compare`` runs the real searches of the main job (minutes, three seeds, a small
model), then this: every tuner replays the reference study's search (the ``delphes`` preset:
12 nodes, one trial per node, max 100 epochs, grace 5, eta 3, 72 allocated node-hours per
search) on the shipped curve table :data:`SHIPPED_TABLE` for ``--simulated_seeds`` seeds (20 by
default), in a child process ``python -m benchmark.sim.replay`` writing into
``<output_dir>/simulated``. Its interval table (allocated node-hours to a target fixed in
advance and final loss, medians with bootstrap 95% intervals) becomes the first section of the
report, marked simulated.

Time on the target system: the table was recorded on this machine kind with a scaled-down
model; ``--time_scale`` is set so that the table's median epoch takes
:data:`TARGET_EPOCH_SECONDS` on the simulated nodes, and ``--setup_time_scale`` so that its
median setup (build + trace) takes :data:`TARGET_SETUP_SECONDS` (the report states both). The
two are scaled apart because the recording's epochs are short (16 events) while its tracing is
that of the whole graph network: at one factor a new trial would cost about 100 epochs, where
the reference model's first step traces in about 30 s on this machine kind
(``benchmark.throughput``) and a Delphes epoch takes minutes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence

from mlpf_tf.configbase import atomic_write_text

#: the curve table the main job replays (recorded by ``benchmark.sim.record``, see its manifest)
SHIPPED_TABLE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data",
                             "curves_mlpf.csv.gz")
#: seconds one median epoch of the table takes on a simulated node of the target system
TARGET_EPOCH_SECONDS = 60.0
#: seconds the median setup (model build + tracing) of the table takes there
TARGET_SETUP_SECONDS = 60.0
SUBDIR = "simulated"
PRESET = "delphes"


def time_scales_for(table_path: str, target_epoch_seconds: float = TARGET_EPOCH_SECONDS,
                    target_setup_seconds: float = TARGET_SETUP_SECONDS) -> tuple[float, float]:
    """The factors that make the table's median epoch take ``target_epoch_seconds`` and its
    median setup ``target_setup_seconds`` (the setup factor is the epoch one when the table
    has no setup seconds)."""
    from benchmark.sim.curves import load_curves

    table = load_curves(table_path)
    scale = target_epoch_seconds / table.median_epoch_seconds()
    setup = table.median_setup_seconds()
    return scale, (target_setup_seconds / setup if setup > 0 else scale)


def replay_command(output_dir: str, table_path: str, seeds: int, tuners: Sequence[str],
                   scales: tuple[float, float], python: str = sys.executable) -> list[str]:
    """The replay child's command line (``scales``: epoch and setup time factors)."""
    return [python, "-m", "benchmark.sim.replay", f"--preset={PRESET}",
            f"--tuner={','.join(tuners)}", f"--seeds={seeds}", f"--curves={table_path}",
            f"--time_scale={scales[0]:.6g}", f"--setup_time_scale={scales[1]:.6g}",
            f"--output_dir={os.path.join(output_dir, SUBDIR)}"]


def section(output_dir: str) -> list[str]:
    """The report section: the replay's comparison.md under a heading that marks it simulated."""
    path = os.path.join(output_dir, SUBDIR, "comparison.md")
    with open(path, encoding="utf-8") as fh:
        body = fh.read().strip().split("\n")
    return ["## Simulated: the reference study's search replayed on the recorded curve table",
            "", "_Simulated, not run: the real oracles decide, epochs and losses come from the "
            f"table (`{os.path.relpath(path, output_dir)}`; run directories beside it)._", "",
            *body, ""]


def run_simulated(output_dir: str, seeds: int, tuners: Sequence[str],
                  table_path: str = SHIPPED_TABLE, log=print) -> tuple[bool, list[str]]:
    """Replay the preset (child process, log in ``<output_dir>/logs/simulated.log``); whether
    it did not fail, and the report section or a one-paragraph note saying why there is none
    (no table is not a failure)."""
    if not os.path.isfile(table_path):
        note = (f"No curve table at {table_path}: the simulated comparison of the reference "
                "study's search is left out (record one with `python -m benchmark.sim.record`).")
        log(note)
        return True, ["## Simulated", "", note, ""]
    cmd = replay_command(output_dir, table_path, seeds, tuners, time_scales_for(table_path))
    log_path = os.path.join(output_dir, "logs", "simulated.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    log(f"simulated comparison: {' '.join(cmd[1:])}")
    with open(log_path, "w", encoding="utf-8") as fh:
        code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
    if code != 0:
        note = f"The simulated comparison failed (exit {code}); see {log_path}."
        log(note)
        return False, ["## Simulated", "", note, ""]
    return True, section(output_dir)


def insert_section(report_md: str, lines: Sequence[str], after: int = 4) -> None:
    """Put ``lines`` into the report after its first ``after`` lines (title, blank, the
    "Generated ..." line, blank), so the simulated comparison is the report's first table."""
    with open(report_md, encoding="utf-8") as fh:
        text = fh.read().split("\n")
    head = min(after, len(text))
    atomic_write_text(report_md, "\n".join(text[:head] + list(lines) + text[head:]))
