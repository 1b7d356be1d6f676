"""How far the events agent has got on each partition, in record time, and which users have an
attribution window due when: the sweeper closes a window only once the partition's events up to
its end are applied, so a click processed late is never counted as a miss."""

from __future__ import annotations

import heapq
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
    >>> marks.limit(0)
    50000
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

    def limit(self, partition: int) -> int:
        """Windows ending at or before this record time have passed on ``partition``: its
        newest record processed, or, once it has been idle for ``idle_ms``, the wall clock
        less ``idle_ms``."""
        mark = self._marks.get(partition)
        record = mark.record_ms if mark is not None else -1
        now = self.clock()
        last_seen = mark.wall_ms if mark is not None else self._started_ms
        if now - last_seen >= self.idle_ms:
            return max(record, now - self.idle_ms)
        return record


class DueIndex:
    """Per partition, the users with an open impression and when the first is due, earliest
    first (a heap; stale entries are dropped when they come up).

    >>> due = DueIndex()
    >>> due.set(0, "u1", 50); due.set(0, "u2", 20); due.set(0, "u1", 10)
    >>> due.pop_due(0, 30, limit=10)
    ['u1', 'u2']
    """

    def __init__(self) -> None:
        self._due: dict[int, dict[str, int]] = {}
        self._heaps: dict[int, list[tuple[int, str]]] = {}

    def set(self, partition: int, user_id: str, due_ms: int | None) -> None:
        users = self._due.setdefault(partition, {})
        if due_ms is None:
            users.pop(user_id, None)
            return
        if users.get(user_id) != due_ms:
            users[user_id] = due_ms
            heapq.heappush(self._heaps.setdefault(partition, []), (due_ms, user_id))

    def pop_due(self, partition: int, up_to_ms: int, limit: int) -> list[str]:
        """Up to ``limit`` users whose first impression is due by ``up_to_ms`` (they leave the
        index; the sweep puts them back with their next due time)."""
        heap = self._heaps.get(partition, [])
        users = self._due.get(partition, {})
        found: list[str] = []
        while heap and heap[0][0] <= up_to_ms and len(found) < limit:
            due_ms, user = heapq.heappop(heap)
            if users.get(user) == due_ms:  # else stale: moved or cleared since
                del users[user]
                found.append(user)
        return found

    def drop(self, partition: int) -> None:
        """The partition moved to another worker."""
        self._due.pop(partition, None)
        self._heaps.pop(partition, None)

    def __len__(self) -> int:
        return sum(len(u) for u in self._due.values())
