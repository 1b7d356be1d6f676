"""How long an eager batch waits to fill (app.streams.agents.batching._settle): it closes once
the stream is quiet, except under a backlog, when it waits to fill up to its own limit."""

from __future__ import annotations

import asyncio
from typing import Any

from app.streams.agents import batching


class _Stream:
    should_stop = False


class _Channel:
    def empty(self) -> bool:
        return True


async def _fill(events: list[Any], upto: int) -> None:
    while len(events) < upto:
        await asyncio.sleep(0.1)  # far slower than the quiet period: a trickle
        events.append(object())


def _settle(events: list[Any], *, backlogged: bool, within_s: float, fill: bool = True) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        filler = asyncio.create_task(_fill(events, 8 if fill else 0))
        try:
            await asyncio.wait_for(
                batching._settle(
                    _Stream(),  # type: ignore[arg-type]
                    _Channel(),
                    events,
                    8,
                    started_at=loop.time(),
                    within_s=within_s,
                    backlogged=backlogged,
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
