"""Read a topic once, as it is now: every record from its start (or from a time) to its end."""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from app.core.settings import Settings
from app.kafka.kafka_config import reader_config


def read_topic(
    settings: Settings,
    topic: str,
    since_ms: int | None = None,
    timeout_s: float = 60.0,
    partitions: Collection[int] | None = None,
) -> Iterator[Message]:
    """Every record of ``topic`` (of ``partitions`` of it, when given) present now (written at
    or after ``since_ms``, record time, when given), with no consumer group offsets; raises
    RuntimeError when the topic is missing or cannot be read to its end within ``timeout_s``."""
    consumer = Consumer(reader_config(settings, "reader", {"enable.partition.eof": True}))
    try:
        meta = consumer.list_topics(topic, timeout=timeout_s)
        info = meta.topics.get(topic)
        if info is None or info.error is not None:
            raise RuntimeError(f"topic {topic!r} not found")
        chosen = [p for p in info.partitions if partitions is None or p in partitions]
        marks = {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            for p in chosen
        }
        ends = {p: high for p, (_low, high) in marks.items()}
        # From the log's start, which retention or compaction may have moved past 0.
        starts = [TopicPartition(topic, p, low) for p, (low, _high) in marks.items()]
        if since_ms is not None:
            starts = consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in chosen], timeout=timeout_s
            )
        # offsets_for_times gives -1 where nothing is that recent.
        todo = {tp.partition for tp in starts if 0 <= tp.offset < ends[tp.partition]}
        consumer.assign([tp for tp in starts if tp.partition in todo])
        deadline = time.monotonic() + timeout_s
        while todo:
            if time.monotonic() > deadline:
                raise RuntimeError(f"reading {topic!r} did not finish within {timeout_s}s")
            for msg in consumer.consume(1000, timeout=0.5):
                error = msg.error()
                partition = msg.partition() or 0
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        todo.discard(partition)
                    continue
                if (msg.offset() or 0) + 1 >= ends[partition]:
                    todo.discard(partition)
                yield msg
    finally:
        consumer.close()
