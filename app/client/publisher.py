"""Publish behaviour events as the worker expects them: validated, keyed, placed, idempotent."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from app.core.codec import DecodeError, decode_event, encode_event, format_time_ms
from app.core.partitioning import Partitioner, partition_for
from app.core.records import Event, EventType
from app.core.settings import Settings
from app.kafka.kafka_config import (
    PRODUCER_QUEUE,
    RecordRefused,
    client_config,
    keyed_by_user,
    produce_waiting,
)

Context = Mapping[str, str | int | float | bool | None]

R = TypeVar("R")


class InvalidEvent(ValueError):
    """An event the worker would refuse (``schemas/event.v1.json``, or the worker's time and
    size limits); nothing was sent. ``error`` is the dead-letter error it would get."""

    def __init__(self, event_type: str, error: str, reason: str) -> None:
        super().__init__(f"invalid {event_type} event ({error}): {reason}")
        self.error = error
        self.reason = reason


class PublishError(RuntimeError):
    """An event that was not delivered; ``code`` is librdkafka's error code, if it gave one."""

    def __init__(self, topic: str, event_id: str, reason: str, code: int | None = None) -> None:
        super().__init__(f"event {event_id!r} not delivered to {topic!r}: {reason}")
        self.topic = topic
        self.event_id = event_id
        self.code = code


class TopicNotFound(PublishError):
    """The topic does not exist (or this client may not see it): nothing was sent."""

    def __init__(self, topic: str, event_id: str = "") -> None:
        super().__init__(topic, event_id, "", KafkaError.UNKNOWN_TOPIC_OR_PART)
        # The reader has no event to name; the message is the same for both.
        self.args = (f"topic {topic!r} does not exist",)


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where the broker stored an event; ``event_id`` is what its recommendation will carry."""

    event_id: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Prepared:
    """An encoded, validated event and the partition the worker expects it on."""

    event: Event
    key: bytes
    value: bytes
    partition: int


def settings_from(settings: Settings | None, changes: Mapping[str, Any]) -> Settings:
    """``settings`` (default: the defaults) with ``changes`` applied, e.g.
    ``bootstrap_servers="kafka:9092"``. ``Settings.from_env(os.environ)`` gives the worker's."""
    base = settings if settings is not None else Settings()
    return base.replace(**changes) if changes else base


def build_event(
    event_type: EventType | str,
    user_id: str,
    *,
    item_id: str | None = None,
    query: str | None = None,
    event_id: str | None = None,
    event_time: datetime | None = None,
    context: Context | None = None,
) -> Event:
    """An :class:`Event` (not yet validated: :meth:`EventBuilder.prepare` does that).

    ``event_id`` defaults to a random UUID, ``event_time`` to now; a given ``event_time`` must
    be timezone-aware.

    >>> from datetime import UTC
    >>> e = build_event("search", "u1", query="jazz", event_id="e1",
    ...                 event_time=datetime(2026, 11, 29, 10, 15, tzinfo=UTC))
    >>> e.type.value, e.query, e.event_time
    ('search', 'jazz', '2026-11-29T10:15:00.000Z')
    """
    try:
        kind = EventType(event_type)
    except ValueError:
        allowed = ", ".join(t.value for t in EventType)
        reason = f"type is not one of {allowed}"
        raise InvalidEvent(str(event_type), "unknown_type", reason) from None
    if event_time is None:
        ms = time.time_ns() // 1_000_000
    elif event_time.tzinfo is None or event_time.utcoffset() is None:
        raise InvalidEvent(kind.value, "schema_violation", "event_time must be timezone-aware")
    else:
        ms = int(event_time.timestamp() * 1000)
    return Event(
        event_id=event_id if event_id is not None else str(uuid.uuid4()),
        user_id=user_id,
        type=kind,
        event_time_ms=ms,
        event_time=format_time_ms(ms),
        item_id=item_id,
        query=query,
        context=dict(context) if context is not None else None,
    )


