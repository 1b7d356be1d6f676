"""Shadow impressions: the lists a candidate model would have shown, attributed to what users
really did, so it is measured live beside the serving model before it serves.

The shadow model ranks the same micro-batches as the serving model (app.core.processor); each of
its lists opens a shadow :class:`~app.core.attribution.Impression` here, and every later event
of the user is attributed to it by the very functions that attribute the served impressions
(app.core.attribution: same window, same actions, same "newest impression that showed the item"
rule, same eviction). So the would-be hit rate it gets is comparable with the serving model's,
measured on the same users at the same moments.

Unlike served impressions, these are kept in memory, not in the user's state: the serving
model's state and outputs do not change when a shadow runs. A restarted worker, or one that
loses a partition, forgets the open shadow impressions of those users (they are neither hits
nor misses: they are never counted). ``max_users`` bounds the memory; beyond it the open
impressions of the user shown a list least recently are forgotten the same way (``forgotten``
counts those users).

Pure bookkeeping, no I/O: impressions in, closed impressions out.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from app.core.attribution import Impression, on_event, on_shown, on_sweep
from app.core.records import Event


class ShadowClosed(NamedTuple):
    """A shadow impression that closed, and whose it was."""

    user_id: str
    impression: Impression


@dataclass(slots=True)
class _Open:
    partition: int
    impressions: tuple[Impression, ...]


@dataclass(slots=True)
class ShadowBook:
    """Open shadow impressions by user; a FIFO of due times per partition for the sweep.

    >>> from app.core.records import Event, EventType
    >>> book = ShadowBook(window_ms=1_000, open_limit=5, max_users=10)
    >>> imp = Impression("r1", "next_items", "2.0", ("a", "b"), 0, 1_000, (0, 7))
    >>> book.on_shown("u1", imp, partition=0)
    ()
    >>> click = Event("e2", "u1", EventType.CLICK, 500, "1970-01-01T00:00:00.500Z", item_id="b")
    >>> book.on_event(click, record_ms=500)
    ()
    >>> [(u, i.request_id, [a.rank for a in i.acted]) for u, i in book.sweep(0, up_to_ms=1_000)]
    [('u1', 'r1', [1])]
    >>> book.users
    0
    """

    window_ms: int
    open_limit: int
    max_users: int
    forgotten: int = 0  # users whose open impressions were forgotten for room (max_users)
    _open: dict[str, _Open] = field(default_factory=dict)
    _due: dict[int, deque[tuple[int, str]]] = field(default_factory=dict)

    @property
    def users(self) -> int:
        """Users with an open shadow impression."""
        return len(self._open)

    def on_event(self, event: Event, record_ms: int) -> tuple[ShadowClosed, ...]:
        """A new event of its user: impressions past their window close, an action on an item
        of an open impression is attributed to it. Returns the impressions closed."""
        entry = self._open.get(event.user_id)
        if entry is None:
            return ()
        after = on_event(
            entry.impressions, (), event, record_ms, window_ms=self.window_ms, closed_limit=0
        )
        self._store(event.user_id, entry.partition, after.open)
        return tuple(ShadowClosed(event.user_id, i) for i in after.newly_closed)

    def on_shown(
        self, user_id: str, impression: Impression, partition: int
    ) -> tuple[ShadowClosed, ...]:
        """A would-be list for ``user_id``; returns the impressions it closed (the user's
        oldest beyond ``open_limit``, as for served impressions). Beyond ``max_users`` the
        least recent user's open impressions are forgotten, uncounted: no served impression
        closes early for that reason, so counting them would bias the comparison."""
        entry = self._open.pop(user_id, None)  # re-inserted last: the most recent user
        opened = on_shown(
            entry.impressions if entry is not None else (),
            (),
            impression,
            open_limit=self.open_limit,
            closed_limit=0,
        )
        self._open[user_id] = _Open(partition, opened.open)
        self._due.setdefault(partition, deque()).append((impression.due_ms, user_id))
        while len(self._open) > self.max_users:
            del self._open[next(iter(self._open))]
            self.forgotten += 1
        return tuple(ShadowClosed(user_id, i) for i in opened.newly_closed)

    def sweep(self, partition: int, up_to_ms: int) -> tuple[ShadowClosed, ...]:
        """Close the impressions of ``partition`` due by ``up_to_ms`` (its watermark, the clock
        the served impressions are swept by)."""
        queue = self._due.get(partition)
        closed: tuple[ShadowClosed, ...] = ()
        while queue and queue[0][0] <= up_to_ms:
            _, user_id = queue.popleft()
            entry = self._open.get(user_id)
            if entry is None:
                continue
            after = on_sweep(entry.impressions, (), up_to_ms, closed_limit=0)
            if after.newly_closed:
                self._store(user_id, entry.partition, after.open)
                closed += tuple(ShadowClosed(user_id, i) for i in after.newly_closed)
        return closed

    def drop_partition(self, partition: int) -> int:
        """Forget the open impressions of a partition this worker no longer owns; returns how
        many users that was."""
        self._due.pop(partition, None)
        gone = [u for u, e in self._open.items() if e.partition == partition]
        for user_id in gone:
            del self._open[user_id]
        return len(gone)

    def forget(self, user_id: str) -> bool:
        """forget_user: drop the user's open shadow impressions, uncounted (a due entry left in
        a partition's queue finds nothing and is skipped). Returns whether there were any."""
        return self._open.pop(user_id, None) is not None

    def clear(self) -> None:
        """Forget everything (the shadow model was retired or replaced)."""
        self._open.clear()
        self._due.clear()

    def _store(self, user_id: str, partition: int, impressions: tuple[Impression, ...]) -> None:
        if impressions:
            entry = self._open.get(user_id)
            if entry is None:
                self._open[user_id] = _Open(partition, impressions)
            else:
                entry.impressions = impressions
        else:
            self._open.pop(user_id, None)
