"""Running item-to-item co-occurrence: how often item b directly followed item a in a user's
sequence, and the last-3 scorer over it. The worker's cheap path and the replay's streaming
baseline are this one class, so what the replay compares against is what the worker degrades to.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Iterable, Sequence

# How the user's last three items weigh, newest first.
RECENT_WEIGHTS: tuple[float, ...] = (1.0, 0.5, 0.25)


class Cooccurrence:
    """Transition counts ``previous -> next``, at most ``max_neighbours`` kept per item (the
    strongest; a list that grows past twice that is cut back, so memory stays bounded by the
    number of items seen, whatever the stream's length).

    >>> co = Cooccurrence()
    >>> for a, b in [("x", "y"), ("x", "y"), ("x", "z"), ("y", "z")]:
    ...     co.add(a, b)
    >>> co.top(["x"], 2, exclude=set())
    ['y', 'z']
    >>> co.top(["y", "x"], 5, exclude={"y"})  # x is newest: weight 1; y: 0.5
    ['z']
    """

    __slots__ = ("_next", "max_neighbours")

    def __init__(self, max_neighbours: int = 200) -> None:
        if max_neighbours < 1:
            raise ValueError("max_neighbours must be at least 1")
        self.max_neighbours = max_neighbours
        self._next: dict[str, dict[str, float]] = {}

    def __len__(self) -> int:
        """Items with at least one successor."""
        return len(self._next)

    def add(self, previous: str, item: str, weight: float = 1.0) -> None:
        """Count one transition (a repeat of the same item is not a transition)."""
        if previous == item:
            return
        row = self._next.get(previous)
        if row is None:
            row = self._next[previous] = {}
        row[item] = row.get(item, 0.0) + weight
        if len(row) > 2 * self.max_neighbours:
            kept = heapq.nlargest(self.max_neighbours, row.items(), key=lambda kv: (kv[1], kv[0]))
            self._next[previous] = dict(kept)

    def add_sequence(self, items: Iterable[str]) -> None:
        """Count every consecutive pair of one user's items, in order."""
        previous: str | None = None
        for item in items:
            if previous is not None:
                self.add(previous, item)
            previous = item

    def neighbours(self, item: str) -> dict[str, float]:
        """The counts of what followed ``item`` (a read-only view: do not change it)."""
        return self._next.get(item, {})

    def scores(
        self, recent: Sequence[str], weights: Sequence[float] = RECENT_WEIGHTS
    ) -> dict[str, float]:
        """Weighted successor counts of the user's last items (``recent`` oldest first)."""
        out: dict[str, float] = {}
        for item, weight in zip(reversed(recent), weights, strict=False):
            for nxt, count in self._next.get(item, {}).items():
                out[nxt] = out.get(nxt, 0.0) + weight * count
        return out

    def top(
        self,
        recent: Sequence[str],
        k: int,
        exclude: Collection[str],
        weights: Sequence[float] = RECENT_WEIGHTS,
    ) -> list[str]:
        """Up to ``k`` items by :meth:`scores`, best first (ties by id), none of ``exclude``."""
        # (-score, id) tuples compare in C: best first, ties by id, no key function per item.
        scored = [(-s, i) for i, s in self.scores(recent, weights).items() if i not in exclude]
        return [i for _s, i in heapq.nsmallest(k, scored)]
