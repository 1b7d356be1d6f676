"""Producing a micro-batch's records (recommendations, feedback, dead letters, and the state
table's changelog) with librdkafka.

Faust's own send path costs tens of microseconds of event-loop time per record; librdkafka
batches and sends from its own threads. At-least-once: the agent hands a batch's records over
before the batch is acked, and :class:`FlushBeforeCommit` makes every faust commit wait until
the broker has all of them, before faust picks the offsets to commit.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import faust
from confluent_kafka import KafkaError, Message, Producer
from faust.types import ConsumerT

from app.core.codec import dead_letter_key, encode_dead_letter, shrink_dead_letter
from app.core.processor import DEAD_LETTERS, Output
from app.core.records import DeadLetterError, Source
from app.core.settings import Settings
from app.kafka.kafka_config import (
    PRODUCER_QUEUE,
    RecordRefused,
    client_config,
    keyed_by_user,
    produce_waiting,
    too_large,
)
from app.ops.metrics import Metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Forward:
    """An input record to put back on the events topic, on ``partition``."""

    partition: int
    key: bytes
    value: bytes | None
    timestamp_ms: int | None
    headers: tuple[tuple[str, bytes], ...] = ()
    source: Source | None = None  # where it was read, for its dead letter if it cannot go


@dataclass(frozen=True, slots=True)
class Origin:
    """The input record some outputs answer: their dead letter names it if they cannot go."""

    source: Source
    raw: bytes


class DeliveryError(RuntimeError):
    """Records are still waiting for the broker; the batch must not be acknowledged yet."""


class ProducerFailed(RuntimeError):
    """An error no retry fixes: records are lost unless their events are processed again, so
    the worker must stop (and be restarted) rather than commit past them."""


# A dead letter the broker refused for its size is sent again copying fewer bytes of the
# record: first this many, then none (its size and sha256 are always there).
SHRINK_STEPS = (1024, 0)


@dataclass(frozen=True, slots=True)
class _Sent:
    """How a record was sent, for its delivery report: what to do if it is refused."""

    origin: Origin | None
    alone: bool = False  # in a batch of its own (the broker limits batches, not records)
    shrunk: int = 0  # for a dead letter: how many SHRINK_STEPS it has taken


@dataclass(frozen=True, slots=True)
class _Refused:
    """A record refused for its size, waiting for its retry or its replacement."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int
    timestamp_ms: int
    headers: list[tuple[str, bytes]] | None
    sent: _Sent
    error: str


def _partition(msg: Message) -> int:
    partition = msg.partition()
    return -1 if partition is None else partition


def _headers(msg: Message) -> list[tuple[str, bytes]] | None:
    headers = msg.headers()
    if not headers:
        return None
    items = headers.items() if isinstance(headers, Mapping) else headers
    return [(str(k), v if isinstance(v, bytes) else str(v or "").encode()) for k, v in items]


