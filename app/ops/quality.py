"""Live quality of what was shown: hit rate@K, NDCG@K and CTR of closed impressions, per model
version and role (``serving``: what users saw; ``shadow``: what a shadow model would have shown
them, app.core.shadow), over sliding windows; for the worker's metrics and the ``quality``
command alike."""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.core.attribution import Impression

DEFAULT_WINDOWS_S = (300, 3600)
BUCKET_S = 10
SERVING = "serving"
SHADOW = "shadow"


@cache
def _ideal_dcg(relevant: int) -> float:
    return sum(1.0 / math.log2(i + 2) for i in range(relevant))


def ndcg_at(acted_ranks: set[int], k: int) -> float:
    """NDCG@k of one impression, the items acted on as the relevant ones (binary gains).

    >>> ndcg_at({0}, 10), round(ndcg_at({1}, 10), 4), ndcg_at({12}, 10), ndcg_at(set(), 10)
    (1.0, 0.6309, 0.0, 0.0)
    """
    if not acted_ranks:
        return 0.0
    dcg = sum(1.0 / math.log2(r + 2) for r in acted_ranks if r < k)
    return dcg / _ideal_dcg(min(len(acted_ranks), k))


@dataclass(frozen=True, slots=True)
class Closed:
    """What quality needs of a closed impression (from the state, or from a negative record)."""

    model_version: str
    closed_ms: int
    shown: int
    acted: tuple[tuple[int, str], ...]  # (rank, action)
    role: str = SERVING

    @classmethod
    def of(cls, imp: Impression, role: str = SERVING) -> Closed:
        return cls(
            imp.model_version,
            imp.closed_ms if imp.closed_ms is not None else imp.due_ms,
            len(imp.items),
            tuple((a.rank, a.action) for a in imp.acted),
            role,
        )


@dataclass(frozen=True, slots=True)
class Quality:
    impressions: int
    hits: int
    shown: int
    clicked: int
    ndcg_sum: float = 0.0

    @property
    def hit_rate(self) -> float:
        """Share of impressions with an action on one of their first K items."""
        return self.hits / self.impressions if self.impressions else math.nan

    @property
    def ndcg(self) -> float:
        """Mean NDCG@K of the impressions, the items acted on as the relevant ones."""
        return self.ndcg_sum / self.impressions if self.impressions else math.nan

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
    >>> (r.impressions, r.hit_rate, round(r.ndcg, 4), round(r.ctr, 3))
    (2, 0.5, 0.3155, 0.167)
    >>> q.series()
    [('serving', 'v1')]
    """

    def __init__(self, k: int, windows_s: Sequence[int] = DEFAULT_WINDOWS_S) -> None:
        self.k = k
        self.windows_s = tuple(windows_s)
        self._keep = max(self.windows_s) // BUCKET_S + 1
        # (role, version) -> bucket index -> [impressions, hits, shown, clicked, ndcg sum]
        self._buckets: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(dict)

    def add(self, closed: Closed, now_ms: int) -> None:
        bucket = closed.closed_ms // 1000 // BUCKET_S
        if bucket < now_ms // 1000 // BUCKET_S - self._keep:
            return  # older than every window
        key = (closed.role, closed.model_version)
        counts = self._buckets[key].setdefault(bucket, [0, 0, 0, 0, 0.0])
        ranks = {rank for rank, _ in closed.acted}
        counts[0] += 1
        counts[1] += any(rank < self.k for rank in ranks)
        counts[2] += closed.shown
        counts[3] += len({rank for rank, action in closed.acted if action == "click"})
        counts[4] += ndcg_at(ranks, self.k)
        self._trim(key, now_ms)

    def _trim(self, key: tuple[str, str], now_ms: int) -> None:
        oldest = now_ms // 1000 // BUCKET_S - self._keep
        buckets = self._buckets[key]
        for b in [b for b in buckets if b < oldest]:
            del buckets[b]

    def series(self) -> list[tuple[str, str]]:
        """(role, model version) of everything counted, serving first."""
        return sorted(
            (k for k, b in self._buckets.items() if b), key=lambda k: (k[0] != SERVING, k)
        )

    def versions(self, role: str = SERVING) -> list[str]:
        return [v for r, v in self.series() if r == role]

    def window(self, version: str, window_s: int, now_ms: int, role: str = SERVING) -> Quality:
        since = (now_ms // 1000 - window_s) // BUCKET_S
        total = [0.0, 0.0, 0.0, 0.0, 0.0]
        for bucket, counts in self._buckets.get((role, version), {}).items():
            if bucket > since:
                total = [a + b for a, b in zip(total, counts, strict=True)]
        return Quality(int(total[0]), int(total[1]), int(total[2]), int(total[3]), total[4])


class LiveQualityCollector(Collector):
    """``liverank_live_hit_rate``, ``liverank_live_ndcg``, ``liverank_live_ctr`` and
    ``liverank_live_impressions`` by model version, role (serving, shadow) and window, computed
    at scrape time from a :class:`LiveQuality`."""

    def __init__(self, quality: LiveQuality) -> None:
        self.quality = quality

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now_ms = time.time_ns() // 1_000_000
        k = self.quality.k
        labels = ["model_version", "role", "window"]
        hit = GaugeMetricFamily(
            "liverank_live_hit_rate",
            f"Share of impressions closed in the window with an action on one of their first "
            f"{k} items (hit rate@{k}); role=shadow: the lists a shadow model would have shown.",
            labels=labels,
        )
        ndcg = GaugeMetricFamily(
            "liverank_live_ndcg",
            f"Mean NDCG@{k} of the impressions closed in the window, the items acted on as the "
            "relevant ones.",
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
        for role, version in self.quality.series():
            for window_s in self.quality.windows_s:
                q = self.quality.window(version, window_s, now_ms, role)
                if not q.impressions:
                    continue
                label = [version, role, f"{window_s}s"]
                hit.add_metric(label, q.hit_rate)
                ndcg.add_metric(label, q.ndcg)
                ctr.add_metric(label, q.ctr)
                count.add_metric(label, q.impressions)
        yield hit
        yield ndcg
        yield ctr
        yield count
