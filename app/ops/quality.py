"""Live quality of what was shown: hit rate@K and CTR of closed impressions, per model version,
over sliding windows; for the worker's metrics and the ``quality`` command alike."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.core.attribution import Impression

DEFAULT_WINDOWS_S = (300, 3600)
BUCKET_S = 10


@dataclass(frozen=True, slots=True)
class Closed:
    """What quality needs of a closed impression (from the state, or from a negative record)."""

    model_version: str
    closed_ms: int
    shown: int
    acted: tuple[tuple[int, str], ...]  # (rank, action)

    @classmethod
    def of(cls, imp: Impression) -> Closed:
        return cls(
            imp.model_version,
            imp.closed_ms if imp.closed_ms is not None else imp.due_ms,
            len(imp.items),
            tuple((a.rank, a.action) for a in imp.acted),
        )


@dataclass(frozen=True, slots=True)
class Quality:
    impressions: int
    hits: int
    shown: int
    clicked: int

    @property
    def hit_rate(self) -> float:
        """Share of impressions with an action on one of their first K items."""
        return self.hits / self.impressions if self.impressions else math.nan

    @property
    def ctr(self) -> float:
        """Items clicked per item shown."""
        return self.clicked / self.shown if self.shown else math.nan


class LiveQuality:
    """Counts in ``BUCKET_S`` buckets by close time; a window sums its buckets.

    >>> q = LiveQuality(k=2)
    >>> q.add(Closed("v1", 1_000, 3, ((1, "click"),)), now_ms=1_000)
    >>> q.add(Closed("v1", 2_000, 3, ()), now_ms=2_000)
    >>> r = q.window("v1", 300, now_ms=5_000)
    >>> (r.impressions, r.hit_rate, round(r.ctr, 3))
    (2, 0.5, 0.167)
    """

    def __init__(self, k: int, windows_s: Sequence[int] = DEFAULT_WINDOWS_S) -> None:
        self.k = k
        self.windows_s = tuple(windows_s)
        self._keep = max(self.windows_s) // BUCKET_S + 1
        # version -> bucket index -> [impressions, hits, shown, clicked]
        self._buckets: dict[str, dict[int, list[int]]] = defaultdict(dict)

    def add(self, closed: Closed, now_ms: int) -> None:
        bucket = closed.closed_ms // 1000 // BUCKET_S
        if bucket < now_ms // 1000 // BUCKET_S - self._keep:
            return  # older than every window
        counts = self._buckets[closed.model_version].setdefault(bucket, [0, 0, 0, 0])
        counts[0] += 1
        counts[1] += any(rank < self.k for rank, _ in closed.acted)
        counts[2] += closed.shown
        counts[3] += len({rank for rank, action in closed.acted if action == "click"})
        self._trim(closed.model_version, now_ms)

    def _trim(self, version: str, now_ms: int) -> None:
        oldest = now_ms // 1000 // BUCKET_S - self._keep
        buckets = self._buckets[version]
        for b in [b for b in buckets if b < oldest]:
            del buckets[b]

    def versions(self) -> list[str]:
        return sorted(v for v, b in self._buckets.items() if b)

    def window(self, version: str, window_s: int, now_ms: int) -> Quality:
        since = (now_ms // 1000 - window_s) // BUCKET_S
        total = [0, 0, 0, 0]
        for bucket, counts in self._buckets.get(version, {}).items():
            if bucket > since:
                total = [a + b for a, b in zip(total, counts, strict=True)]
        return Quality(*total)


class LiveQualityCollector(Collector):
    """``liverank_live_hit_rate``, ``liverank_live_ctr`` and ``liverank_live_impressions``,
    computed at scrape time from a :class:`LiveQuality`."""

    def __init__(self, quality: LiveQuality) -> None:
        self.quality = quality

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now_ms = time.time_ns() // 1_000_000
        labels = ["model_version", "window"]
        hit = GaugeMetricFamily(
            "liverank_live_hit_rate",
            f"Share of impressions closed in the window with an action on one of their first "
            f"{self.quality.k} items (hit rate@{self.quality.k}).",
            labels=labels,
        )
        ctr = GaugeMetricFamily(
            "liverank_live_ctr",
            "Items clicked per item shown, impressions closed in the window.",
            labels=labels,
        )
        count = GaugeMetricFamily(
            "liverank_live_impressions", "Impressions closed in the window.", labels=labels
        )
        for version in self.quality.versions():
            for window_s in self.quality.windows_s:
                q = self.quality.window(version, window_s, now_ms)
                if not q.impressions:
                    continue
                label = [version, f"{window_s}s"]
                hit.add_metric(label, q.hit_rate)
                ctr.add_metric(label, q.ctr)
                count.add_metric(label, q.impressions)
        yield hit
        yield ctr
        yield count
