"""The sweeper: closes the attribution windows that are due (negatives), for every events
partition this worker owns, including partitions that see no events and impressions opened
before a restart or on another worker."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import faust
from faust.streams import _current_event
from faust.types import TableT

from app.core.attribution import next_due
from app.core.processor import Outcome
from app.core.state import decode_state
from app.streams.outputs import DeliveryError, ProducerFailed
from app.streams.runtime import Runtime

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 0.5
# Users swept per partition per round, and stored states indexed per partition per round: both
# bound the event loop's time in one round.
SWEEP_LIMIT = 2_000
SCAN_STEP = 5_000


@dataclass(frozen=True)
class _Message:
    topic: str
    partition: int


class PartitionMarker:
    """Stands in for a record of ``partition``: all faust reads of the current event when it
    writes a table are ``message.topic`` and ``message.partition``."""

    def __init__(self, topic: str, partition: int) -> None:
        self.message = _Message(topic, partition)


@contextmanager
def writing_for(marker: PartitionMarker) -> Iterator[None]:
    """Table reads and writes outside stream iteration, on ``marker``'s partition.

    Faust picks a table key's RocksDB and changelog partition from the current event, a
    context variable only stream iteration sets (faust issue 497). The sweeper runs on a timer,
    so it names the partition it sweeps: a user's records, state and changelog all share that
    partition number.
    """
    token = _current_event.set(weakref.ref(marker))  # type: ignore[arg-type]  # duck-typed
    try:
        yield
    finally:
        _current_event.reset(token)


def register(app: faust.App, runtime: Runtime, table: TableT[bytes, bytes]) -> None:
    processor = runtime.processor
    outputs = runtime.outputs
    metrics = runtime.metrics
    due = runtime.due
    watermarks = runtime.watermarks
    topic = runtime.settings.topic_events
    markers: dict[int, PartitionMarker] = {}
    # Partitions whose stored states are (being) indexed: impressions opened before a restart,
    # or by the worker that owned the partition before, are found this way.
    scans: dict[int, Iterator[tuple[bytes, bytes]]] = {}
    indexed: set[int] = set()

    def scan_step(partition: int) -> None:
        scan = scans.get(partition)
        if scan is None:
            store: Any = table.data  # faust's RocksDB store: one database per partition
            scan = scans[partition] = iter(store._db_for_partition(partition).items())
        for _ in range(SCAN_STEP):
            try:
                key, raw = next(scan)
            except StopIteration:
                del scans[partition]
                indexed.add(partition)
                return
            if key.startswith(b"__faust") or b'"im":[]' in raw:
                continue
            try:
                state = decode_state(raw)
            except (ValueError, KeyError, TypeError):
                continue  # the events path resets unreadable states
            due.set(partition, state.user_id, next_due(state.impressions))

    def sweep_shadow(partition: int, up_to: int) -> None:
        # The shadow's impressions live in memory, not in the table: nothing to store, and a
        # record lost here only loses a would-be measurement (it is counted in the metrics).
        swept = processor.sweep_shadow(partition, up_to)
        if not swept.closed:
            return
        try:
            outputs.produce(swept.outputs)
        except ProducerFailed:
            return
        metrics.shadow_closed(swept.closed)

    def sweep_partition(partition: int, marker: PartitionMarker) -> None:
        up_to = watermarks.limit(partition)
        sweep_shadow(partition, up_to)
        users = due.pop_due(partition, up_to, SWEEP_LIMIT)
        if not users:
            return
        results: list[Outcome] = [
            processor.close_due(u, table.get(u.encode("utf-8")), up_to) for u in users
        ]
        try:
            # Negatives on the broker before the state says they are out: a crash in between
            # sweeps them again (at-least-once) instead of losing them.
            outputs.produce(out for r in results for out in r.outputs)
            outputs.flush()
        except DeliveryError:
            log.exception("sweep of partition %d not delivered; will retry", partition)
            for u in users:
                due.set(partition, u, up_to)
            return
        except ProducerFailed:
            # Records were lost and the worker is stopping (the producer told it why); the
            # states keep these impressions open, so the next run sweeps them again.
            return
        for r in results:
            if r.user_id is None:
                continue
            if r.state is not None:
                table[r.user_id.encode("utf-8")] = r.state
            due.set(partition, r.user_id, r.next_due)
            metrics.attributed(r.positives, r.closed)

    async def sweep() -> None:
        # No table access while partitions move or recover; the next round catches up.
        if app.rebalancing or app.in_recovery or app.should_stop or runtime.shutdown.failed:
            return
        if not app.flow_control.is_active():
            return
        owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == topic}
        for partition in set(markers) - owned:
            markers.pop(partition, None)
            scans.pop(partition, None)
            indexed.discard(partition)
            due.drop(partition)
            processor.drop_shadow_partition(partition)
        for partition in sorted(owned):
            marker = markers.setdefault(partition, PartitionMarker(topic, partition))
            with writing_for(marker):
                if partition not in indexed:
                    scan_step(partition)
                sweep_partition(partition, marker)

    app.timer(interval=SWEEP_EVERY_S)(sweep)
