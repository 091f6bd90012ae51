"""A test switch that makes timed steps slower on purpose, to prove the nightly suite sees it.

``MLPF_BENCH_SLOWDOWN=F`` (a fraction, e.g. 0.2) makes every timed step of the nightly
providers burn F times its own CPU time more after it ran: a busy loop on the calling thread,
not a sleep, so the step costs F more in CPU time and at least as much in wall time, like code
that got slower. Unset or 0: no effect (the check is one environment lookup per step).
"""

from __future__ import annotations

import os
import time

ENV = "MLPF_BENCH_SLOWDOWN"


def fraction() -> float:
    """The injected slowdown fraction (0 when unset); ValueError naming the variable if bad."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"environment variable {ENV}={text!r} is not a number") from None
    if not 0.0 <= value < 10.0:
        raise ValueError(f"environment variable {ENV}={text!r}: must be in [0, 10)")
    return value


def pad(cpu_seconds: float, slowdown: float | None = None) -> None:
    """Burn ``slowdown`` x ``cpu_seconds`` of CPU time on this thread (see the module doc)."""
    f = fraction() if slowdown is None else slowdown
    if f <= 0.0 or cpu_seconds <= 0.0:
        return
    end = time.process_time() + f * cpu_seconds
    while time.process_time() < end:
        pass
