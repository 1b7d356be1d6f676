"""Attribution: which shown items a user acted on within the window, and which they passed over.

Every ranked recommendation opens an :class:`Impression` in its user's state. A click,
add-to-cart or purchase of one of its items within ``window_ms`` of it being shown is a
positive; when the window closes (the sweeper, or the user's next event after it) or the impression
is evicted (more than ``open_limit`` open), the items not acted on are its negatives.
The window closes on the user's next event after it, or when the sweeper finds it due.

Pure: impressions in, impressions and :class:`Positive` / :class:`Closed` out. A closed
impression is kept a little longer (``closed_limit`` of them) with the id of what closed it,
so that a replayed record re-emits what it emitted the first time (at-least-once) instead of
losing it: see :func:`replayed`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from app.core.records import Event, EventType

ACTIONS = frozenset({EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE})
CLOSED_BY_WINDOW = "window"
CLOSED_BY_EVICTION = "evicted"
CLOSED_BY_SWEEP = "sweep"  # closed_by of impressions the sweeper closed


class Acted(NamedTuple):
    """A positive already emitted: the rank acted on, how, by which event, after how long.

    A named tuple, like :class:`Impression`: user states hold many, and a state is decoded per
    user per batch; tuples are built in C and encode as they are (app.core.state)."""

    rank: int
    action: str
    event_id: str
    event_time_ms: int


class Impression(NamedTuple):
    """A recommendation as its user was shown it.

    ``source`` is the triggering record's (partition, offset) on the events topic: the user's
    sequence at serving time is their events before it, so a trainer can rebuild the example.
    ``due_ms`` is when its window closes, in Kafka record time (the trigger's timestamp plus the
    window), the clock the partition's watermark runs on.
    """

    request_id: str
    kind: str
    model_version: str
    items: tuple[str, ...]
    shown_ms: int
    due_ms: int
    source: tuple[int, int]
    acted: tuple[Acted, ...] = ()
    # Set once closed: why, when, and by what (an event id, or "sweep").
    closed_reason: str | None = None
    closed_ms: int | None = None
    closed_by: str | None = None


@dataclass(frozen=True, slots=True)
class Positive:
    impression: Impression
    acted: Acted

    @property
    def delay_ms(self) -> int:
        return self.acted.event_time_ms - self.impression.shown_ms


@dataclass(frozen=True, slots=True)
class Attribution:
    """Open and recently closed impressions after one step, and what the step emits."""

    open: tuple[Impression, ...]
    closed: tuple[Impression, ...]
    positives: tuple[Positive, ...] = ()
    newly_closed: tuple[Impression, ...] = ()


def _close(imp: Impression, reason: str, at_ms: int, by: str) -> Impression:
    return imp._replace(closed_reason=reason, closed_ms=at_ms, closed_by=by)


def _keep(
    closed: tuple[Impression, ...], more: tuple[Impression, ...], limit: int
) -> tuple[Impression, ...]:
    return (*closed, *more)[-limit:] if limit else ()


def on_event(
    open_: tuple[Impression, ...],
    closed: tuple[Impression, ...],
    event: Event,
    record_ms: int,
    *,
    window_ms: int,
    closed_limit: int,
) -> Attribution:
    """A new (not replayed) event of the user: impressions whose window has passed by the
    event's record time close first; then an action on a shown item is a positive for the
    newest open impression that showed it (once per item and kind of action)."""
    due = tuple(i for i in open_ if i.due_ms <= record_ms)
    still = tuple(i for i in open_ if i.due_ms > record_ms)
    newly = tuple(_close(i, CLOSED_BY_WINDOW, i.due_ms, event.event_id) for i in due)
    positives: list[Positive] = []
    if event.type in ACTIONS and event.item_id is not None:
        for n in range(len(still) - 1, -1, -1):
            imp = still[n]
            if event.item_id not in imp.items or event.event_time_ms < imp.shown_ms:
                continue
            rank = imp.items.index(event.item_id)
            if any(a.rank == rank and a.action == event.type.value for a in imp.acted):
                break  # already counted for this impression
            acted = Acted(rank, event.type.value, event.event_id, event.event_time_ms)
            updated = imp._replace(acted=(*imp.acted, acted))
            still = (*still[:n], updated, *still[n + 1 :])
            positives.append(Positive(updated, acted))
            break
    return Attribution(still, _keep(closed, newly, closed_limit), tuple(positives), newly)


def on_shown(
    open_: tuple[Impression, ...],
    closed: tuple[Impression, ...],
    impression: Impression,
    *,
    open_limit: int,
    closed_limit: int,
) -> Attribution:
    """A new impression; the oldest open ones close early beyond ``open_limit``."""
    opened = (*open_, impression)
    evicted = opened[: max(0, len(opened) - open_limit)]
    newly = tuple(
        _close(i, CLOSED_BY_EVICTION, impression.shown_ms, impression.request_id) for i in evicted
    )
    return Attribution(opened[len(evicted) :], _keep(closed, newly, closed_limit), (), newly)


def on_sweep(
    open_: tuple[Impression, ...],
    closed: tuple[Impression, ...],
    up_to_ms: int,
    *,
    closed_limit: int,
) -> Attribution:
    """The partition's events are applied up to ``up_to_ms`` (record time): every impression
    due by then closes. The caller emits the negatives before it stores the state, so a crash
    in between closes them again (at-least-once) rather than losing them."""
    due = tuple(i for i in open_ if i.due_ms <= up_to_ms)
    if not due:
        return Attribution(open_, closed)
    newly = tuple(_close(i, CLOSED_BY_WINDOW, i.due_ms, CLOSED_BY_SWEEP) for i in due)
    rest = tuple(i for i in open_ if i.due_ms > up_to_ms)
    return Attribution(rest, _keep(closed, newly, closed_limit), (), newly)


def next_due(open_: tuple[Impression, ...]) -> int | None:
    """When the first of these impressions closes (record time), if any is open."""
    return min((i.due_ms for i in open_), default=None)


def replayed(
    open_: tuple[Impression, ...], closed: tuple[Impression, ...], event_id: str
) -> tuple[tuple[Positive, ...], tuple[Impression, ...]]:
    """What ``event_id`` emitted when it was first applied, from what the state remembers: its
    positives, and the impressions it closed. A record replayed after a crash is not applied
    again, but its outputs may not have reached the broker the first time."""
    positives = tuple(
        Positive(imp, a) for imp in (*open_, *closed) for a in imp.acted if a.event_id == event_id
    )
    closures = tuple(i for i in closed if i.closed_by == event_id)
    return positives, closures


def unacted(imp: Impression) -> list[tuple[int, str]]:
    """(rank, item id) of the items shown and not acted on: the negatives.

    >>> imp = Impression("r", "next_items", "1", ("a", "b", "c"), 0, 10, (0, 0),
    ...                  acted=(Acted(1, "click", "e", 5),))
    >>> unacted(imp)
    [(0, 'a'), (2, 'c')]
    """
    done = {a.rank for a in imp.acted}
    return [(rank, item) for rank, item in enumerate(imp.items) if rank not in done]


def hit_at(imp: Impression, k: int) -> bool:
    """Whether any of the first ``k`` items was acted on."""
    return any(a.rank < k for a in imp.acted)
