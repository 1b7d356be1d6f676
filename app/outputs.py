"""Producing a micro-batch's records (recommendations, feedback, dead letters) with librdkafka.

Faust's own send path costs tens of microseconds of event-loop time per record; librdkafka
batches and sends from its own threads. At-least-once: the agent hands a batch's records over
before the batch is acked, and :class:`FlushBeforeCommit` makes every faust commit wait until
the broker has all of them, before faust picks the offsets to commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import faust
from confluent_kafka import KafkaError, Message, Producer
from faust.types import ConsumerT

from app.kafka_config import PRODUCER_QUEUE, client_config, keyed_by_user, produce_waiting
from app.processor import Output
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Forward:
    """An input record to put back on the events topic, on ``partition``."""

    partition: int
    key: bytes
    value: bytes | None
    timestamp_ms: int | None
    headers: tuple[tuple[str, bytes], ...] = ()


class DeliveryError(RuntimeError):
    """The broker did not take some records; the batch must not be acknowledged."""


class OutputProducer:
    """Hands records to librdkafka and waits until the broker has all of them."""

    def __init__(self, settings: Settings, topics: Mapping[str, str]) -> None:
        self._topics = dict(topics)
        self._lock = threading.Lock()
        self._errors: list[str] = []
        self._producer = Producer(
            client_config(
                settings,
                {
                    # Records leave within a millisecond; a busy worker still fills batches.
                    "linger.ms": 1,
                    "acks": "all",
                    # Retries never duplicate or reorder a user's records.
                    "enable.idempotence": True,
                    **PRODUCER_QUEUE,
                    # Downstream finds a user's records where it finds their events.
                    **keyed_by_user(settings),
                },
            )
        )

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            with self._lock:
                self._errors.append(f"{msg.topic()}: {err}")

    def produce(self, outputs: Iterable[Output]) -> int:
        """Queue records for sending; returns how many."""
        count = 0
        producer = self._producer
        for out in outputs:
            produce_waiting(
                producer,
                self._topics[out.role],
                key=out.key,
                value=out.value,
                on_delivery=self._on_delivery,
            )
            count += 1
        producer.poll(0)
        return count

    def forward(self, topic: str, records: Iterable[Forward]) -> int:
        """Queue input records again on the partition their key belongs to, unchanged (key,
        value, headers and timestamp); at-least-once like every output."""
        count = 0
        producer = self._producer
        for rec in records:
            produce_waiting(
                producer,
                topic,
                key=rec.key,
                value=rec.value,
                partition=rec.partition,
                timestamp=rec.timestamp_ms or 0,
                headers=list(rec.headers) or None,
                on_delivery=self._on_delivery,
            )
            count += 1
        producer.poll(0)
        return count

    def flush(self, timeout_s: float = 60.0) -> None:
        """Block until every queued record is on the broker; :class:`DeliveryError` if not."""
        remaining = self._producer.flush(timeout_s)
        with self._lock:
            errors, self._errors = self._errors, []
        if remaining or errors:
            raise DeliveryError(
                f"{remaining} records undelivered after {timeout_s}s; errors: {errors[:5]}"
            )

    def close(self, timeout_s: float = 10.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            log.error("%d output records were not delivered at shutdown", remaining)


class FlushBeforeCommit(faust.Sensor):
    """Faust calls ``on_commit_initiated`` synchronously, just before it reads which offsets
    have been acked: flushing there means no offset is committed ahead of its outputs. A
    delivery failure raises, the commit fails, and the events are processed again."""

    def __init__(self, outputs: OutputProducer) -> None:
        super().__init__()
        self._outputs = outputs

    def on_commit_initiated(self, consumer: ConsumerT) -> Any:
        started = time.perf_counter()
        self._outputs.flush()
        return time.perf_counter() - started
