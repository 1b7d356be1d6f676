"""The ``quality`` command: live hit rate@K, NDCG@K and CTR per model version and role, read
back from the attribution topic (every worker's closed impressions, not one worker's metrics):
``serving`` from the negative records (one per closed impression), ``shadow`` from the shadow
records (one per closed would-be list of a shadow model)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from app.core.codec import parse_time_ms
from app.core.settings import Settings
from app.kafka.topic_reader import read_topic
from app.ops.quality import SERVING, SHADOW, Closed, LiveQuality

_ROLE_OF_KIND = {"negative": SERVING, "shadow": SHADOW}


def closed_from_record(doc: dict[str, Any]) -> Closed | None:
    """A negative (served) or shadow attribution record as a closed impression (None for
    positives)."""
    role = _ROLE_OF_KIND.get(str(doc.get("kind")))
    if role is None:
        return None
    return Closed(
        model_version=str(doc["model_version"]),
        closed_ms=parse_time_ms(doc["closed_time"]),
        shown=int(doc["shown"]),
        acted=tuple((int(a["rank"]), str(a["action"])) for a in doc["acted"]),
        role=role,
    )


def read_quality(
    settings: Settings, windows_s: Sequence[int], k: int, timeout_s: float = 30.0
) -> tuple[LiveQuality, int]:
    """Read the attribution records of the longest window (by record time) into a
    :class:`LiveQuality`; returns it and the time it was computed at."""
    now_ms = time.time_ns() // 1_000_000
    since_ms = now_ms - max(windows_s) * 1000
    quality = LiveQuality(k, windows_s)
    for msg in read_topic(settings, settings.topic_attribution, since_ms, timeout_s):
        closed = closed_from_record(orjson.loads(msg.value() or b"{}"))
        if closed is not None:
            quality.add(closed, now_ms)
    return quality, now_ms


def report(quality: LiveQuality, now_ms: int) -> str:
    """A markdown table: per model version, role and window, impressions, hit rate@K, NDCG@K
    and CTR (a shadow's CTR counts clicks on items it would have shown)."""
    k = quality.k
    lines = [
        f"| model version | role | window | impressions | hit rate@{k} | NDCG@{k} | CTR |",
        "|---|---|---|---|---|---|---|",
    ]
    for role, version in quality.series():
        for window_s in quality.windows_s:
            q = quality.window(version, window_s, now_ms, role)
            if q.impressions:
                lines.append(
                    f"| {version} | {role} | {window_s} s | {q.impressions} | {q.hit_rate:.3f} "
                    f"| {q.ndcg:.3f} | {q.ctr:.4f} |"
                )
    if len(lines) == 2:
        lines.append("| (no impression closed in these windows) | | | | | | |")
    return "\n".join(lines)
