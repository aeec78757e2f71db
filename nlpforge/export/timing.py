"""Which of an export's lossless variants runs faster on the machine that exports it.

``--optimize`` writes fused graphs, but fusions do not pay everywhere: on an AMX Xeon they made
T5's generation twice as slow. So the fused variant becomes the default only after it ran
faster than the fp32 graphs here, each timed in turns with the other.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

from nlpforge.runtime.host import cpu_fingerprint


def faster(calls: dict[str, Callable[[], Any]], workload: str,
           rounds: int = 3) -> dict[str, Any]:
    """Time each call (a variant's workload) in turns, ``rounds`` times after a warm-up; the
    manifest's ``default_choice``: the faster ``variant``, the median ``seconds`` of each, the
    ``workload`` and the ``cpu``."""
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for call in calls.values():
        call()
    for turn in range(rounds):
        for name in (list(calls) if turn % 2 == 0 else list(calls)[::-1]):
            start = time.perf_counter()
            calls[name]()
            seconds[name].append(time.perf_counter() - start)
    median = {name: round(statistics.median(t), 5) for name, t in seconds.items()}
    return {"variant": min(median, key=median.get), "seconds": median,
            "workload": f"{workload}; median of {rounds} turns", "cpu": cpu_fingerprint()}
