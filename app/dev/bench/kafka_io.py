"""Kafka plumbing for the benchmark: offsets (record counts), reading ranges, topic clean-up,
and what its measured processes share (stop on signals, subscribe and say ready)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

Offsets = dict[tuple[str, int], int]
# confluent-kafka's stubs leave OffsetSpec.latest untyped; it takes no arguments.
_LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]


class TopicCounter:
    """Counts records in topics by their end offsets: one cheap ListOffsets request per read."""

    def __init__(self, bootstrap: str, topics: Sequence[str], timeout_s: float = 30.0) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self.partitions: list[TopicPartition] = []
        deadline = time.monotonic() + timeout_s
        for topic in topics:
            while True:
                meta = self._admin.list_topics(topic, timeout=10).topics.get(topic)
                if meta is not None and meta.error is None and meta.partitions:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"topic {topic} has no partitions after {timeout_s:g} s")
                time.sleep(0.2)
            self.partitions += [TopicPartition(topic, p) for p in sorted(meta.partitions)]
        self.end_offsets(timeout_s)  # new topics answer NOT_LEADER for a moment: wait it out

    def end_offsets(self, timeout_s: float = 10.0) -> Offsets:
        """(topic, partition) -> end offset; retried while leaders are still being elected."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                futures = self._admin.list_offsets(
                    {tp: _LATEST for tp in self.partitions}, request_timeout=5
                )
                return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def total(self, topics: Sequence[str] | None = None) -> int:
        """Records in ``topics`` (all counted topics by default), ever written."""
        return sum(
            n for (topic, _), n in self.end_offsets().items() if topics is None or topic in topics
        )


def read_range(
    bootstrap: str, start: Mapping[tuple[str, int], int], end: Mapping[tuple[str, int], int]
) -> Iterator[tuple[int, bytes]]:
    """(record timestamp ms, value) of every record from ``start`` up to ``end`` (exclusive)."""
    wanted = {tp: (start.get(tp, 0), n) for tp, n in end.items() if n > start.get(tp, 0)}
    if not wanted:
        return
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "liverank-bench-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    try:
        consumer.assign([TopicPartition(t, p, lo) for (t, p), (lo, _) in wanted.items()])
        remaining = dict(wanted)
        idle_deadline = time.monotonic() + 30.0
        while remaining:
            batch = consumer.consume(num_messages=10_000, timeout=0.5)
            if not batch and time.monotonic() > idle_deadline:
                raise RuntimeError(f"records not readable: {sorted(remaining)}")
            for msg in batch:
                if msg.error() is not None:
                    continue
                tp = (msg.topic() or "", msg.partition() or 0)
                bounds = remaining.get(tp)
                if bounds is None:
                    continue
                offset = msg.offset() or 0
                if offset < bounds[1]:
                    yield msg.timestamp()[1], msg.value() or b""
                if offset + 1 >= bounds[1]:
                    del remaining[tp]
                    consumer.incremental_unassign([TopicPartition(tp[0], tp[1])])
                idle_deadline = time.monotonic() + 30.0
    finally:
        consumer.close()


def delete_topics(bootstrap: str, prefix: str, timeout_s: float = 30.0) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; returns their names."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [t for t in admin.list_topics(timeout=timeout_s).topics if t.startswith(prefix)]
    if names:
        for future in admin.delete_topics(names, operation_timeout=timeout_s).values():
            try:
                future.result(timeout=timeout_s)
            except KafkaException:
                pass  # already gone, or being deleted: either way not ours to keep
    return names


def stop_on_signals() -> threading.Event:
    """An event that SIGTERM or SIGINT sets: a measured process loops until it is set."""
    stopped = threading.Event()

    def stop(*_: object) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return stopped


def subscribe(consumer: Consumer, topic: str, ready_file: Path | None) -> None:
    """Subscribe to ``topic``; ``ready_file`` is written once partitions are assigned (the
    bench waits for it before it sends load)."""

    def on_assign(consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if ready_file is not None:
            ready_file.write_text("ready\n")

    consumer.subscribe([topic], on_assign=on_assign)


def group_assigned(bootstrap: str, group: str, topic: str) -> bool:
    """Whether a member of consumer group ``group`` holds partitions of ``topic``: how the bench
    tells that a process it cannot ask (the Quix application) is taking records."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        described = admin.describe_consumer_groups([group], request_timeout=5)[group].result(
            timeout=10
        )
    except KafkaException:
        return False
    return any(
        tp.topic == topic
        for member in described.members
        for tp in (member.assignment.topic_partitions or [])
    )
