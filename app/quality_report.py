"""The ``quality`` command: live hit rate@K and CTR per model version, read back from the
attribution topic (every worker's closed impressions, not one worker's metrics)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from app.codec import parse_time_ms
from app.kafka_config import client_config
from app.quality import Closed, LiveQuality
from app.settings import Settings


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
    consumer = Consumer(
        client_config(
            settings,
            {
                "group.id": f"{settings.app_id}-quality-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
    )
    try:
        meta = consumer.list_topics(settings.topic_attribution, timeout=timeout_s)
        partitions = list(meta.topics[settings.topic_attribution].partitions)
        starts = consumer.offsets_for_times(
            [TopicPartition(settings.topic_attribution, p, since_ms) for p in partitions],
            timeout=timeout_s,
        )
        ends = {
            tp.partition: consumer.get_watermark_offsets(tp, timeout=timeout_s)[1] for tp in starts
        }
        todo = {tp.partition for tp in starts if 0 <= tp.offset < ends[tp.partition]}
        consumer.assign([tp for tp in starts if tp.partition in todo])
        deadline = time.monotonic() + timeout_s
        while todo and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if msg.error() is not None:
                    todo.discard(msg.partition() or 0)  # end of partition (or an error)
                    continue
                if (msg.offset() or 0) + 1 >= ends[msg.partition() or 0]:
                    todo.discard(msg.partition() or 0)
                closed = closed_from_record(orjson.loads(msg.value() or b"{}"))
                if closed is not None:
                    quality.add(closed, now_ms)
    finally:
        consumer.close()
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
