"""Small confluent-kafka helpers for tests: produce with offsets, read topics until a condition."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, Message, Producer


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


class KafkaIO:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        # Events placed as the default PARTITIONER (murmur2) expects: on their user's partition.
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "linger.ms": 0,
                "acks": "all",
                "partitioner": "murmur2_random",
            }
        )

    def produce(self, topic: str, key: bytes | None, value: bytes | None) -> Record:
        """Produce one record and wait for its offset."""
        delivered: list[Message] = []
        errors: list[object] = []

        def on_delivery(err: object, msg: Message) -> None:
            if err:
                errors.append(err)
            else:
                delivered.append(msg)

        self.producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        self.producer.flush(30)
        assert not errors, errors
        msg = delivered[0]
        return Record(
            topic, msg.partition() or 0, msg.offset() or 0, key, value, msg.timestamp()[1]
        )

    def read_until(
        self,
        topic: str,
        done: Callable[[list[Record]], bool],
        timeout_s: float = 60.0,
    ) -> list[Record]:
        """Read ``topic`` from the beginning until ``done(records)`` holds; fail on timeout."""
        consumer = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"test-reader-{uuid.uuid4().hex}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        records: list[Record] = []
        try:
            consumer.subscribe([topic])
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                for msg in consumer.consume(num_messages=500, timeout=0.5):
                    if msg.error() is None:
                        records.append(
                            Record(
                                msg.topic() or "",
                                msg.partition() or 0,
                                msg.offset() or 0,
                                msg.key(),
                                msg.value(),
                                msg.timestamp()[1],
                            )
                        )
                if done(records):
                    return records
            raise AssertionError(
                f"timed out after {timeout_s}s reading {topic}: {len(records)} records"
            )
        finally:
            consumer.close()
