"""Log helpers with no logging setup of their own: shortened fields, the event id an unusable
record claims, and a budget of log lines per kind (the processor's dead-letter lines)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

# A dead-lettering producer can send thousands of bad records a second: the metrics count every
# one, the log shows at most this many lines per error kind per window and says how many it held
# back.
DEAD_LETTER_LOG_LINES = 10
DEAD_LETTER_LOG_WINDOW_S = 10.0


def truncated(text: str, limit: int = 256) -> str:
    """At most ``limit`` characters of ``text``, saying how many were cut.

    >>> truncated("abcdefghij", 4)
    'abcd...(6 more chars)'
    >>> truncated("short")
    'short'
    """
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text) - limit} more chars)"


def claimed_event_id(raw: bytes, max_bytes: int) -> str | None:
    """The ``event_id`` an unusable record claims to have, for its log line; None when it is
    too big to parse again, not a JSON object, or has no string ``event_id``.

    >>> claimed_event_id(b'{"event_id": "e-1", "type": "teleport"}', 1024)
    'e-1'
    >>> claimed_event_id(b'not json', 1024) is None
    True
    """
    if len(raw) > max_bytes:
        return None
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    event_id = doc.get("event_id") if isinstance(doc, dict) else None
    return truncated(event_id, 128) if isinstance(event_id, str) and event_id else None


class LogBudget:
    """At most ``lines`` log lines per key in each window of ``window_s``; counts the rest.

    :meth:`take` returns None to stay quiet, or how many lines of that key were held back since
    the last one it allowed (for the line to say so).

    >>> ticks = iter([0.0, 1.0, 2.0, 3.0, 11.0])
    >>> budget = LogBudget(lines=2, window_s=10.0, clock=lambda: next(ticks))
    >>> [budget.take("oversize") for _ in range(5)]
    [0, 0, None, None, 2]
    """

    def __init__(
        self, lines: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.lines = lines
        self.window_s = window_s
        self.clock = clock
        self._windows: dict[str, _Window] = {}

    def take(self, key: str) -> int | None:
        now = self.clock()
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window(now)
        elif now - window.start >= self.window_s:
            window.start, window.used = now, 0
        if window.used >= self.lines:
            window.held += 1
            return None
        held, window.held = window.held, 0
        window.used += 1
        return held


@dataclass(slots=True)
class _Window:
    start: float
    used: int = 0  # lines allowed since ``start``
    held: int = 0  # lines held back since the last one allowed
