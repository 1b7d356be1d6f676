"""Starts a worker: model and catalog first, then HTTP probes, then the Faust worker."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any

import faust

from app.core.catalog import Catalog, index_options
from app.core.codec import dead_letter_key, encode_dead_letter
from app.core.processor import (
    ATTRIBUTION,
    DEAD_LETTERS,
    FEEDBACK,
    RECOMMENDATIONS,
    Processor,
    wall_clock_ms,
)
from app.core.ranking import model_vectorizer
from app.core.records import DeadLetterError, Source
from app.core.scoring.gate import ModelSlot, check_candidate
from app.core.settings import LOG_LEVELS, Settings
from app.kafka.kafka_config import KafkaUnavailable, check_connection
from app.kafka.topics import PartitionMismatch, TopicTooSmall, check_message_sizes, check_partitions
from app.ops import logs
from app.ops.health import Health, pending, serve
from app.ops.metrics import Metrics, PartitionOffsets, consumer_lag
from app.streams.agents import events as events_agent
from app.streams.agents import sweeper
from app.streams.catalog_follower import CatalogFollower
from app.streams.main import build_faust_app, loop_name, use_event_loop
from app.streams.model_follower import ModelFollower
from app.streams.offsets import partition_offsets
from app.streams.outputs import FlushBeforeCommit, OutputProducer, ProducerFailed
from app.streams.runtime import Runtime
from app.streams.shutdown import Shutdown, WorkerFailed, bounded_worker
from app.streams.tables import user_state_table
from app.streams.watermarks import Watermarks

log = logging.getLogger(__name__)

# A partition without events for this long lets the wall clock close its attribution windows.
WATERMARK_IDLE_MS = 5_000


def build_worker(settings: Settings, runtime: Runtime) -> faust.App:
    """The Faust app with its topics, table, agent and probes wired to ``runtime``."""
    app = build_faust_app(settings)
    shutdown = runtime.shutdown
    health = runtime.health

    def update_recovered() -> None:
        health.set("recovered", not (app.rebalancing or app.in_recovery))

    async def on_ready() -> None:
        update_recovered()
        log.info(
            "worker ready: recovery done, catalog and model loaded (event loop: %s)",
            loop_name(asyncio.get_running_loop()),
        )

    # SIGTERM (and a fatal error, which sends it) ends the process within the grace period,
    # whatever the agent is doing (app.streams.shutdown).
    # faust's settings declare Worker by its output type only (a symbol or a class is set).
    app.conf.Worker = bounded_worker(shutdown, on_ready)  # type: ignore[assignment]

    def stop_without_waiting() -> None:
        # faust's clean stop waits for every record handed to the agent to be acked: a dead
        # agent never acks them. After a fatal error stop at once; the unacked records are
        # not committed, so the restarted worker processes them (at-least-once).
        app.conf.stream_wait_empty = False

    shutdown.on_fail.append(stop_without_waiting)

    def raw_topic(name: str, partitions: int) -> faust.TopicT:
        return app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=partitions,
        )

    events = raw_topic(settings.topic_events, settings.partitions)
    outputs = runtime.outputs
    # The table's changelog records go through the outputs' librdkafka producer, so each
    # commit's flush covers them with the outputs, and their offsets are recorded after it.
    table = user_state_table(app, settings, sink=outputs)

    def changelog_flushed() -> None:
        table.persist_changelog_offsets(outputs.take_changelog_offsets())

    app.sensors.add(FlushBeforeCommit(outputs, lambda: shutdown.failed, changelog_flushed))
    events_agent.register(app, runtime, table, events)
    sweeper.register(app, runtime, table)

    async def on_revoked(sender: Any, *args: Any, signal: Any, **kwargs: Any) -> None:
        health.set("recovered", False)

    async def on_assigned(sender: Any, assigned: Any, *args: Any, **kwargs: Any) -> None:
        health.assigned(tp.partition for tp in assigned if tp.topic == settings.topic_events)

    # mode's signal stubs want a positional-only sender; the calls are as documented.
    app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
    app.on_partitions_assigned.connect(on_assigned)  # type: ignore[arg-type]

    lag_failed = False

    def update_consumer_lag() -> dict[tuple[str, int], PartitionOffsets]:
        nonlocal lag_failed
        try:
            offsets = partition_offsets(app.consumer, settings.topic_events)
        except Exception:
            # A metric must never stop the heartbeat (liveness). A partition revoked between
            # assignment() and highwater() fails aiokafka's assertion; that heals on the next
            # beat, so the gauge just drops its samples; a lasting failure is logged once.
            if not lag_failed:
                log.warning("consumer lag not available", exc_info=True)
            lag_failed = True
            offsets = {}
        runtime.metrics.set_consumer_lag(consumer_lag(offsets))
        return offsets

    def update_progress(offsets: dict[tuple[str, int], PartitionOffsets]) -> None:
        if app.rebalancing or app.in_recovery:
            health.pause_stall_clock()  # the agent is not expected to take records now
        else:
            processed = health.processed_offsets()
            health.waiting(
                any(
                    pending(o.highwater, o.committed, processed.get(partition))
                    for (_, partition), o in offsets.items()
                )
            )
        runtime.metrics.last_progress.set(health.last_progress)

    async def heartbeat() -> None:
        # Proves the event loop turns (liveness), tracks rebalances (readiness) and whether
        # the agent keeps up with what waits on its partitions (liveness from progress).
        health.beat()
        update_recovered()
        update_progress(update_consumer_lag())

    app.timer(interval=1.0)(heartbeat)
    return app


def run_worker(settings: Settings, loglevel: str | None = None) -> None:
    """Load and check the model, preload the catalog, then run Faust until stopped.

    Raises :class:`WorkerFailed` when a fatal error (an agent crash, records the producer lost)
    stopped it."""
    logs.configure(settings, loglevel)
    # Before anything makes an event loop: faust's, and its consumer thread's, are this one.
    use_event_loop(settings.event_loop)
    metrics = Metrics(quality_k=settings.quality_k)
    health = Health(stall_after_s=settings.liveness_stall_s)
    shutdown = Shutdown(settings.shutdown_grace_s)
    server = serve(health, metrics, settings.http_host, settings.http_port, settings.http_timeout_s)
    try:
        brokers = check_connection(settings)
        check_partitions(settings)
        check_message_sizes(settings)
    except (KafkaUnavailable, PartitionMismatch, TopicTooSmall):
        server.shutdown()
        raise
    log.info("connected to %d Kafka broker(s) over %s", brokers, settings.security_protocol)

    # The same gate a reloaded model must pass: a package that loads but scores NaN, constants
    # or mixes batch rows stops the start-up with the reason, before any event is taken.
    model = check_candidate(
        settings.model_path,
        variant=settings.model_variant,
        threads=settings.onnx_threads,
        device=settings.model_device,
    )
    if settings.history_size < model.spec.max_len:
        log.warning(
            "history_size %d is shorter than the model's window of %d interactions",
            settings.history_size,
            model.spec.max_len,
        )
    metrics.model_info.labels(model.spec.version).set(1)
    health.set("model", True)
    log.info(
        "model %s %s (%s) loaded from %s on %s",
        model.spec.name,
        model.spec.version,
        model.ranker.variant,
        settings.model_path,
        model.ranker.providers,
    )

    # One producer for every record the worker writes: each produce error is handled there
    # (a record refused for its size becomes a dead letter that fits; anything else stops the
    # worker through ``shutdown``).
    outputs = OutputProducer(
        settings,
        {
            RECOMMENDATIONS: settings.topic_recommendations,
            FEEDBACK: settings.topic_feedback,
            DEAD_LETTERS: settings.topic_dead_letters,
            ATTRIBUTION: settings.topic_attribution,
        },
        on_fatal=shutdown.fail,
        metrics=metrics,
    )

    def dead_letter(error: DeadLetterError, reason: str, source: Source, raw: bytes) -> None:
        metrics.dead_letters.labels(error.value).inc()
        value = encode_dead_letter(
            error,
            reason,
            source,
            raw,
            received_time_ms=wall_clock_ms(),
            max_bytes=settings.dead_letter_max_bytes,
        )
        try:
            outputs.dead_letter(dead_letter_key(source.key), value)
        except ProducerFailed:
            pass  # the worker is stopping (shutdown.fail has logged why)

    catalog = Catalog(
        model_vectorizer(model.encoder, model.spec),
        index_options(settings),
        encoder_tag=model.spec.version,
    )
    processor = Processor(catalog, model.ranker, model.spec, settings)
    # A newer version announced on the model-updates topic replaces the packaged one before
    # the catalog is encoded; later announcements are applied live (hot reload).
    models = ModelFollower(settings, ModelSlot(model), processor, catalog, metrics, dead_letter)
    models.preload()
    follower = CatalogFollower(settings, catalog, metrics, dead_letter)
    follower.preload()
    follower.start()
    models.start()
    health.set("catalog", True)

    runtime = Runtime(
        settings=settings,
        catalog=catalog,
        processor=processor,
        metrics=metrics,
        health=health,
        outputs=outputs,
        watermarks=Watermarks(idle_ms=WATERMARK_IDLE_MS),
        shutdown=shutdown,
    )
    app = build_worker(settings, runtime)
    # Faust's worker replaces the root logger's handlers when it starts: hand it ours.
    app.conf.logging_config = logs.logging_config(settings, loglevel)
    # Faust's CLI parses argv; run its `worker` command. Its --with-web default would override
    # web_enabled=False and serve /table on port 6066. With JSON logs, --quiet: its banner and
    # "OK" are printed as text, not logged. Its --loglevel now only picks its terminal spinner
    # (the levels are in logging_config), which from warn up sets the root logger to DEBUG and
    # writes escape codes to stdout even when that is no terminal: keep it below warn.
    debug = (loglevel or settings.log_level).lower() == "debug"
    spinner_off = LOG_LEVELS["debug" if debug else "info"]
    quiet = ["--quiet"] if settings.log_format.lower() == "json" else []
    sys.argv = [sys.argv[0], *quiet, "worker", "--without-web", "--loglevel", spinner_off]
    try:
        try:
            app.main()
        except SystemExit:
            if not shutdown.failed:
                raise
        except Exception:
            if not shutdown.failed:
                raise
    finally:
        # Bounded too: the watchdog armed by SIGTERM or the failure still runs.
        models.stop()
        follower.stop()
        outputs.close()
        server.shutdown()
    if shutdown.failed:
        raise WorkerFailed(shutdown.reason or "fatal error")
