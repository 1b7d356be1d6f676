"""Decoded user states kept between batches, trusted only while the stored bytes are the ones
they were decoded from (or encoded to)."""

from __future__ import annotations

from collections import OrderedDict

from app.core.state import UserState


class DecodedStates:
    """An LRU of ``user_id -> (raw, state)``, at most ``capacity`` users.

    A hit needs the bytes read from the table to equal the bytes remembered: whatever wrote the
    table since (the sweeper, a restore from the changelog, a rebalance) makes it a miss, so a
    cached state is never staler than the table. ``capacity`` 0 keeps nothing.

    >>> cache = DecodedStates(1)
    >>> cache.put("u", b"x", UserState("u"))
    >>> cache.get("u", b"x") == UserState("u"), cache.get("u", b"y")
    (True, None)
    """

    __slots__ = ("_capacity", "_entries", "hits", "misses")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[str, tuple[bytes, UserState]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user_id: str, raw: bytes) -> UserState | None:
        entry = self._entries.get(user_id)
        if entry is None or (entry[0] is not raw and entry[0] != raw):
            self.misses += 1
            return None
        self._entries.move_to_end(user_id)
        self.hits += 1
        return entry[1]

    def put(self, user_id: str, raw: bytes, state: UserState) -> None:
        if not self._capacity:
            return
        entries = self._entries
        entries[user_id] = (raw, state)
        entries.move_to_end(user_id)
        if len(entries) > self._capacity:
            entries.popitem(last=False)

    def discard(self, user_id: str) -> None:
        self._entries.pop(user_id, None)
