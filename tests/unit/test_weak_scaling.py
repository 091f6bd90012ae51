"""The weak-scaling benchmark's rank pinning (the timed runs themselves are a benchmark)."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def pinned(local_rank: int, threads: int) -> tuple[list[int], list[int]]:
    code = ("import os\nfrom benchmark.weak_scaling import pin_to_cores\n"
            f"chosen = pin_to_cores({threads})\n"
            "print(sorted(chosen), sorted(os.sched_getaffinity(0)))")
    env = {**os.environ, "HOROVOD_LOCAL_RANK": str(local_rank)}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60, check=True)
    chosen, now = out.stdout.strip().split("] [")
    return ([int(c) for c in chosen.strip("[]").split(",")],
            [int(c) for c in now.strip("[]").split(",")])


def test_each_local_rank_gets_its_own_cores():
    cores = sorted(os.sched_getaffinity(0))
    for rank in range(len(cores)):
        chosen, now = pinned(rank, 1)
        assert chosen == now == [cores[rank]]
    chosen, now = pinned(len(cores), 1)  # more ranks than cores: wraps around
    assert chosen == now == [cores[0]]
    if len(cores) >= 2:
        assert pinned(0, 2)[1] == cores[:2]
