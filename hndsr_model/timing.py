"""Wall-clock timing for the benchmarks and the evaluation's speed columns: medians, never single runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn``, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def round_robin_times(
    fns: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, list[float]]:
    """Seconds (by ``clock``) of each function in every repeat, the functions timed in turn within a repeat; each
    repeat starts one function further on, so that none always runs first, or right after the same one."""
    for fn in fns.values():
        fn()  # warm-up
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = clock()
            fns[name]()
            times[name].append(clock() - start)
    return times


def round_robin_seconds(
    fns: dict[str, Callable[[], object]], repeats: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, float]:
    """Median seconds (by ``clock``) of each function, timed in turn within every repeat."""
    return {name: statistics.median(values) for name, values in round_robin_times(fns, repeats, clock).items()}
