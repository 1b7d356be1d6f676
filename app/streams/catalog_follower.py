"""Follows the compacted catalog topic: preloads it before the worker is ready, then stays live."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from app.core.catalog import Catalog
from app.core.codec import DecodeError
from app.core.codec import decode_item as decode_item_record
from app.core.records import DeadLetterError, Source
from app.core.settings import Settings
from app.kafka.kafka_config import reader_config
from app.ops.metrics import Metrics

log = logging.getLogger(__name__)

DeadLetterSink = Callable[[DeadLetterError, str, Source, bytes], None]


class CatalogPreloadError(RuntimeError):
    """The catalog topic could not be read to its end in time."""


class CatalogFollower:
    """Reads every partition of the catalog topic from the beginning, outside any group."""

    def __init__(
        self, settings: Settings, catalog: Catalog, metrics: Metrics, dead_letter: DeadLetterSink
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.metrics = metrics
        self.dead_letter = dead_letter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Every worker reads the whole catalog.
        self._consumer = Consumer(reader_config(settings, "catalog"))

    def _apply(self, msg: Message) -> None:
        source = Source(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.key())
        try:
            decoded = decode_item_record(msg.value(), msg.key())
        except DecodeError as exc:
            self.metrics.catalog_updates.labels("invalid").inc()
            self.dead_letter(exc.error, f"catalog record: {exc.reason}", source, msg.value() or b"")
            return
        if isinstance(decoded, str):
            self.catalog.remove(decoded)
            self.metrics.catalog_updates.labels("tombstone").inc()
        else:
            self.catalog.upsert(decoded)
            self.metrics.catalog_updates.labels(
                "withdrawn" if decoded.withdrawn else "upsert"
            ).inc()

    def _poll(self, timeout_s: float) -> int:
        count = 0
        for msg in self._consumer.consume(num_messages=1000, timeout=timeout_s):
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("catalog consumer error: %s", error)
                continue
            self._apply(msg)
            count += 1
        return count

    def preload(self) -> int:
        """Block until every record present at start-up is applied; returns how many."""
        topic = self.settings.topic_catalog
        timeout = self.settings.catalog_preload_timeout_s
        deadline = time.monotonic() + timeout
        meta = self._consumer.list_topics(topic, timeout=timeout)
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            raise CatalogPreloadError(
                f"catalog topic {topic!r} not found; run 'liverank topics create'"
            )
        targets: dict[int, int] = {}
        for p in info.partitions:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=timeout
            )
            targets[p] = high
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in targets])
        applied = 0
        while True:
            positions = {
                tp.partition: tp.offset
                for tp in self._consumer.position([TopicPartition(topic, p) for p in targets])
            }
            if all(targets[p] == 0 or positions.get(p, -1) >= targets[p] for p in targets):
                break
            if time.monotonic() > deadline:
                raise CatalogPreloadError(
                    f"catalog preload did not reach the end of {topic!r} within {timeout}s "
                    f"(at {positions}, end {targets})"
                )
            applied += self._poll(0.5)
        self.catalog.publish()
        self.metrics.catalog_items.set(len(self.catalog.index))
        log.info("catalog preloaded: %d records, %d active items", applied, len(self.catalog.index))
        return applied

    def start(self) -> None:
        """Keep following in a daemon thread, re-indexing at most every ``catalog_refresh_s``."""
        self._thread = threading.Thread(target=self._run, name="liverank-catalog", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        refresh = self.settings.catalog_refresh_s
        last_publish = time.monotonic()
        # A rebuild of a large catalog takes seconds of this thread (and some of the GIL):
        # wait at least four build times between rebuilds, so indexing never takes more than
        # about a fifth of the worker while the catalog churns.
        interval = refresh
        while not self._stop.is_set():
            try:
                self._poll(min(refresh, 0.5))
                if time.monotonic() - last_publish >= interval:
                    started = time.monotonic()
                    if self.catalog.publish():
                        self.metrics.catalog_items.set(len(self.catalog.index))
                        interval = max(refresh, 4 * (time.monotonic() - started))
                    last_publish = time.monotonic()
            except Exception:  # keep following; a transient client error must not stop updates
                log.exception("catalog follower error")
                self._stop.wait(1.0)
        self._consumer.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        else:
            self._consumer.close()
