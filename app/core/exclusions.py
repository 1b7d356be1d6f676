"""Which items a user must not be shown: the one exclusion rule serving, the cheap path, the
replay baselines and the offline evaluation all apply.

``seen`` (the default): a next-item recommendation never shows an item the user interacted with
within the kept history (the state's last ``HISTORY_SIZE`` interactions), nor one they bought.
A search may show a seen item, ranked on its merits (people search for what they know), but
never a purchase. ``purchased``: only purchases (and the item the event is about) are excluded.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")


class ExclusionPolicy(StrEnum):
    SEEN = "seen"
    PURCHASED = "purchased"


def excluded(
    history: Iterable[T],
    purchased: Iterable[T],
    trigger: T | None,
    *,
    search: bool,
    policy: ExclusionPolicy = ExclusionPolicy.SEEN,
) -> set[T]:
    """The items not to show after an event.

    ``history``: the user's kept interactions (item ids or indices, any order), the event's own
    included; ``purchased``: what they bought; ``trigger``: the item the event is about (None
    for a search). Generic over the id type, so the evaluation can call it with item indices.

    >>> sorted(excluded(["a", "b"], ["c"], "b", search=False))
    ['a', 'b', 'c']
    >>> sorted(excluded(["a", "b"], ["c"], None, search=True))
    ['c']
    >>> sorted(excluded(["a", "b"], ["c"], "b", search=False, policy=ExclusionPolicy.PURCHASED))
    ['b', 'c']
    """
    out = set(purchased)
    if search:
        return out
    if trigger is not None:
        out.add(trigger)
    if policy is ExclusionPolicy.SEEN:
        out.update(history)
    return out
