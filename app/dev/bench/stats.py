"""Pure arithmetic of the benchmark: latency percentiles, open-loop schedules, windowed rates."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """End-to-end latencies of one measured window, milliseconds (None when there were none)."""

    n: int
    p50: float | None
    p95: float | None
    p99: float | None
    max: float | None
    mean: float | None

    @classmethod
    def empty(cls) -> LatencySummary:
        return cls(0, None, None, None, None, None)


def summarize(latencies_ms: Sequence[float]) -> LatencySummary:
    """Percentiles by linear interpolation between closest ranks (numpy's default).

    >>> s = summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    >>> (s.n, s.p50, s.max)
    (5, 3.0, 100.0)
    """
    if len(latencies_ms) == 0:
        return LatencySummary.empty()
    arr = np.asarray(latencies_ms, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50.0, 95.0, 99.0])
    return LatencySummary(
        n=int(arr.size),
        p50=float(p50),
        p95=float(p95),
        p99=float(p99),
        max=float(arr.max()),
        mean=float(arr.mean()),
    )


def scheduled_offset_ms(index: int, rate: float) -> float:
    """When the ``index``-th event of an open-loop run at ``rate`` events/s is due, ms from start.

    The schedule never looks at when earlier events were actually sent: a sender that falls
    behind sends late events stamped with their due time, so its delay counts as latency
    (no coordinated omission).

    >>> [scheduled_offset_ms(i, 500.0) for i in range(3)]
    [0.0, 2.0, 4.0]
    """
    return index * 1000.0 / rate


def due_count(elapsed_s: float, rate: float) -> int:
    """How many events of an open-loop run are due ``elapsed_s`` after its start (the first is
    due at 0).

    >>> due_count(0.0, 1000.0), due_count(0.0105, 1000.0)
    (1, 11)
    """
    if elapsed_s < 0:
        return 0
    return math.floor(elapsed_s * rate + 1e-9) + 1


@dataclass(frozen=True, slots=True)
class CounterSample:
    """A reading of the cumulative counters at a monotonic time ``t`` (seconds)."""

    t: float
    sent: int
    processed: int


def rate_between(first: CounterSample, last: CounterSample) -> tuple[float, float]:
    """(offered, achieved) events/s between two samples.

    >>> rate_between(CounterSample(0.0, 0, 0), CounterSample(2.0, 1000, 900))
    (500.0, 450.0)
    """
    dt = last.t - first.t
    if dt <= 0:
        raise ValueError("samples must be in time order")
    return (last.sent - first.sent) / dt, (last.processed - first.processed) / dt


def kept_up(
    offered: float,
    achieved: float,
    backlog_start: int,
    backlog_end: int,
    window_s: float,
    *,
    min_ratio: float = 0.97,
) -> bool:
    """A rate counts as sustained when the system processed about what it was offered and its
    backlog did not grow by more than the shortfall ``min_ratio`` allows over the window.

    >>> kept_up(1000.0, 995.0, 10, 12, 10.0)
    True
    >>> kept_up(1000.0, 900.0, 10, 1010, 10.0)
    False
    """
    if offered <= 0:
        return False
    allowed_growth = max(50.0, (1.0 - min_ratio) * offered * window_s)
    return achieved >= min_ratio * offered and backlog_end - backlog_start <= allowed_growth


@dataclass(frozen=True, slots=True)
class Spread:
    """The median of repeated measurements and their range (None when there were none)."""

    n: int
    median: float | None
    lo: float | None
    hi: float | None


def spread(values: Sequence[float | None]) -> Spread:
    """Median and min-max of the values that were measured (None: not measured that time).

    >>> spread([3.0, 1.0, None, 2.0])
    Spread(n=3, median=2.0, lo=1.0, hi=3.0)
    >>> spread([None]).median is None
    True
    """
    found = sorted(v for v in values if v is not None and not math.isnan(v))
    if not found:
        return Spread(0, None, None, None)
    return Spread(len(found), float(np.median(found)), found[0], found[-1])
