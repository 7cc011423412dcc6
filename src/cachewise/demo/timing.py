"""Measured, never simulated: wall-clock timings of real calls with ``time.perf_counter``."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Timings", "time_calls", "time_once"]


@dataclass(frozen=True)
class Timings:
    """Durations of repeated calls, in seconds."""

    samples: tuple[float, ...]

    @property
    def count(self) -> int:
        return len(self.samples)

    @property
    def median_ms(self) -> float:
        return 1000 * statistics.median(self.samples)

    @property
    def p95_ms(self) -> float:
        """The 95th percentile (nearest rank)."""
        ordered = sorted(self.samples)
        rank = max(1, round(0.95 * len(ordered)))
        return 1000 * ordered[rank - 1]

    @property
    def total_ms(self) -> float:
        return 1000 * sum(self.samples)


def time_calls(call: Callable[[], object], count: int) -> Timings:
    """Call ``call`` ``count`` times and time each call."""
    if count < 1:
        raise ValueError(f"need at least one sample, got {count}")
    clock = time.perf_counter
    samples = []
    for _ in range(count):
        started = clock()
        call()
        samples.append(clock() - started)
    return Timings(tuple(samples))


def time_once(call: Callable[[], object]) -> float:
    """The duration of one call, in milliseconds."""
    started = time.perf_counter()
    call()
    return 1000 * (time.perf_counter() - started)