class OutputProducer:
    """Hands records to librdkafka and waits until the broker has all of them.

    Every produce error is handled. A record refused for its size is sent again in a batch of
    its own (the broker's max.message.bytes limits a whole batch: small records batched
    together can be refused); refused alone too, or over the producer's own limit, it is
    replaced by a dead letter that fits, naming the input record it answered, and a dead
    letter refused for its size is sent again copying fewer bytes. Any other error means
    records were lost: ``on_fatal`` is told (the worker stops, and its events are processed
    again after the restart) and :class:`ProducerFailed` raised.
    """

    def __init__(
        self,
        settings: Settings,
        topics: Mapping[str, str],
        on_fatal: Callable[[str], None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._settings = settings
        self._topics = dict(topics)
        self._dead_letters = self._topics[DEAD_LETTERS]
        self._on_fatal = on_fatal
        self._metrics = metrics
        self._lock = threading.Lock()
        self._refused: list[_Refused] = []
        self._fatal: list[str] = []
        self._config: dict[str, Any] = {
            **client_config(
                settings,
                {
                    # Records leave within a millisecond; a busy worker still fills batches.
                    "linger.ms": 1,
                    "acks": "all",
                    # Retries never duplicate or reorder a user's records.
                    "enable.idempotence": True,
                    "message.max.bytes": settings.producer_max_message_bytes,
                    **PRODUCER_QUEUE,
                    # Downstream finds a user's records where it finds their events.
                    **keyed_by_user(settings),
                },
            ),
            "error_cb": self._on_error,
        }
        self._producer = Producer(self._config)
        # One record per batch, for records refused for their size; made on first use.
        self._single: Producer | None = None
        # The newest delivered offset of each changelog (topic, partition), until taken.
        self._changelog_offsets: dict[tuple[str, int], int] = {}

    # ------------------------------------------------------------------ callbacks

    def _on_error(self, error: KafkaError) -> None:
        # Connection trouble is retried by librdkafka (and logged by it); only a fatal error
        # (the idempotent producer's state is lost) ends this producer.
        if error.fatal():
            with self._lock:
                self._fatal.append(f"fatal producer error: {error.str()}")

    def _delivered(self, sent: _Sent, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            return
        kind, stamp = msg.timestamp()
        refused = _Refused(
            msg.topic() or "",
            msg.key(),
            msg.value() or b"",
            _partition(msg),
            stamp if kind and stamp > 0 else 0,
            _headers(msg),
            sent,
            err.str(),
        )
        self._note_failure(err, refused)

    def _changelog_delivered(self, err: KafkaError | None, msg: Message) -> None:
        offset = msg.offset()
        with self._lock:
            if err is not None:
                # A lost changelog record would let a restore bring back an older state.
                self._fatal.append(f"{msg.topic()}: a changelog record was lost: {err.str()}")
            elif offset is not None:
                # One partition's records are delivered in order: the last is the newest.
                self._changelog_offsets[(msg.topic() or "", _partition(msg))] = offset

    def _note_failure(self, err: KafkaError, refused: _Refused) -> None:
        with self._lock:
            if too_large(err) and not err.fatal():
                self._refused.append(refused)
            else:
                self._fatal.append(f"{refused.topic}: {err.str()}")

    # ------------------------------------------------------------------ sending

    def _send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        sent: _Sent,
        partition: int = -1,
        timestamp_ms: int = 0,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        producer = self._producer if not sent.alone else self._single_producer()
        extra: dict[str, Any] = {}
        if partition >= 0:
            extra["partition"] = partition
        if timestamp_ms:
            extra["timestamp"] = timestamp_ms
        if headers:
            extra["headers"] = headers
        try:
            produce_waiting(
                producer,
                topic,
                key=key,
                value=value,
                on_delivery=partial(self._delivered, sent),
                **extra,
            )
        except RecordRefused as exc:
            # Over the producer's own limit: a batch of its own would not help.
            alone = dataclasses.replace(sent, alone=True)
            refused = _Refused(
                topic, key, value or b"", partition, timestamp_ms, headers, alone, exc.error.str()
            )
            self._note_failure(exc.error, refused)

    def _single_producer(self) -> Producer:
        if self._single is None:
            self._single = Producer({**self._config, "linger.ms": 0, "batch.num.messages": 1})
        return self._single

    def produce(self, outputs: Iterable[Output], origin: Origin | None = None) -> int:
        """Queue records for sending; returns how many. ``origin``: the input record they
        answer, named by their dead letter if one cannot be sent."""
        return self.produce_answers([(outputs, origin)])

    def produce_answers(self, answers: Iterable[tuple[Iterable[Output], Origin | None]]) -> int:
        """:meth:`produce` for each input record's outputs, in order; returns how many."""
        count = 0
        topics = self._topics
        for outputs, origin in answers:
            sent = _Sent(origin)
            for out in outputs:
                self._send(topics[out.role], out.key, out.value, sent)
                count += 1
        self._producer.poll(0)
        self._settle()
        return count

    def changelog(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        """Queue a table's changelog record (``value`` None: a tombstone) on ``partition``.
        Its delivered offset is kept for :meth:`take_changelog_offsets`. A changelog record
        that cannot go is fatal, like any lost record; the next :meth:`produce` or
        :meth:`flush` raises :class:`ProducerFailed`."""
        try:
            produce_waiting(
                self._producer,
                topic,
                key=key,
                value=value,
                partition=partition,
                on_delivery=self._changelog_delivered,
            )
        except RecordRefused as exc:
            with self._lock:
                self._fatal.append(f"{topic}: a changelog record was refused: {exc.error.str()}")

    def take_changelog_offsets(self) -> dict[tuple[str, int], int]:
        """The newest delivered offset of each changelog partition since the last call."""
        with self._lock:
            offsets, self._changelog_offsets = self._changelog_offsets, {}
        return offsets

    def dead_letter(self, key: bytes | None, value: bytes) -> None:
        """Queue one dead letter (already encoded); from any thread."""
        self._send(self._dead_letters, key, value, _Sent(None))
        self._producer.poll(0)
        self._settle()

    def forward(self, topic: str, records: Iterable[Forward]) -> int:
        """Queue input records again on the partition their key belongs to, unchanged (key,
        value, headers and timestamp); at-least-once like every output. One that cannot go
        is dead-lettered."""
        count = 0
        for rec in records:
            origin = None if rec.source is None else Origin(rec.source, rec.value or b"")
            self._send(
                topic,
                rec.key,
                rec.value,
                _Sent(origin),
                partition=rec.partition,
                timestamp_ms=rec.timestamp_ms or 0,
                headers=list(rec.headers) or None,
            )
            count += 1
        self._producer.poll(0)
        self._settle()
        return count

    # ------------------------------------------------------------------ failures

    def _settle(self) -> bool:
        """Retry or replace what was refused for its size; fail on anything else. True if
        something was sent again (it still has to be delivered)."""
        if self._single is not None:
            self._single.poll(0)
        with self._lock:
            refused, self._refused = self._refused, []
            fatal = list(self._fatal)
        if fatal:
            reason = f"records could not be produced: {'; '.join(fatal[:3])}"
            if self._on_fatal is not None:
                self._on_fatal(reason)
            raise ProducerFailed(reason)
        for rec in refused:
            self._count_refused(rec.topic)
            if not rec.sent.alone:
                self._send(
                    rec.topic,
                    rec.key,
                    rec.value,
                    dataclasses.replace(rec.sent, alone=True),
                    rec.partition,
                    rec.timestamp_ms,
                    rec.headers,
                )
            elif rec.topic == self._dead_letters:
                self._shrink(rec)
            else:
                self._replace(rec)
        return bool(refused)

    def _shrink(self, rec: _Refused) -> None:
        if rec.sent.shrunk >= len(SHRINK_STEPS):
            with self._lock:
                self._fatal.append(
                    f"{rec.topic}: a dead letter copying no bytes was refused: {rec.error}"
                )
            return
        keep = SHRINK_STEPS[rec.sent.shrunk]
        log.warning(
            "a dead letter of %d bytes was refused (%s); sending it with at most %d bytes of "
            "the record",
            len(rec.value),
            rec.error,
            keep,
            extra={"topic": rec.topic, "error": rec.error},
        )
        value = shrink_dead_letter(
            rec.value, keep, f"dead letter of {len(rec.value)} bytes refused: {rec.error}"
        )
        sent = dataclasses.replace(rec.sent, shrunk=rec.sent.shrunk + 1)
        self._send(rec.topic, rec.key, value, sent, rec.partition)

    def _replace(self, rec: _Refused) -> None:
        """A dead letter in place of a record that could not go."""
        if rec.topic == self._settings.topic_events:
            # A forward: the record itself is what could not go.
            error = DeadLetterError.OVERSIZE
            reason = (
                f"{len(rec.value)} bytes could not be forwarded to partition {rec.partition} of "
                f"{rec.topic}: {rec.error}"
            )
        else:
            error = DeadLetterError.PROCESSING_ERROR
            reason = f"its {rec.topic} record of {len(rec.value)} bytes was refused: {rec.error}"
        origin = rec.sent.origin
        if origin is not None:
            source, raw = origin.source, origin.raw
        else:
            source, raw = Source(rec.topic, max(0, rec.partition), 0, rec.key), rec.value
        log.warning(
            "dead letter (%s) from %s[%d]@%d: %s",
            error.value,
            source.topic,
            source.partition,
            source.offset,
            reason,
            extra={
                "topic": source.topic,
                "partition": source.partition,
                "offset": source.offset,
                "error": error.value,
                "reason": reason,
            },
        )
        if self._metrics is not None:
            self._metrics.dead_letters.labels(error.value).inc()
        value = encode_dead_letter(
            error,
            reason,
            source,
            raw,
            received_time_ms=time.time_ns() // 1_000_000,
            max_bytes=self._settings.dead_letter_max_bytes,
        )
        self._send(self._dead_letters, dead_letter_key(source.key), value, _Sent(origin, True))

    def _count_refused(self, topic: str) -> None:
        if self._metrics is not None:
            self._metrics.records_refused.labels(topic).inc()

    def flush(self, timeout_s: float = 60.0) -> None:
        """Block until every queued record (or its replacement) is on the broker:
        :class:`DeliveryError` if some are still waiting after ``timeout_s``,
        :class:`ProducerFailed` if some were lost."""
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = self._producer.flush(max(0.0, deadline - time.monotonic()))
            if self._single is not None:
                remaining += self._single.flush(max(0.0, deadline - time.monotonic()))
            if self._settle() and time.monotonic() < deadline:
                continue  # sent again: wait for those too
            if remaining:
                raise DeliveryError(f"{remaining} records undelivered after {timeout_s}s")
            return

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            self.flush(timeout_s)
        except (DeliveryError, ProducerFailed) as exc:
            log.error("output records were not all delivered at shutdown: %s", exc)


class FlushBeforeCommit(faust.Sensor):
    """Faust calls ``on_commit_initiated`` synchronously, just before it reads which offsets
    have been acked: flushing there means no offset is committed ahead of its outputs. A
    delivery failure raises, the commit fails, and the events are processed again.

    Once the worker has failed (``failed()``), no commit happens at all: faust acks the batch
    an agent was processing when it crashed (take_events acks in a ``finally``), and records
    may have been lost by the producer; the restarted worker processes them again.

    ``flushed`` runs after each successful flush: the table records its changelog's delivered
    offsets there (:meth:`app.streams.tables.UserStateTable.persist_changelog_offsets`)."""

    def __init__(
        self,
        outputs: OutputProducer,
        failed: Callable[[], bool] = lambda: False,
        flushed: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__()
        self._outputs = outputs
        self._failed = failed
        self._flushed = flushed

    def on_commit_initiated(self, consumer: ConsumerT) -> Any:
        if self._failed():
            raise ProducerFailed("not committing: the worker failed (see the critical line)")
        # ProducerFailed (records lost) has told the worker to stop; raising here keeps this
        # commit from happening, so the lost records' events are processed again.
        started = time.perf_counter()
        self._outputs.flush()
        self._flushed()
        return time.perf_counter() - started
