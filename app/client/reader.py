"""Follow the recommendations topic: each user's latest list, and the answer to one event."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from confluent_kafka import Consumer, TopicPartition

from app.client.publisher import TopicNotFound, settings_from
from app.core.codec import DecodeError, decode_recommendation
from app.core.records import Recommendation
from app.core.settings import Settings
from app.kafka.kafka_config import reader_config

log = logging.getLogger(__name__)

# Where to start reading: the end (only what is written from now on), the beginning of what the
# topic keeps, the first record at or after a (timezone-aware) time, or offsets by partition
# (partitions not named start at the end).
Start = Literal["end", "beginning"] | datetime | Mapping[int, int]


class RecommendationTimeout(TimeoutError):
    """No recommendation for ``event_id`` arrived within ``timeout_s``."""

    def __init__(self, event_id: str, timeout_s: float) -> None:
        super().__init__(f"no recommendation for event {event_id!r} within {timeout_s:g} s")
        self.event_id = event_id
        self.timeout_s = timeout_s


class ReaderClosed(RuntimeError):
    """The reader is not running (never started, closed, or its consumer failed)."""


class RecommendationCache:
    """Recommendations as they arrive, bounded: each user's latest (LRU, ``size`` users), the
    most recent ``recent`` by event id, and callers waiting for an event id. Thread-safe: the
    reader's thread applies records, callers read and wait from theirs."""

    def __init__(self, size: int = 10_000, recent: int = 10_000) -> None:
        if size < 1 or recent < 1:
            raise ValueError("size and recent must be at least 1")
        self.size = size
        self.recent = recent
        self._lock = threading.Lock()
        self._latest: OrderedDict[str, Recommendation] = OrderedDict()
        self._by_event: OrderedDict[str, Recommendation] = OrderedDict()
        self._waiters: dict[str, list[concurrent.futures.Future[Recommendation]]] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._latest)

    def apply(self, key: bytes | None, value: bytes | None) -> Recommendation | None:
        """One record of the topic: a recommendation (returned) or a tombstone, which evicts
        the user named by ``key``. Raises :class:`DecodeError` for a record that breaks the
        schema, and leaves everything as it was."""
        if value is None:
            if key is not None:
                with self._lock:
                    self._latest.pop(key.decode("utf-8", errors="replace"), None)
            return None
        rec = decode_recommendation(value)
        with self._lock:
            current = self._latest.get(rec.user_id)
            # A user's records arrive in order; only a replay after a worker's crash re-sends an
            # older event's answer, which must not replace a newer one.
            if current is None or rec.event_time_ms >= current.event_time_ms:
                self._latest[rec.user_id] = rec
            if rec.user_id in self._latest:
                self._latest.move_to_end(rec.user_id)
            while len(self._latest) > self.size:
                self._latest.popitem(last=False)
            self._by_event[rec.event_id] = rec
            self._by_event.move_to_end(rec.event_id)
            while len(self._by_event) > self.recent:
                self._by_event.popitem(last=False)
            waiters = self._waiters.pop(rec.event_id, [])
        for future in waiters:
            try:
                future.set_result(rec)
            except concurrent.futures.InvalidStateError:  # the caller gave up
                pass
        return rec

    def latest(self, user_id: str) -> Recommendation | None:
        """The user's newest recommendation seen, or None (never seen, evicted, forgotten)."""
        with self._lock:
            rec = self._latest.get(user_id)
            if rec is not None:
                self._latest.move_to_end(user_id)
            return rec

    def get(self, event_id: str) -> Recommendation | None:
        """The recommendation answering ``event_id``, if it is among the recent ones."""
        with self._lock:
            return self._by_event.get(event_id)

    def expect(self, event_id: str) -> concurrent.futures.Future[Recommendation]:
        """A future for ``event_id``'s recommendation: done already if it has arrived."""
        future: concurrent.futures.Future[Recommendation] = concurrent.futures.Future()
        with self._lock:
            rec = self._by_event.get(event_id)
            if rec is None:
                self._waiters.setdefault(event_id, []).append(future)
        if rec is not None:
            future.set_result(rec)
        return future

    def unexpect(self, event_id: str, future: concurrent.futures.Future[Recommendation]) -> None:
        """Stop waiting with ``future`` (it timed out or was cancelled)."""
        with self._lock:
            waiting = self._waiters.get(event_id, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiters.pop(event_id, None)

    def fail(self, error: BaseException) -> None:
        """Every caller still waiting gets ``error``."""
        with self._lock:
            waiters = [f for futures in self._waiters.values() for f in futures]
            self._waiters.clear()
        for future in waiters:
            try:
                future.set_exception(error)
            except concurrent.futures.InvalidStateError:
                pass


class RecommendationReader:
    """Follows every partition of the recommendations topic in a background thread, with no
    consumer group (each reader sees every record; nothing is committed).

    Start it before publishing the events whose answers you wait for: it fixes its start
    offsets (by default the topic's end) before :meth:`start` returns, so every record written
    after that is seen, including one that arrives before :meth:`wait_for` is called.

    >>> async with RecommendationReader(bootstrap_servers="kafka:9092") as recs:  # doctest: +SKIP
    ...     rec = await recs.wait_for(sent.event_id, timeout=10)
    ...     recs.latest("user-42")
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        cache_size: int = 10_000,
        recent_size: int = 10_000,
        start: Start = "end",
        metadata_timeout_s: float = 30.0,
        consumer_config: Mapping[str, str | int | float | bool] | None = None,
        **changes: Any,
    ) -> None:
        self.settings = settings_from(settings, changes)
        self.topic = self.settings.topic_recommendations
        self.cache = RecommendationCache(cache_size, recent_size)
        self.records = 0
        self.skipped = 0  # records that broke the schema (logged)
        self._start = start
        self._metadata_timeout_s = metadata_timeout_s
        self._consumer_config = dict(consumer_config or {})
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Assign every partition at its start offset and begin following; idempotent. Raises
        :class:`TopicNotFound` when the topic does not exist."""
        if self._stop.is_set():
            raise ReaderClosed("a closed reader does not start again; make a new one")
        if self._thread is not None:
            return
        consumer = Consumer(reader_config(self.settings, "client-reader", self._consumer_config))
        try:
            consumer.assign(self._positions(consumer))
        except BaseException:
            consumer.close()
            raise
        self._thread = threading.Thread(
            target=self._follow, args=(consumer,), name="liverank-reader", daemon=True
        )
        self._thread.start()

    def _positions(self, consumer: Consumer) -> list[TopicPartition]:
        timeout = self._metadata_timeout_s
        meta = consumer.list_topics(self.topic, timeout=timeout)
        info = meta.topics.get(self.topic)
        if info is None or info.error is not None:
            raise TopicNotFound(self.topic)
        partitions = sorted(info.partitions)
        # Concrete offsets, not OFFSET_END: the end is fixed now, before anything is published.
        marks = {
            p: consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout)
            for p in partitions
        }
        start = self._start
        if start == "end":
            return [TopicPartition(self.topic, p, marks[p][1]) for p in partitions]
        if start == "beginning":
            return [TopicPartition(self.topic, p, marks[p][0]) for p in partitions]
        if isinstance(start, datetime):
            if start.tzinfo is None:
                raise ValueError("start must be a timezone-aware datetime")
            ms = int(start.timestamp() * 1000)
            found = consumer.offsets_for_times(
                [TopicPartition(self.topic, p, ms) for p in partitions], timeout=timeout
            )
            # -1: nothing that recent on the partition, so its end.
            return [
                TopicPartition(self.topic, tp.partition, tp.offset)
                if tp.offset >= 0
                else TopicPartition(self.topic, tp.partition, marks[tp.partition][1])
                for tp in found
            ]
        if isinstance(start, Mapping):
            return [TopicPartition(self.topic, p, start.get(p, marks[p][1])) for p in partitions]
        raise ValueError(f"start must be 'end', 'beginning', a datetime or offsets, not {start!r}")

    def _follow(self, consumer: Consumer) -> None:
        try:
            while not self._stop.is_set():
                # poll() returns as soon as a record is there; consume(n, timeout) would wait
                # its whole timeout unless n records arrive. Then take what else is buffered.
                first = consumer.poll(0.2)
                if first is None:
                    continue
                for msg in [first, *consumer.consume(499, timeout=0)]:
                    error = msg.error()
                    if error is not None:
                        if error.fatal():
                            raise RuntimeError(f"{self.topic}: {error.str()}")
                        log.debug("%s: %s", self.topic, error.str())
                        continue
                    self.records += 1
                    try:
                        self.cache.apply(msg.key(), msg.value())
                    except DecodeError as exc:
                        self.skipped += 1
                        log.warning(
                            "skipped a record of %s [%s] at offset %s: %s",
                            self.topic,
                            msg.partition(),
                            msg.offset(),
                            exc,
                        )
        except Exception as exc:  # every waiter must hear of it, whatever it is
            self._error = exc
            log.error("recommendation reader stopped: %s", exc)
            self.cache.fail(ReaderClosed(f"the reader stopped: {exc}"))
        finally:
            consumer.close()
            self.cache.fail(ReaderClosed("the reader is closed"))

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop following (the consumer leaves at once); waiting callers get ReaderClosed."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> RecommendationReader:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> RecommendationReader:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    # ------------------------------------------------------------------ reading

    def _running(self) -> None:
        if self._error is not None:
            raise ReaderClosed(f"the reader stopped: {self._error}")
        if self._thread is None or self._stop.is_set():
            raise ReaderClosed("the reader is not running: call start() or use `with`")

    def latest(self, user_id: str) -> Recommendation | None:
        """The newest recommendation seen for ``user_id``, or None: never seen since the
        reader's start, evicted from the cache (``cache_size`` users, least recently used
        first), or forgotten (a forget_user tombstone)."""
        return self.cache.latest(user_id)

    async def wait_for(self, event_id: str, timeout: float = 30.0) -> Recommendation:
        """The recommendation answering ``event_id`` (a search, click, add-to-cart or
        purchase), as soon as it arrives; :class:`RecommendationTimeout` after ``timeout``
        seconds. One that arrived earlier is found among the last ``recent_size``."""
        self._running()
        future = self.cache.expect(event_id)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            raise RecommendationTimeout(event_id, timeout) from None
        finally:
            self.cache.unexpect(event_id, future)

    def result(self, event_id: str, timeout: float = 30.0) -> Recommendation:
        """:meth:`wait_for` for code without an event loop: blocks this thread."""
        self._running()
        future = self.cache.expect(event_id)
        try:
            return future.result(timeout)
        except TimeoutError:
            raise RecommendationTimeout(event_id, timeout) from None
        finally:
            self.cache.unexpect(event_id, future)
