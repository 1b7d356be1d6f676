"""Which items a user must not be shown: the one exclusion rule serving, the cheap path, the
replay baselines and the offline evaluation all apply.

``seen`` (the default): a next-item recommendation never shows an item the user interacted with
(the state remembers their last ``SEEN_SIZE`` distinct items, :func:`seen_items`), nor one they
bought.
A search may show a seen item, ranked on its merits (people search for what they know), but
never a purchase. ``purchased``: only purchases (and the item the event is about) are excluded.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from enum import StrEnum
from typing import TypeVar

T = TypeVar("T")


class ExclusionPolicy(StrEnum):
    SEEN = "seen"
    PURCHASED = "purchased"


def seen_items(items: Sequence[T], limit: int) -> list[T]:
    """The distinct items of an interaction sequence that a state remembering ``limit`` of them
    holds: each item once, in the order first met, the earliest forgotten first (what
    ``app.core.state.apply_event`` keeps, one event at a time).

    >>> seen_items(["a", "b", "a", "c"], 2)
    ['b', 'c']
    """
    distinct = list(dict.fromkeys(items))
    return distinct[-limit:] if limit > 0 else []


def excluded(
    history: Iterable[T],
    purchased: Iterable[T],
    trigger: T | None,
    *,
    search: bool,
    policy: ExclusionPolicy = ExclusionPolicy.SEEN,
) -> set[T]:
    """The items not to show after an event.

    ``history``: the items the user interacted with (ids or indices, any order: the
    state's seen items and kept history), the event's own included; ``purchased``: what they
    bought; ``trigger``: the item the event is about (None for a search). Generic over the id
    type, so the evaluation can call it with item indices.

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
