"""How long an eager batch waits to fill (app.streams.agents.batching._settle): it closes once
the stream is quiet, except under a backlog, when it waits to fill up to its own limit; it does
not wait at all when the stream is empty and the consumer has handed over all it fetched."""

from __future__ import annotations

import asyncio
from typing import Any

from app.streams.agents import batching


class _Stream:
    should_stop = False


class _Channel:
    def __init__(self, empty: bool = True) -> None:
        self._empty = empty

    def empty(self) -> bool:
        return self._empty


async def _fill(events: list[Any], upto: int) -> None:
    while len(events) < upto:
        await asyncio.sleep(0.1)  # far slower than the quiet period: a trickle
        events.append(object())


async def _flood(events: list[Any], upto: int) -> None:
    while len(events) < upto:
        events.append(object())
        await asyncio.sleep(0)  # a record at every turn of the loop: well within the quiet period


def _settle(
    events: list[Any],
    *,
    backlogged: bool,
    within_s: float,
    fill: bool = True,
    flood: bool = False,
    caught_up: bool | None = None,
    channel_empty: bool = True,
) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        upto = 8 if fill else 0
        filler = asyncio.create_task(_flood(events, upto) if flood else _fill(events, upto))
        try:
            await asyncio.wait_for(
                batching._settle(
                    _Stream(),  # type: ignore[arg-type]
                    _Channel(channel_empty),
                    events,
                    8,
                    started_at=loop.time(),
                    within_s=within_s,
                    backlogged=backlogged,
                    caught_up=None if caught_up is None else (lambda: caught_up),
                ),
                timeout=120,
            )
        finally:
            filler.cancel()

    asyncio.run(run())


def test_a_backlogged_batch_waits_until_it_is_full() -> None:
    events: list[Any] = [object()]
    _settle(events, backlogged=True, within_s=60.0)
    assert len(events) == 8


def test_a_backlogged_batch_still_closes_at_its_time_limit() -> None:
    events: list[Any] = [object()]
    # Nothing arrives: only the limit can end it.
    _settle(events, backlogged=True, within_s=0.05, fill=False)
    assert len(events) == 1


def test_without_a_backlog_a_quiet_stream_closes_the_batch_before_it_fills() -> None:
    events: list[Any] = [object()]
    # The next record comes 100 ms later, after the 1 ms quiet period: the batch closes first,
    # unless the event loop was held up for the whole quiet period and the record came in it.
    _settle(events, backlogged=False, within_s=60.0)
    assert len(events) < 8


def test_records_within_the_quiet_period_join_the_batch_while_the_consumer_holds_more() -> None:
    events: list[Any] = [object()]
    # A record at every turn of the event loop and fetched records not yet handed over: the
    # quiet period never passes without a new record, so the batch fills.
    _settle(events, backlogged=False, within_s=60.0, flood=True, caught_up=False)
    assert len(events) == 8


def test_a_caught_up_consumer_and_an_empty_stream_close_the_batch_at_once() -> None:
    events: list[Any] = [object()]
    # The same flood of records, but the consumer had handed over all it fetched when the
    # batch was judged: it closes without waiting (only what came before the judgement, while
    # the test started the two tasks, is in it).
    _settle(events, backlogged=False, within_s=60.0, flood=True, caught_up=True)
    assert len(events) < 8


def test_records_still_in_the_stream_are_waited_for_even_when_caught_up() -> None:
    events: list[Any] = [object()]
    # The stream's queue holds records: they are part of what was fetched, so the batch waits
    # for them as before.
    _settle(
        events, backlogged=False, within_s=60.0, flood=True, caught_up=True, channel_empty=False
    )
    assert len(events) == 8


def test_a_backlog_outweighs_being_caught_up() -> None:
    events: list[Any] = [object()]
    _settle(events, backlogged=True, within_s=60.0, caught_up=True)
    assert len(events) == 8
