"""The ``quality`` command: live hit rate@K and CTR per model version, read back from the
attribution topic (every worker's closed impressions, not one worker's metrics)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import orjson

from app.core.codec import parse_time_ms
from app.core.settings import Settings
from app.kafka.topic_reader import read_topic
from app.ops.quality import Closed, LiveQuality


def closed_from_record(doc: dict[str, Any]) -> Closed | None:
    """A negative attribution record as a closed impression (None for positives)."""
    if doc.get("kind") != "negative":
        return None
    return Closed(
        model_version=str(doc["model_version"]),
        closed_ms=parse_time_ms(doc["closed_time"]),
        shown=int(doc["shown"]),
        acted=tuple((int(a["rank"]), str(a["action"])) for a in doc["acted"]),
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
    """A markdown table: per model version and window, impressions, hit rate@K, CTR."""
    lines = [
        f"| model version | window | impressions | hit rate@{quality.k} | CTR |",
        "|---|---|---|---|---|",
    ]
    for version in quality.versions():
        for window_s in quality.windows_s:
            q = quality.window(version, window_s, now_ms)
            if q.impressions:
                lines.append(
                    f"| {version} | {window_s} s | {q.impressions} | {q.hit_rate:.3f} "
                    f"| {q.ctr:.4f} |"
                )
    if len(lines) == 2:
        lines.append("| (no impression closed in these windows) | | | | |")
    return "\n".join(lines)
