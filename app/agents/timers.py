"""The timers agent: when an impression's attribution window has passed, close it (negatives)."""

from __future__ import annotations

import asyncio
import logging

import faust
import orjson
from faust.types import TableT

from app.agents.events import source_of
from app.processor import TIMERS, Output
from app.runtime import Runtime

log = logging.getLogger(__name__)

# How often a waiting timer looks at the watermark again.
_POLL_S = 0.2


def due_of(value: bytes | None) -> int | None:
    """The timer's due time, or None when it cannot be read (handled, dead-lettered, at once).

    >>> due_of(b'{"request_id": "e1", "due_ms": 5}'), due_of(b"junk")
    (5, None)
    """
    try:
        due = orjson.loads(value or b"")["due_ms"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return due if isinstance(due, int) else None


def must_let_go(app: faust.App) -> bool:
    """The worker is rebalancing or stopping: an agent must not hold a record."""
    return bool(app.rebalancing or app.should_stop or not app.flow_control.is_active())


def register(
    app: faust.App, runtime: Runtime, table: TableT[bytes, bytes], timers: faust.TopicT
) -> None:
    """Attach the timers agent, reading ``timers`` (co-partitioned with the events topic)."""
    processor = runtime.processor
    metrics = runtime.metrics
    outputs = runtime.outputs
    watermarks = runtime.watermarks

    @app.agent(timers, name="liverank.timers")
    async def process_timers(stream: faust.StreamT[bytes]) -> None:
        # Timers come in due order per partition (each is the trigger's record time plus the
        # same window), so waiting for the head of the stream holds back nothing that is due.
        async for event in stream.events():
            msg = event.message
            due = due_of(msg.value)
            handed_back = False
            while due is not None and not watermarks.passed(msg.partition, due):
                if must_let_go(app):
                    # Faust waits for every record in hand before it rebalances or stops: hand
                    # the timer back to its topic (flushed before the commit that acks it) and
                    # let go. Its new owner, or this worker after a restart, reads it again.
                    outputs.produce([Output(TIMERS, msg.key, msg.value, partition=msg.partition)])
                    handed_back = True
                    break
                await asyncio.sleep(_POLL_S)
            if handed_back or msg.tp not in app.consumer.assignment():
                continue  # the partition moved while we waited: its new owner closes it
            outcome = processor.handle_timer(msg.value, source_of(event), table.get)
            if outcome.state is not None and outcome.user_id is not None:
                table[outcome.user_id.encode("utf-8")] = outcome.state
            outputs.produce(outcome.outputs)
            if outcome.error is not None:
                metrics.dead_letters.labels(outcome.error.value).inc()
            metrics.attributed(outcome.positives, outcome.closed)

    _ = process_timers
