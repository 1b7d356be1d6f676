"""Micro-batches from a faust stream that close as soon as nothing more is waiting.

faust's ``Stream.take_events(max_, within)`` hands a batch over when it holds ``max_`` events
or when ``within`` has passed since it started waiting. Under a backlog that is right: batches
fill at once. At low load every record waits out the timer (half of ``within`` on average)
although no other record is coming. :func:`take_batches` closes a batch early when the
stream's queue is empty after a record was added: everything fetched so far is in the batch.
Under load, records pile up in the queue while a batch is processed, so batches still grow
with the load (and stop at ``max_``); ``within`` stays the longest a record waits.

The acknowledgement contract is faust's: a batch's events are acked only after the consumer
of the generator resumes it (the body that produced the batch's outputs has run), so offsets
are committed for processed records only (at-least-once).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import faust
from faust.types import EventT

# How long the stream must stay empty before an eager batch closes while the consumer holds
# fetched records it has not handed to the stream yet: those reach the stream within it, a
# record not yet fetched does not. Once the consumer has handed over everything the latest
# fetches returned (``caught_up``), the batch closes without this wait. 0 (one yield) took p50
# at 300 events/s from 13-15 to 11-13 ms on the 2-core VM, with the backlog rule on; both are
# off by default until the rebalance tests' failures seen with them are understood
# (docs/benchmarks.md).
QUIET_S = 0.001
# While a backlogged batch waits to fill, how often it looks: a sleep(0) loop would spin.
BACKLOG_POLL_S = 0.001


async def _settle(
    stream: faust.Stream[Any],
    channel: Any,
    events: list[EventT[Any]],
    max_: int,
    *,
    started_at: float,
    within_s: float,
    backlogged: bool = False,
    caught_up: Callable[[], bool] | None = None,
) -> None:
    """Wait while records keep arriving: until the batch is full, the stream stayed empty for
    :data:`QUIET_S` (not while ``backlogged``: more records are on their way), or the batch's
    first record has waited ``within_s``. Not at all when the stream is empty and the consumer
    is ``caught_up`` (it has handed over every record it fetched): nothing is on its way."""
    loop = asyncio.get_running_loop()
    if not backlogged and caught_up is not None and channel.empty() and caught_up():
        return
    while len(events) < max_ and not stream.should_stop:
        if within_s > 0 and loop.time() - started_at >= within_s:
            return
        seen = len(events)
        await asyncio.sleep(BACKLOG_POLL_S if backlogged else QUIET_S)
        if not backlogged and len(events) == seen and channel.empty():
            return


async def take_batches(
    stream: faust.Stream[Any],
    max_: int,
    within_s: float,
    *,
    eager: bool = True,
    backlog: Callable[[], bool] | None = None,
    backlog_within_s: float = 0.0,
    caught_up: Callable[[], bool] | None = None,
) -> AsyncIterator[Sequence[EventT[Any]]]:
    """Batches of up to ``max_`` events; each is yielded when full, when ``within_s`` has
    passed, or (``eager``) as soon as the stream's queue is empty after an event was added.

    ``backlog``: whether the consumer is behind (records on the broker not yet fetched). Then
    an eager batch does not close on an empty queue but waits up to ``backlog_within_s`` to
    fill: faust hands records over a fetch at a time, so under a backlog the queue empties
    between fetches while more are coming, and fuller batches cost less per event.

    ``caught_up``: whether the consumer has handed the stream every record of its latest
    fetches. Then an eager batch whose stream is empty closes at once, without the
    :data:`QUIET_S` wait for records already fetched: at low load that wait was most of a
    record's time before its batch started."""
    if not eager:
        async for batch in stream.take_events(max_, within_s):
            yield batch
        return
    events: list[EventT[Any]] = []
    ready = asyncio.Event()  # the batch should be handed over now
    arrived = asyncio.Event()  # the batch got its first event
    consumed = asyncio.Event()  # a full batch was handed over; more may be added
    consuming: asyncio.Future[None] | None = None
    channel: Any = stream.channel
    enable_acks = stream.enable_acks
    loop = asyncio.get_running_loop()

    first_at = 0.0  # when the batch's first event was added (loop time)

    async def add(value: Any) -> Any:
        nonlocal consuming, first_at
        if consuming is not None:
            try:
                await consuming  # the batch is being processed: wait for it
            finally:
                consuming = None
        event = stream.current_event
        if event is None:
            raise RuntimeError("a record reached the batch without its event")
        events.append(event)
        if len(events) == 1:
            first_at = loop.time()
            arrived.set()
        if len(events) >= max_:
            ready.set()
            consumed.clear()
            # Never more than max_ events in a batch: wait until this one is taken.
            await stream.wait(consumed)  # type: ignore[arg-type]
        elif channel.empty():
            ready.set()
        return value

    # Acks are ours: an event is acked once the batch it is in has been processed.
    stream.enable_acks = False
    stream.add_processor(add)
    stream._enable_passive(channel)
    try:
        while not stream.should_stop:
            if not events:
                # Idle: wait for a first event without a timer. Waking every ``within_s`` to
                # find nothing cost the idle worker more than half a core (57% at 5 ms on the
                # 2-core VM; 1% without): a record's wait is bounded from when it arrives.
                arrived.clear()
                await stream.wait_for_stopped(arrived)  # type: ignore[arg-type]
                continue
            if not ready.is_set():
                left = within_s - (loop.time() - first_at) if within_s > 0 else None
                if left is None or left > 0:
                    await stream.wait_for_stopped(ready, timeout=left)  # type: ignore[arg-type]
            if eager:
                behind = backlog is not None and backlog_within_s > 0 and backlog()
                await _settle(
                    stream,
                    channel,
                    events,
                    max_,
                    started_at=first_at,
                    within_s=backlog_within_s if behind else within_s,
                    backlogged=behind,
                    caught_up=caught_up,
                )
            consuming = loop.create_future()
            try:
                yield list(events)
            finally:
                taken = list(events)
                events.clear()
                for event in taken:
                    await stream.ack(event)
                if not consuming.done():
                    consuming.set_result(None)
                ready.clear()
                consumed.set()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add)
