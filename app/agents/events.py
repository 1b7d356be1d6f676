"""The events agent: read a record, call the processor, write the table, emit outputs."""

from __future__ import annotations

import logging
import time
from typing import Any

import faust
from faust.types import TableT

from app.processor import DEAD_LETTERS, FEEDBACK, RECOMMENDATIONS, Outcome, Processor
from app.records import Source
from app.runtime import Runtime

log = logging.getLogger(__name__)


def register(
    app: faust.App, runtime: Runtime, table: TableT[bytes, bytes], topics: dict[str, Any]
) -> None:
    """Attach the events agent to ``app``; ``topics`` maps roles to faust topics."""
    processor: Processor = runtime.processor
    metrics = runtime.metrics
    outputs = {
        RECOMMENDATIONS: topics[RECOMMENDATIONS],
        FEEDBACK: topics[FEEDBACK],
        DEAD_LETTERS: topics[DEAD_LETTERS],
    }

    async def emit(outcome: Outcome) -> None:
        for out in outcome.outputs:
            await outputs[out.role].send(key=out.key, value=out.value)

    def record(outcome: Outcome, started: float) -> None:
        event = outcome.event
        kind = event.type.value if event is not None else "invalid"
        metrics.events.labels(kind, outcome.status).inc()
        if outcome.error is not None:
            metrics.dead_letters.labels(outcome.error.value).inc()
        if outcome.state_reset:
            metrics.state_resets.inc()
        rec = outcome.recommendation
        if rec is not None:
            metrics.recommendations.labels(rec.kind).inc()
            metrics.end_to_end.labels(rec.kind).observe(
                max(0.0, (time.time_ns() // 1_000_000 - rec.event_time_ms) / 1000.0)
            )
            metrics.batch_size.observe(1)
            metrics.scoring.observe(outcome.ranking_s)
        metrics.processing.observe(time.perf_counter() - started)

    @app.agent(topics["events"], name="liverank.events")
    async def process_events(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            started = time.perf_counter()
            msg = event.message
            source = Source(msg.topic, msg.partition, msg.offset, msg.key)
            outcome = processor.handle(msg.value, source, table.get)
            if outcome.state is not None and outcome.user_id is not None:
                table[outcome.user_id.encode("utf-8")] = outcome.state
            await emit(outcome)
            record(outcome, started)

    _ = process_events
