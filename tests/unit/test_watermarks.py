"""When attribution windows may close: per-partition watermarks and the index of due users."""

from __future__ import annotations

from app.streams.watermarks import DueIndex, Watermarks


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def test_the_watermark_follows_processed_records_then_the_clock_when_idle() -> None:
    clock = Clock(1_000_000)
    marks = Watermarks(idle_ms=5_000, clock=clock)
    assert marks.limit(0) == -1  # nothing processed, not idle long enough yet
    marks.advance(0, 900_000)
    marks.advance(0, 850_000)  # an older record does not move it back
    assert marks.limit(0) == 900_000
    clock.now += 4_999
    assert marks.limit(0) == 900_000  # records flowing: record time rules
    clock.now += 1
    assert marks.limit(0) == clock.now - 5_000  # idle: the wall clock stands in
    assert marks.limit(1) == clock.now - 5_000  # never seen since the start, and idle


def test_due_users_come_out_earliest_first_once_and_only_when_due() -> None:
    due = DueIndex()
    due.set(0, "a", 300)
    due.set(0, "b", 100)
    due.set(0, "c", 200)
    due.set(0, "a", 150)  # moved earlier: the old entry is stale
    due.set(0, "c", None)  # no open impression any more
    due.set(1, "z", 50)
    assert due.pop_due(0, 120, limit=10) == ["b"]
    assert due.pop_due(0, 1_000, limit=10) == ["a"]  # once, at its latest due time
    assert due.pop_due(0, 1_000, limit=10) == []
    assert len(due) == 1
    due.drop(1)  # the partition moved away
    assert due.pop_due(1, 1_000, limit=10) == [] and len(due) == 0
    for n in range(5):
        due.set(2, f"u{n}", n)
    assert due.pop_due(2, 10, limit=3) == ["u0", "u1", "u2"]  # bounded per round
