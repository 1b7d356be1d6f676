"""The sweeper: closes the attribution windows that are due (negatives), for every partition this
worker owns, including partitions that see no events."""

from __future__ import annotations

import logging
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import faust
from faust.streams import _current_event
from faust.types import TP, EventT, TableT

from app.outputs import DeliveryError
from app.processor import Outcome
from app.runtime import Runtime

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 0.5
# Users swept per partition per round: bounds the event loop's time in one round.
SWEEP_LIMIT = 2_000


@contextmanager
def writing_for(event: EventT[bytes]) -> Iterator[None]:
    """Table reads and writes outside stream iteration, on ``event``'s partition.

    Faust picks a table key's RocksDB and changelog partition from the current event (a
    context variable that only stream iteration sets; faust issue 497). The sweeper runs on a
    timer, so it names a record of the partition it sweeps: a user's records, state and
    changelog all share that partition number.
    """
    token = _current_event.set(weakref.ref(event))
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

    def sweep_partition(partition: int, event: EventT[bytes]) -> None:
        up_to = watermarks.limit(partition)
        users = due.pop_due(partition, up_to, SWEEP_LIMIT)
        if not users:
            return
        with writing_for(event):
            results: list[Outcome] = [
                processor.close_due(u, table.get(u.encode("utf-8")), up_to) for u in users
            ]
            try:
                # Negatives on the broker before the state says they are out: a crash in
                # between sweeps them again (at-least-once) instead of losing them.
                outputs.produce(out for r in results for out in r.outputs)
                outputs.flush()
            except DeliveryError:
                log.exception("sweep of partition %d not delivered; retrying", partition)
                for u in users:
                    due.set(partition, u, up_to)
                return
            for r in results:
                if r.user_id is None:
                    continue
                if r.state is not None:
                    table[r.user_id.encode("utf-8")] = r.state
                due.set(partition, r.user_id, r.next_due)
                metrics.attributed(r.positives, r.closed)

    async def sweep() -> None:
        # No table writes while partitions move; the next round catches up.
        if app.rebalancing or app.should_stop or not app.flow_control.is_active():
            return
        assignment = app.consumer.assignment()
        for partition, event in list(runtime.partition_events.items()):
            if TP(topic, partition) not in assignment:
                due.drop(partition)
                runtime.partition_events.pop(partition, None)
                continue
            sweep_partition(partition, event)

    app.timer(interval=SWEEP_EVERY_S)(sweep)
