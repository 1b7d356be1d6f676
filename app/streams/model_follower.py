"""Hot model reload: follow the model-updates topic, check and warm each new version in a thread
of its own, re-encode the catalog with it, and let the processor switch between micro-batches."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from app.core.catalog import Catalog
from app.core.codec import SHADOW, DecodeError, ModelUpdate, decode_model_update, model_update_key
from app.core.processor import Processor
from app.core.ranking import model_vectorizer
from app.core.records import DeadLetterError, Source
from app.core.scoring.gate import ModelSlot, check_candidate
from app.core.settings import Settings
from app.kafka.kafka_config import reader_config
from app.ops.metrics import Metrics

log = logging.getLogger(__name__)

DeadLetterFn = Callable[[DeadLetterError, str, Source, bytes], None]


class ModelFollower:
    """Reads the compacted model-updates topic from its start (every worker reads all of it, no
    consumer group) and offers each new version of the serving model's family to the slot.

    An accepted model is handed to the processor (ready, not yet used) and its item encoder to
    the catalog; the catalog follower re-encodes every item and publishes an index tagged with
    the new version, and the first micro-batch that sees that index ranks with the new model.
    So the switch is atomic between batches, and item vectors always come from the encoder of
    the model that ranks them. A rejected package leaves everything as it was.

    An update with role ``shadow`` (key ``<name>:shadow``) passes the same gate and becomes the
    processor's shadow: the catalog is encoded with its encoder too, and from the first batch
    whose index carries those vectors it ranks every batch beside the serving model, which
    serves (app.core.shadow). A tombstone on that key retires it; the same version announced
    as serving promotes it (and ends the shadow).
    """

    def __init__(
        self,
        settings: Settings,
        slot: ModelSlot,
        processor: Processor,
        catalog: Catalog,
        metrics: Metrics,
        dead_letter: DeadLetterFn,
    ) -> None:
        self.settings = settings
        self.slot = slot
        self.processor = processor
        self.catalog = catalog
        self.metrics = metrics
        self.dead_letter = dead_letter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._consumer = Consumer(reader_config(settings, "models"))

    def preload(self, timeout_s: float = 30.0) -> None:
        """Apply the newest announced version before the worker starts taking events (no-op
        when the topic does not exist yet or announces nothing newer)."""
        topic = self.settings.topic_model_updates
        meta = self._consumer.list_topics(topic, timeout=timeout_s)
        info = meta.topics.get(topic)
        if info is None or info.error is not None or not info.partitions:
            log.info("no model-updates topic %r yet; serving the packaged model", topic)
            self._consumer.subscribe([topic])
            return
        partitions = [TopicPartition(topic, p, OFFSET_BEGINNING) for p in info.partitions]
        ends = {
            tp.partition: self._consumer.get_watermark_offsets(tp, timeout=timeout_s)[1]
            for tp in partitions
        }
        self._consumer.assign(partitions)
        # Compacted and keyed by name (and name:shadow): the last record of a key is its newest.
        latest: dict[bytes, Message] = {}
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            positions = {
                tp.partition: tp.offset
                for tp in self._consumer.position([TopicPartition(topic, p) for p in ends])
            }
            if all(ends[p] == 0 or positions.get(p, -1) >= ends[p] for p in ends):
                break
            for msg in self._consumer.consume(100, timeout=0.5):
                if msg.error() is None:
                    latest[msg.key() or b""] = msg
        # The serving model first: a shadow is checked against the family that serves.
        shadows = [m for k, m in latest.items() if k.endswith(b":" + SHADOW.encode())]
        for msg in [m for m in latest.values() if m not in shadows] + shadows:
            self._apply(msg, wait_for_index=False)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="liverank-models", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        else:
            self._consumer.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for msg in self._consumer.consume(10, timeout=0.5):
                    error = msg.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("model-updates consumer error: %s", error)
                        continue
                    self._apply(msg, wait_for_index=True)
            except Exception:  # keep following: one bad update must not end reloads
                log.exception("model follower error")
                self._stop.wait(1.0)
        self._consumer.close()

    def _apply(self, msg: Message, *, wait_for_index: bool) -> None:
        source = Source(msg.topic() or "", msg.partition() or 0, msg.offset() or 0, msg.key())
        if msg.value() is None:
            # A tombstone: on a shadow key it retires that shadow; the serving model is only
            # ever replaced by another version, never removed.
            key = msg.key() or b""
            if key == model_update_key(self.slot.current.spec.name, SHADOW):
                self._retire_shadow("retired (tombstone on the model-updates topic)")
            return
        try:
            update = decode_model_update(msg.value())
        except DecodeError as exc:
            self.metrics.model_reloads.labels("invalid").inc()
            self.dead_letter(exc.error, f"model update: {exc.reason}", source, msg.value() or b"")
            return
        if update.role == SHADOW:
            self._apply_shadow(update, wait_for_index=wait_for_index)
            return
        serving = self.slot.current.spec
        if update.name != serving.name:
            log.info(
                "model update for %r ignored: this worker serves %r", update.name, serving.name
            )
            return
        if update.version == serving.version:
            return
        settings = self.settings
        result = self.slot.offer(
            Path(update.path),
            variant=settings.model_variant,
            threads=settings.onnx_threads,
            device=settings.model_device,
        )
        if not result.accepted:
            self.metrics.model_reloads.labels("rejected").inc()
            return
        model = self.slot.current
        shadow = self.processor.shadow
        if shadow is not None and shadow.version == model.spec.version:
            self._retire_shadow(f"promoted: {model.spec.version} now serves")
        self.processor.add_model(model.spec, model.ranker)
        self.catalog.set_vectorizer(model_vectorizer(model.encoder, model.spec), model.spec.version)
        self.metrics.model_reloads.labels("accepted").inc()
        if wait_for_index:
            self._wait_until_serving(model.spec.version, previous=serving.version)
        else:
            self.catalog.publish()  # at start-up: nothing serves yet, build it here
            self._serving(model.spec.version, serving.version)

    def _apply_shadow(self, update: ModelUpdate, *, wait_for_index: bool) -> None:
        """Check a shadow candidate with the serving model's gate, then score with it beside
        the serving model (its lists are attributed, never served)."""
        serving = self.slot.current.spec
        if update.name != serving.name:
            log.info("shadow %r ignored: this worker serves %r", update.name, serving.name)
            return
        current = self.processor.shadow
        if update.version == serving.version or (
            current is not None and current.version == update.version
        ):
            return  # serving already, or the shadow already
        settings = self.settings
        try:
            model = check_candidate(
                Path(update.path),
                variant=settings.model_variant,
                threads=settings.onnx_threads,
                device=settings.model_device,
                serving=serving,
            )
        except Exception as exc:  # anything a bad package raises, as for a serving candidate
            self.metrics.model_reloads.labels("rejected").inc()
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())
            log.warning(
                "shadow model %s rejected: %s",
                update.version,
                reason,
                extra={"model_version": update.version, "model_path": update.path},
            )
            return
        self.processor.set_shadow(model.spec, model.ranker)
        self.catalog.set_shadow(model_vectorizer(model.encoder, model.spec), model.spec.version)
        if not wait_for_index:
            self.catalog.publish()  # at start-up: nothing serves yet, build it here
        if current is not None:
            self.metrics.shadow_info.remove(current.version)
        self.metrics.shadow_info.labels(model.spec.version).set(1)
        log.info(
            "shadow model %s loaded from %s: scored beside %s, not served",
            model.spec.version,
            update.path,
            serving.version,
            extra={"model_version": model.spec.version, "serving_version": serving.version},
        )

    def _retire_shadow(self, why: str) -> None:
        shadow = self.processor.shadow
        if shadow is None:
            return
        self.processor.clear_shadow()
        self.catalog.set_shadow(None)
        self.metrics.shadow_info.remove(shadow.version)
        log.info("shadow model %s %s", shadow.version, why)

    def _wait_until_serving(self, version: str, previous: str) -> None:
        """The catalog follower re-encodes; the switch is done when its index carries the new
        encoder's vectors (the next batch ranks with the new model)."""
        while not self._stop.is_set():
            if self.catalog.index.encoder_tag == version:
                self._serving(version, previous)
                return
            self._stop.wait(0.1)

    def _serving(self, version: str, previous: str) -> None:
        self.metrics.model_info.labels(previous).set(0)
        self.metrics.model_info.labels(version).set(1)
        log.info("model %s is serving (was %s)", version, previous)
