"""make run's simulated comparison: the Delphes preset replayed on a curve table, first in the
report, marked simulated; a missing table gives a note, not a failure."""

import math
import os

import pytest

from benchmark.sim import paper
from benchmark.sim.curves import write_curves
from benchmark.sim.record import sample_configurations
from tuners.space import build_space


def write_table(path, configs=12, epochs=100):
    """A table of the reduced space: lr near 10^-2.5 learns best; epochs 0.5 s (+ lr)."""
    rows = []
    space = build_space("reduced")
    for index, values in enumerate(sample_configurations(space, configs, seed=3)):
        level = 1.0 + abs(math.log10(values["lr"]) + 2.5)
        for epoch in range(1, epochs + 1):
            rows.append({"config_id": f"c{index:03d}", **values, "epoch": epoch,
                         "val_loss": level * (0.5 + 1.0 / math.sqrt(epoch)),
                         "epoch_seconds": 0.5 + 0.1 * index, "setup_seconds": 5.0,
                         "restore_seconds": 6.0})
    write_curves(path, rows, {"experiment": "test", "space": "reduced", "epochs": epochs})


def test_time_scale_makes_the_median_epoch_the_target_systems(tmp_path):
    table = str(tmp_path / "t.csv.gz")
    write_table(table, configs=3)
    # median epoch of 0.5, 0.6, 0.7 s is 0.6 s: 60 s on the target system is a factor 100;
    # the median setup of 5 s becomes 30 s with a factor 6
    assert paper.time_scales_for(table, 60.0, 30.0) == pytest.approx((100.0, 6.0))
    cmd = paper.replay_command("/out", table, 20, ["random", "asha"], (100.0, 6.0),
                               python="py")
    assert cmd == ["py", "-m", "benchmark.sim.replay", "--preset=delphes",
                   "--tuner=random,asha", "--seeds=20", f"--curves={table}",
                   "--time_scale=100", "--setup_time_scale=6", "--output_dir=/out/simulated"]


def test_the_simulated_section_comes_first_in_the_report(tmp_path):
    table = str(tmp_path / "t.csv.gz")
    write_table(table)
    out = str(tmp_path / "out")
    ok, lines = paper.run_simulated(out, 2, ["random", "asha"], table_path=table,
                                    log=lambda _: None)
    assert ok, open(os.path.join(out, "logs", "simulated.log")).read()[-2000:]
    text = "\n".join(lines)
    assert lines[0].startswith("## Simulated: the reference study's search")
    assert "_Simulated, not run" in text and "preset delphes: max 100 epochs, grace 5, eta 3" in text
    assert "| random |" in text and "| asha |" in text
    # the target system's times: median epoch 60 s, median setup 60 s (5 s x 12)
    assert "median epoch 60 s" in text and "median setup 60 s per new trial" in text
    assert os.path.isdir(os.path.join(out, "simulated", "sim-asha-w12-s2"))
    report = tmp_path / "report.md"
    report.write_text("# title\n\nGenerated now.\n\n## Comparison setup\n\nreal runs\n")
    paper.insert_section(str(report), lines)
    body = report.read_text().split("\n")
    assert body[:4] == ["# title", "", "Generated now.", ""]
    assert body[4] == lines[0]
    assert body.index("## Comparison setup") > body.index(lines[0])


def test_without_a_table_the_report_says_so_and_nothing_fails(tmp_path):
    ok, lines = paper.run_simulated(str(tmp_path), 20, ["random"],
                                    table_path=str(tmp_path / "none.csv.gz"), log=lambda _: None)
    assert ok and "No curve table at" in " ".join(lines)
