"""The events agent: take a micro-batch, call the processor, write the table, emit outputs."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import cast

import faust
from faust.types import EventT, TableT

from app.core.partitioning import Partitioner, misplaced
from app.core.processor import BatchResult, Processor, ShadowResult
from app.core.records import Source
from app.streams.agents import batching
from app.streams.offsets import unread
from app.streams.outputs import Forward, Origin
from app.streams.runtime import Runtime

log = logging.getLogger(__name__)

# Degradation is logged at most this often; the metrics count every event.
_WARN_EVERY_S = 10.0


def forward_of(event: EventT[bytes], partition: int) -> Forward:
    msg = event.message
    headers = msg.headers or ()
    items = headers.items() if isinstance(headers, Mapping) else headers
    return Forward(
        partition,
        msg.key or b"",
        msg.value,
        int(msg.timestamp * 1000) if msg.timestamp else None,
        tuple((str(k), bytes(v)) for k, v in items),
        Source(msg.topic, msg.partition, msg.offset, msg.key),
    )


def plausible_timestamp(
    timestamp_ms: int | None, now_ms: int, max_age_s: float, max_future_s: float
) -> int:
    """The record's Kafka timestamp if it is within the event-time limits of ``now_ms`` (the
    worker's clock), else ``now_ms``.

    The processor judges an event's ``event_time`` against its record's timestamp, so that a
    replay decides as the first run did. With ``CreateTime`` that timestamp is the producer's
    own clock, which can claim 1970 or 2100 as readily as the event: such a timestamp is not
    believed, and the worker's clock judges the event instead.

    >>> plausible_timestamp(1_000_000, 1_000_500, max_age_s=60, max_future_s=60)
    1000000
    >>> plausible_timestamp(0, 1_000_000_000, max_age_s=60, max_future_s=60)
    1000000000
    >>> plausible_timestamp(None, 5, max_age_s=0, max_future_s=0)
    5
    """
    if not timestamp_ms or timestamp_ms < 0:
        return now_ms
    if max_future_s and timestamp_ms - now_ms > max_future_s * 1000:
        return now_ms
    if max_age_s and now_ms - timestamp_ms > max_age_s * 1000:
        return now_ms
    return timestamp_ms


def source_of(event: EventT[bytes], timestamp_ms: int) -> Source:
    msg = event.message
    return Source(msg.topic, msg.partition, msg.offset, msg.key, timestamp_ms)


def table_reader(
    stream: faust.Stream[bytes], table: TableT[bytes, bytes], batch: Sequence[EventT[bytes]]
) -> Callable[[bytes], bytes | None]:
    """``table.get`` for a batch's users.

    Table reads and writes pick the RocksDB partition (and the changelog partition) from "the
    current event", which take_events() does not set in the agent's task (faust issue 497);
    a stale one would read another partition's database and find nothing. So each read first
    names a record of that user: all of a user's records are on one partition.
    """
    record_of = {e.message.key: e for e in batch}

    def lookup(key: bytes) -> bytes | None:
        stream._set_current_event(record_of.get(key))
        value: bytes | None = table.get(key)
        return value

    return lookup


def register(
    app: faust.App, runtime: Runtime, table: TableT[bytes, bytes], events: faust.TopicT
) -> None:
    """Attach the events agent, reading ``events``, to ``app``."""
    processor: Processor = runtime.processor
    settings = runtime.settings
    metrics = runtime.metrics
    outputs = runtime.outputs
    watermarks = runtime.watermarks
    due = runtime.due
    warned = {"at": 0.0, "degraded": 0, "rerouted_at": 0.0, "rerouted": 0}
    partitioner = Partitioner(settings.partitioner)

    def reroute(batch: Sequence[EventT[bytes]]) -> list[EventT[bytes]]:
        """Forward records that are not on their key's partition; returns the others.

        A user's state lives on the partition their events belong on; a record elsewhere would
        be applied to an empty state on the wrong worker. They come from producers with another
        partitioner, or, after a partition increase, from ones that have not refreshed their
        metadata yet and from the backlog written before it (docs/operating.md)."""
        keep, forwards = [], []
        for event in batch:
            msg = event.message
            home = misplaced(msg.key, msg.partition, settings.partitions, partitioner)
            # A record over MAX_EVENT_BYTES is dead-lettered (oversize) wherever it is:
            # forwarding it would only move the dead letter, at the cost of a copy that may
            # not even fit the topic.
            if home is None or len(msg.value or b"") > settings.max_event_bytes:
                keep.append(event)
            else:
                forwards.append(forward_of(event, home))
        if forwards:
            outputs.forward(settings.topic_events, forwards)
            metrics.rerouted.inc(len(forwards))
            warned["rerouted"] += len(forwards)
            if time.monotonic() - warned["rerouted_at"] >= _WARN_EVERY_S:
                log.warning(
                    "forwarded %d events that were not on their user's partition (PARTITIONER=%s,"
                    " %d partitions) since the last warning",
                    warned["rerouted"],
                    partitioner.value,
                    settings.partitions,
                )
                warned["rerouted_at"], warned["rerouted"] = time.monotonic(), 0
        return keep

    def record(result: BatchResult, started: float) -> None:
        now_ms = time.time_ns() // 1_000_000
        for outcome in result.outcomes:
            event = outcome.event
            kind = event.type.value if event is not None else "invalid"
            metrics.events.labels(kind, outcome.status).inc()
            if outcome.error is not None:
                metrics.dead_letters.labels(outcome.error.value).inc()
            if outcome.state_reset:
                metrics.state_resets.inc()
            for rule in outcome.rules:
                metrics.rules.labels(rule).inc()
            if outcome.status == "forgotten":
                metrics.forgotten.inc()
            if outcome.positives or outcome.closed:
                metrics.attributed(outcome.positives, outcome.closed)
            rec = outcome.recommendation
            if rec is not None:
                metrics.recommendations.labels(rec.kind).inc()
                metrics.end_to_end.labels(rec.kind).observe(
                    max(0.0, (now_ms - rec.event_time_ms) / 1000.0)
                )
        metrics.batch_size.observe(len(result.outcomes))
        if result.ranked:
            metrics.model_batch_size.observe(result.ranked)
            metrics.scoring.observe(result.ranking_s)
        metrics.degraded.inc(result.degraded)
        metrics.coalesced.inc(result.coalesced)
        metrics.behind.set(result.oldest_age_ms / 1000.0)
        metrics.processing.observe(time.perf_counter() - started)
        if result.degraded:
            warned["degraded"] += result.degraded
            if time.monotonic() - warned["at"] >= _WARN_EVERY_S:
                log.warning(
                    "behind by %.1f s: %d events answered by the cheap path since the last "
                    "warning (deadline %.0f ms)",
                    result.oldest_age_ms / 1000.0,
                    warned["degraded"],
                    settings.deadline_ms,
                )
                warned["at"], warned["degraded"] = time.monotonic(), 0

    def shadow(result: BatchResult) -> None:
        """The shadow model's part of the batch, after the serving outputs are handed over:
        it never delays what users receive. Its records only measure it; nothing is stored."""
        if result.shadow is None:
            return
        done: ShadowResult = processor.shadow_batch(result.shadow)
        if done.outputs:
            outputs.produce(done.outputs)
        if done.closed:
            metrics.shadow_closed(done.closed)
        if done.ranked:
            metrics.shadow_events.labels("ranked").inc(done.ranked)
            metrics.shadow_scoring.observe(done.seconds)
        if done.skipped:
            metrics.shadow_events.labels("skipped").inc(done.skipped)

    def sources_of(batch: Sequence[EventT[bytes]]) -> list[Source]:
        now_ms = time.time_ns() // 1_000_000
        sources = []
        for event in batch:
            stamped = int(event.message.timestamp * 1000) if event.message.timestamp else None
            timestamp_ms = plausible_timestamp(
                stamped, now_ms, settings.max_event_age_s, settings.max_event_future_s
            )
            if timestamp_ms != stamped:
                metrics.timestamps_replaced.inc()
            metrics.queue_age.observe(max(0, now_ms - timestamp_ms) / 1000.0)
            sources.append(source_of(event, timestamp_ms))
        return sources

    def progressed(taken: Sequence[EventT[bytes]]) -> None:
        newest: dict[int, int] = {}
        for event in taken:
            msg = event.message
            if msg.offset > newest.get(msg.partition, -1):
                newest[msg.partition] = msg.offset
        health.processed(newest)

    health = runtime.health

    @app.agent(events, name="liverank.events")
    async def process_events(stream: faust.StreamT[bytes]) -> None:
        # faust would restart a crashed agent, but the new one takes no records from the
        # partitions the old one held (issue 14): a crash ends the process instead, loudly,
        # and the restarted worker processes those records again (at-least-once).
        try:
            await process(stream)
        except Exception as exc:
            runtime.shutdown.fail(f"the events agent crashed: {type(exc).__name__}: {exc}", exc)
            raise

    async def process(stream: faust.StreamT[bytes]) -> None:
        # take_batches() acks a batch's events only after this body has handed the batch's
        # outputs to the producer; every commit first flushes it (FlushBeforeCommit) and
        # faust's own producer (state changelog): at-least-once.
        # StreamT does not declare take_events(); faust's Stream, which agents get, has it.
        concrete = cast(faust.Stream[bytes], stream)
        topic = settings.topic_events
        batches = batching.take_batches(
            concrete,
            settings.batch_max_events,
            settings.batch_wait_ms / 1000.0,
            eager=settings.batch_eager,
            backlog=lambda: unread(app.consumer, topic) >= settings.batch_backlog_records,
            backlog_within_s=settings.batch_backlog_wait_ms / 1000.0,
            caught_up=lambda: unread(app.consumer, topic) == 0,
        )
        async for taken in batches:
            started = time.perf_counter()
            batch = reroute(taken)
            if not batch:
                progressed(taken)
                continue
            sources = sources_of(batch)
            result = processor.handle_batch(
                [(e.message.value, s) for e, s in zip(batch, sources, strict=True)],
                table_reader(concrete, table, batch),
            )
            for event, outcome in zip(batch, result.outcomes, strict=True):
                if outcome.user_id is None:
                    continue
                if outcome.state is not None:
                    concrete._set_current_event(event)  # the record this state came from
                    table[outcome.user_id.encode("utf-8")] = outcome.state
                    due.set(event.message.partition, outcome.user_id, outcome.next_due)
                elif outcome.delete:
                    due.set(event.message.partition, outcome.user_id, None)
                    # forget_user: removed from RocksDB, and a tombstone in the changelog so
                    # that no restore or standby brings the state back.
                    concrete._set_current_event(event)
                    table.pop(outcome.user_id.encode("utf-8"), None)
            outputs.produce_answers(
                (outcome.outputs, Origin(source, event.message.value or b""))
                for outcome, source, event in zip(result.outcomes, sources, batch, strict=True)
                if outcome.outputs
            )
            # Only now are these records' events applied: attribution windows up to here close.
            newest: dict[int, int] = {}
            for source in sources:
                if source.timestamp_ms is not None:
                    newest[source.partition] = max(
                        newest.get(source.partition, 0), source.timestamp_ms
                    )
            for partition, record_ms in newest.items():
                watermarks.advance(partition, record_ms)
            record(result, started)
            shadow(result)
            progressed(taken)

    _ = process_events
