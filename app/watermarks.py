"""How far the events agent has got on each partition, in record time: it tells the timers agent
when an attribution window has really passed (all events up to then are applied)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Mark:
    record_ms: int  # the newest record timestamp processed
    wall_ms: int  # when a record of the partition was last processed


class Watermarks:
    """Per events partition: the newest record time processed, and when that happened.

    A window that ended at ``due_ms`` (record time) has passed once the partition's records
    are processed past it. A partition with no traffic does not move, so once it has been idle
    for ``idle_ms`` the wall clock stands in for it.

    >>> marks = Watermarks(idle_ms=5_000, clock=lambda: 100_000)
    >>> marks.advance(0, 50_000)
    >>> marks.passed(0, 40_000), marks.passed(0, 60_000)
    (True, False)
    """

    def __init__(self, idle_ms: int, clock: Callable[[], int] = _wall_ms) -> None:
        self.idle_ms = idle_ms
        self.clock = clock
        self._started_ms = clock()
        self._marks: dict[int, _Mark] = {}

    def advance(self, partition: int, record_ms: int) -> None:
        now = self.clock()
        mark = self._marks.get(partition)
        if mark is None:
            self._marks[partition] = _Mark(record_ms, now)
        else:
            mark.record_ms = max(mark.record_ms, record_ms)
            mark.wall_ms = now

    def passed(self, partition: int, due_ms: int) -> bool:
        mark = self._marks.get(partition)
        if mark is not None and mark.record_ms >= due_ms:
            return True
        now = self.clock()
        last_seen = mark.wall_ms if mark is not None else self._started_ms
        return now >= due_ms + self.idle_ms and now - last_seen >= self.idle_ms
