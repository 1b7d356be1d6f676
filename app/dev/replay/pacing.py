"""When the replay publishes each event: open loop (as fast as possible, or at a fixed rate) or
closed loop (each user's next event a think time after the worker answered their previous one).

Pure schedules over positions in the stream; ``app.dev.replay.run`` drives them with the clock.
"""

from __future__ import annotations

import heapq
import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass

from app.dev.replay.scoring import Interaction

MAX = "max"
RATE = "rate"
THINK = "think"


@dataclass(frozen=True, slots=True)
class Pace:
    """How to publish: ``max`` (a backlog: everything at once), ``rate`` (``value`` events/s,
    open loop) or ``think`` (closed loop, ``value`` seconds of think time per user)."""

    kind: str
    value: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in (MAX, RATE, THINK):
            raise ValueError(f"pace must be max, rate or think, not {self.kind!r}")
        if self.kind == RATE and not self.value > 0:
            raise ValueError("a rate must be positive")
        if self.kind == THINK and not self.value >= 0:
            raise ValueError("a think time must not be negative")

    def describe(self) -> str:
        """As the command line says it.

        >>> Pace(MAX).describe(), Pace(RATE, 300).describe(), Pace(THINK, 0.5).describe()
        ('--pace max', '--rate 300', '--think-time 0.5')
        """
        if self.kind == RATE:
            return f"--rate {self.value:g}"
        if self.kind == THINK:
            return f"--think-time {self.value:g}"
        return "--pace max"


def due_open_loop(total: int, elapsed_s: float, rate: float | None) -> int:
    """How many of ``total`` events are due ``elapsed_s`` after the start: event n is due at
    n / rate (so the first at once), or all at once when ``rate`` is None.

    >>> due_open_loop(10, 0.0, 4.0), due_open_loop(10, 0.5, 4.0), due_open_loop(10, 9.0, 4.0)
    (1, 3, 10)
    >>> due_open_loop(10, 0.0, None)
    10
    """
    if rate is None:
        return total
    return min(total, math.floor(elapsed_s * rate + 1e-9) + 1)


class ClosedLoop:
    """Each user's next event is due ``think_s`` after the worker's answer (recommendation or
    dead letter) to their previous one arrived, or ``timeout_s`` after it was sent when no answer
    comes. A user's first event is due at once. Due events go out in (due time, stream
    position) order, so users that are ready together are served in global time order.

    The answer, not the previous send, starts the think time: a user reads the page before
    clicking again, and no user ever has two events in the worker at once.

    >>> evs = [Interaction("a", "u", "x"), Interaction("b", "v", "y"), Interaction("c", "u", "z")]
    >>> loop = ClosedLoop(evs, think_s=1.0, timeout_s=10.0)
    >>> loop.due(0.0)
    [0, 1]
    >>> loop.due(5.0)  # u waits for an answer to "a"
    []
    >>> loop.answered("a", 5.0), loop.due(5.5), loop.due(6.0)
    (True, [], [2])
    >>> loop.finished(), loop.next_wake(6.0)  # "b" and "c" unanswered: their timeouts
    (True, 10.0)
    """

    def __init__(self, events: Sequence[Interaction], think_s: float, timeout_s: float) -> None:
        self._events = events
        self._think = think_s
        self._timeout = timeout_s
        self._queued: dict[str, deque[int]] = {}
        for n, event in enumerate(events):
            self._queued.setdefault(event.user, deque()).append(n)
        self._heap: list[tuple[float, int]] = [(0.0, q.popleft()) for q in self._queued.values()]
        heapq.heapify(self._heap)
        # event id -> (user, time sent), in send order (so the oldest wait is first)
        self._waiting: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._left = len(events)
        self.timed_out = 0

    def finished(self) -> bool:
        """Every event has been handed out by :meth:`due`."""
        return self._left == 0

    def due(self, now: float) -> list[int]:
        """Stream positions to publish now (each handed out once), expired waits released first."""
        self._expire(now)
        out = []
        while self._heap and self._heap[0][0] <= now:
            _at, n = heapq.heappop(self._heap)
            event = self._events[n]
            self._waiting[event.event_id] = (event.user, now)
            out.append(n)
        self._left -= len(out)
        return out

    def answered(self, event_id: str, now: float) -> bool:
        """The worker answered ``event_id``; False if it was not waited for (a duplicate, or
        one whose wait had timed out)."""
        waited = self._waiting.pop(event_id, None)
        if waited is None:
            return False
        self._release(waited[0], now + self._think)
        return True

    def next_wake(self, now: float) -> float | None:
        """When :meth:`due` may next have something without an answer arriving (None: only an
        answer can release anything)."""
        times = []
        if self._heap:
            times.append(self._heap[0][0])
        if self._waiting:
            _user, sent = next(iter(self._waiting.values()))
            times.append(sent + self._timeout)
        return max(now, min(times)) if times else None

    def _expire(self, now: float) -> None:
        while self._waiting:
            event_id, (user, sent) = next(iter(self._waiting.items()))
            if sent + self._timeout > now:
                break
            del self._waiting[event_id]
            self.timed_out += 1
            self._release(user, now)

    def _release(self, user: str, at: float) -> None:
        queued = self._queued[user]
        if queued:
            heapq.heappush(self._heap, (at, queued.popleft()))