class EventBuilder:
    """Validates events exactly as the worker decodes them and picks their partition; no I/O."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.partitioner = Partitioner(settings.partitioner)

    def partition_of(self, user_id: str) -> int:
        """The events partition the worker expects ``user_id``'s events on (it forwards a
        record found elsewhere): ``PARTITIONER`` over ``PARTITIONS``, as the worker computes."""
        return partition_for(user_id.encode("utf-8"), self.settings.partitions, self.partitioner)

    def prepare(self, event: Event, *, now_ms: int | None = None) -> Prepared:
        """``event`` encoded and decoded again by the worker's own decoder (schema, ids, size),
        its time checked against the worker's limits; :class:`InvalidEvent` if it would be
        dead-lettered."""
        kind = event.type.value
        value = encode_event(event)
        try:
            decoded = decode_event(value, max_bytes=self.settings.max_event_bytes)
        except DecodeError as exc:
            # fastjsonschema calls the document "data"; the caller knows it as the event.
            reason = exc.reason.replace("data.", "", 1).replace("data must", "the event must", 1)
            raise InvalidEvent(kind, exc.error.value, reason) from None
        self._check_time(kind, decoded.event_time_ms, now_ms)
        return Prepared(
            decoded, decoded.user_id.encode("utf-8"), value, self.partition_of(decoded.user_id)
        )

    def _check_time(self, kind: str, event_ms: int, now_ms: int | None) -> None:
        # The worker compares with the record's Kafka timestamp, which will be about now.
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        age_s, ahead_s = (now - event_ms) / 1000, (event_ms - now) / 1000
        max_age, max_future = self.settings.max_event_age_s, self.settings.max_event_future_s
        if max_age and age_s > max_age:
            raise InvalidEvent(
                kind, "time_out_of_range", f"event_time is {age_s:.0f} s old (limit {max_age:g})"
            )
        if max_future and ahead_s > max_future:
            raise InvalidEvent(
                kind,
                "time_out_of_range",
                f"event_time is {ahead_s:.0f} s ahead (limit {max_future:g})",
            )


class _Publisher(Generic[R]):
    """What both flavours share: settings, builder, one idempotent producer, the typed calls."""

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        delivery_timeout_s: float = 30.0,
        producer_config: Mapping[str, str | int | float | bool] | None = None,
        **changes: Any,
    ) -> None:
        self.settings = settings_from(settings, changes)
        self.topic = self.settings.topic_events
        self.builder = EventBuilder(self.settings)
        self.delivery_timeout_s = delivery_timeout_s
        self._fatal: str | None = None
        self._checked = False
        self._closed = False
        config: dict[str, Any] = client_config(
            self.settings,
            {
                "linger.ms": 1,
                # Retries neither duplicate nor reorder a user's events.
                "enable.idempotence": True,
                "acks": "all",
                # librdkafka gives up (and the caller hears of it) after this long.
                "delivery.timeout.ms": int(delivery_timeout_s * 1000),
                # liverank's topics are created by `topics create`, never by a typo.
                "allow.auto.create.topics": False,
                **PRODUCER_QUEUE,
                # The partition is given explicitly; this places keys the same way anyway.
                **keyed_by_user(self.settings),
                **(producer_config or {}),
            },
        )
        config["error_cb"] = self._on_error
        self._producer = Producer(config)

    def _on_error(self, error: KafkaError) -> None:
        # Connection trouble is retried by librdkafka; a fatal error (the idempotent producer's
        # sequence is lost) ends this producer, and every later publish says so.
        if error.fatal():
            self._fatal = error.str()

    def _check_topic(self, event_id: str) -> None:
        """Once: the events topic exists and has the partitions the worker has."""
        if self._checked:
            return
        meta = self._producer.list_topics(self.topic, timeout=self.delivery_timeout_s)
        info = meta.topics.get(self.topic)
        if info is None or info.error is not None:
            raise TopicNotFound(self.topic, event_id)
        if len(info.partitions) != self.settings.partitions:
            raise PublishError(
                self.topic,
                event_id,
                f"the topic has {len(info.partitions)} partitions, PARTITIONS says "
                f"{self.settings.partitions}: events would land on the wrong partition",
            )
        self._checked = True

    def _usable(self, event_id: str) -> None:
        if self._closed:
            raise PublishError(self.topic, event_id, "the publisher is closed")
        if self._fatal is not None:
            raise PublishError(self.topic, event_id, f"fatal producer error: {self._fatal}")

    def _produce(self, prepared: Prepared, on_delivery: Any) -> None:
        produce_waiting(
            self._producer,
            self.topic,
            key=prepared.key,
            value=prepared.value,
            partition=prepared.partition,
            on_delivery=on_delivery,
        )

    def _outcome(self, event_id: str, err: KafkaError | None, msg: Message) -> Delivery:
        if err is not None:
            raise PublishError(self.topic, event_id, err.str(), err.code())
        topic = msg.topic() or self.topic
        return Delivery(event_id, topic, msg.partition() or 0, msg.offset() or 0)

    # The typed calls, one per event type, all through publish(). Each takes ``event_id``
    # (default: a random UUID), ``event_time`` (default: now; timezone-aware) and ``context``.

    def publish(self, event: Event) -> R:
        raise NotImplementedError

    def _item_event(
        self,
        kind: EventType,
        user_id: str,
        item_id: str,
        event_id: str | None,
        event_time: datetime | None,
        context: Context | None,
    ) -> R:
        return self.publish(
            build_event(
                kind,
                user_id,
                item_id=item_id,
                event_id=event_id,
                event_time=event_time,
                context=context,
            )
        )

    def view(
        self,
        user_id: str,
        item_id: str,
        *,
        event_id: str | None = None,
        event_time: datetime | None = None,
        context: Context | None = None,
    ) -> R:
        """Publish a view of ``item_id`` (state only: the worker sends no recommendation)."""
        return self._item_event(EventType.VIEW, user_id, item_id, event_id, event_time, context)

    def click(
        self,
        user_id: str,
        item_id: str,
        *,
        event_id: str | None = None,
        event_time: datetime | None = None,
        context: Context | None = None,
    ) -> R:
        """Publish a click; the worker answers with next-item recommendations."""
        return self._item_event(EventType.CLICK, user_id, item_id, event_id, event_time, context)

    def add_to_cart(
        self,
        user_id: str,
        item_id: str,
        *,
        event_id: str | None = None,
        event_time: datetime | None = None,
        context: Context | None = None,
    ) -> R:
        """Publish an add-to-cart; the worker answers with next-item recommendations."""
        return self._item_event(
            EventType.ADD_TO_CART, user_id, item_id, event_id, event_time, context
        )

    def purchase(
        self,
        user_id: str,
        item_id: str,
        *,
        event_id: str | None = None,
        event_time: datetime | None = None,
        context: Context | None = None,
    ) -> R:
        """Publish a purchase; the item is never recommended to the user again."""
        return self._item_event(EventType.PURCHASE, user_id, item_id, event_id, event_time, context)

    def search(
        self,
        user_id: str,
        query: str,
        *,
        event_id: str | None = None,
        event_time: datetime | None = None,
        context: Context | None = None,
    ) -> R:
        """Publish a search; the worker answers with ranked results for ``query``."""
        return self.publish(
            build_event(
                EventType.SEARCH,
                user_id,
                query=query,
                event_id=event_id,
                event_time=event_time,
                context=context,
            )
        )

    def forget_user(
        self,
        user_id: str,
        *,
        event_id: str | None = None,
        event_time: datetime | None = None,
        context: Context | None = None,
    ) -> R:
        """Erase the user: the worker deletes their state and sends a tombstone downstream."""
        return self.publish(
            build_event(
                EventType.FORGET_USER,
                user_id,
                event_id=event_id,
                event_time=event_time,
                context=context,
            )
        )


class EventPublisher(_Publisher[Delivery]):
    """Blocking publisher: each call returns once the broker has the event, or raises.

    >>> with EventPublisher(bootstrap_servers="kafka:9092") as events:  # doctest: +SKIP
    ...     sent = events.search("user-42", "jazz piano")
    ...     sent.partition, sent.offset
    """

    def publish(self, event: Event) -> Delivery:
        """Validate, send and wait for the broker; raises :class:`InvalidEvent` (nothing sent)
        or :class:`PublishError` (not delivered within ``delivery_timeout_s``)."""
        prepared = self.builder.prepare(event)
        self._usable(event.event_id)
        self._check_topic(event.event_id)
        result: list[tuple[KafkaError | None, Message]] = []
        try:
            self._produce(prepared, lambda err, msg: result.append((err, msg)))
        except RecordRefused as exc:
            raise PublishError(self.topic, event.event_id, str(exc), exc.error.code()) from None
        # librdkafka reports every record by delivery.timeout.ms; the margin covers the poll.
        deadline = time.monotonic() + self.delivery_timeout_s + 10.0
        while not result and time.monotonic() < deadline:
            self._producer.poll(0.1)
        if not result:
            raise PublishError(self.topic, event.event_id, "no delivery report")
        return self._outcome(event.event_id, *result[0])

    def flush(self, timeout: float = 30.0) -> int:
        """Wait for everything queued; the number of events still undelivered."""
        return int(self._producer.flush(timeout))

    def close(self, timeout: float = 30.0) -> None:
        if not self._closed:
            self.flush(timeout)
            self._closed = True

    def __enter__(self) -> EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncEventPublisher(_Publisher[Awaitable[Delivery]]):
    """asyncio publisher: ``await publish(...)`` resolves when the broker has the event.

    A thread serves librdkafka's delivery reports and settles each caller's future on its own
    event loop; many publishes may be in flight at once.

    >>> async with AsyncEventPublisher(bootstrap_servers="kafka:9092") as events:  # doctest: +SKIP
    ...     sent = await events.click("user-42", "item-7")
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        delivery_timeout_s: float = 30.0,
        producer_config: Mapping[str, str | int | float | bool] | None = None,
        **changes: Any,
    ) -> None:
        super().__init__(
            settings,
            delivery_timeout_s=delivery_timeout_s,
            producer_config=producer_config,
            **changes,
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="liverank-publisher", daemon=True)
        self._poller.start()
        self._check_lock = asyncio.Lock()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)

    def publish(self, event: Event) -> Awaitable[Delivery]:
        """Validate (at once: :class:`InvalidEvent` is raised by this call, before any await),
        send, and return an awaitable that resolves to the :class:`Delivery` or raises
        :class:`PublishError`."""
        prepared = self.builder.prepare(event)
        return self._publish(prepared)

    async def _publish(self, prepared: Prepared) -> Delivery:
        event_id = prepared.event.event_id
        self._usable(event_id)
        if not self._checked:
            async with self._check_lock:
                await asyncio.to_thread(self._check_topic, event_id)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivery] = loop.create_future()

        def settle(err: KafkaError | None, msg: Message) -> None:
            if future.done():  # the caller gave up waiting
                return
            try:
                future.set_result(self._outcome(event_id, err, msg))
            except PublishError as exc:
                future.set_exception(exc)

        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            # The poll thread: hand the outcome to the caller's loop.
            if not loop.is_closed():
                loop.call_soon_threadsafe(settle, err, msg)

        while True:
            try:
                self._producer.produce(
                    self.topic,
                    key=prepared.key,
                    value=prepared.value,
                    partition=prepared.partition,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                await asyncio.sleep(0.05)  # librdkafka's queue is full: back-pressure
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                raise PublishError(self.topic, event_id, error.str(), error.code()) from None
        return await future

    async def flush(self, timeout: float = 30.0) -> int:
        """Wait for everything queued; the number of events still undelivered."""
        return int(await asyncio.to_thread(self._producer.flush, timeout))

    async def close(self, timeout: float = 30.0) -> None:
        if self._closed:
            return
        await self.flush(timeout)
        self._closed = True
        self._stop.set()
        await asyncio.to_thread(self._poller.join)

    async def __aenter__(self) -> AsyncEventPublisher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
