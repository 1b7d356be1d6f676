"""Attribution: positives within the window, negatives when it closes, and replays."""

from __future__ import annotations

from collections.abc import Callable

from app.core.attribution import (
    CLOSED_BY_EVICTION,
    CLOSED_BY_WINDOW,
    Impression,
    hit_at,
    next_due,
    on_event,
    on_shown,
    on_sweep,
    replayed,
    unacted,
)
from app.core.records import Event
from tests.conftest import T0

WINDOW = 60_000


def shown(request_id: str, at: int = T0, items: tuple[str, ...] = ("a", "b", "c")) -> Impression:
    return Impression(request_id, "next_items", "1.0", items, at, at + WINDOW, (0, 1))


def test_an_action_on_a_shown_item_is_one_positive_per_action(
    event_factory: Callable[..., Event],
) -> None:
    imp = shown("r1")
    click = event_factory("click", item_id="b", time_ms=T0 + 5_000)
    a = on_event((imp,), (), click, T0 + 5_000, window_ms=WINDOW, closed_limit=4)
    (pos,) = a.positives
    assert (pos.acted.rank, pos.acted.action, pos.delay_ms) == (1, "click", 5_000)
    again = event_factory("click", item_id="b", time_ms=T0 + 6_000)
    b = on_event(a.open, a.closed, again, T0 + 6_000, window_ms=WINDOW, closed_limit=4)
    assert b.positives == ()  # the same item and action count once
    buy = event_factory("purchase", item_id="b", time_ms=T0 + 7_000)
    c = on_event(b.open, b.closed, buy, T0 + 7_000, window_ms=WINDOW, closed_limit=4)
    assert [p.acted.action for p in c.positives] == ["purchase"]
    assert unacted(c.open[0]) == [(0, "a"), (2, "c")] and hit_at(c.open[0], 2)


def test_the_newest_impression_showing_the_item_gets_the_credit(
    event_factory: Callable[..., Event],
) -> None:
    old, new = shown("r1"), shown("r2", at=T0 + 1_000, items=("x", "b"))
    click = event_factory("click", item_id="b", time_ms=T0 + 2_000)
    a = on_event((old, new), (), click, T0 + 2_000, window_ms=WINDOW, closed_limit=4)
    (pos,) = a.positives
    assert (pos.impression.request_id, pos.acted.rank) == ("r2", 1)


def test_no_credit_for_views_or_actions_before_the_items_were_shown(
    event_factory: Callable[..., Event],
) -> None:
    imp = shown("r1", at=T0 + 10_000)
    for event in (
        event_factory("view", item_id="a", time_ms=T0 + 11_000),
        event_factory("click", item_id="a", time_ms=T0 + 9_000),  # stamped before it was shown
        event_factory("click", item_id="zzz", time_ms=T0 + 11_000),
    ):
        a = on_event((imp,), (), event, T0 + 12_000, window_ms=WINDOW, closed_limit=4)
        assert a.positives == () and a.open == (imp,)


def test_after_the_window_the_impression_closes_first_and_the_action_is_not_credited(
    event_factory: Callable[..., Event],
) -> None:
    imp = shown("r1")
    late = event_factory("click", item_id="a", time_ms=T0 + WINDOW + 1)
    a = on_event((imp,), (), late, T0 + WINDOW, window_ms=WINDOW, closed_limit=4)
    assert a.positives == () and a.open == ()
    (closed,) = a.newly_closed
    assert (closed.closed_reason, closed.closed_ms, closed.closed_by) == (
        CLOSED_BY_WINDOW,
        T0 + WINDOW,
        late.event_id,
    )
    assert unacted(closed) == [(0, "a"), (1, "b"), (2, "c")]
    # A replay of that event re-emits the closure, and nothing else.
    assert replayed(a.open, a.closed, late.event_id) == ((), (closed,))


def test_too_many_open_impressions_evict_the_oldest() -> None:
    state: tuple[Impression, ...] = ()
    closed: tuple[Impression, ...] = ()
    evicted: list[Impression] = []
    for n in range(5):
        a = on_shown(state, closed, shown(f"r{n}", at=T0 + n), open_limit=3, closed_limit=2)
        state, closed = a.open, a.closed
        evicted += a.newly_closed
    assert [i.request_id for i in state] == ["r2", "r3", "r4"]
    assert [(i.request_id, i.closed_reason, i.closed_by) for i in evicted] == [
        ("r0", CLOSED_BY_EVICTION, "r3"),
        ("r1", CLOSED_BY_EVICTION, "r4"),
    ]
    assert [i.request_id for i in closed] == ["r0", "r1"]  # at most closed_limit kept


def test_the_sweep_closes_what_is_due_and_replays_re_emit_positives(
    event_factory: Callable[..., Event],
) -> None:
    early, late = shown("r1"), shown("r2", at=T0 + 30_000)
    # A click stamped before r2 was shown: only r1 gets the credit.
    click = event_factory("click", item_id="c", time_ms=T0 + 1_000)
    a = on_event((early, late), (), click, T0 + 1_000, window_ms=WINDOW, closed_limit=4)
    assert next_due(a.open) == T0 + WINDOW
    swept = on_sweep(a.open, a.closed, T0 + WINDOW, closed_limit=4)
    (closed,) = swept.newly_closed
    assert closed.request_id == "r1" and closed.closed_by == "sweep"
    assert unacted(closed) == [(0, "a"), (1, "b")]
    assert [i.request_id for i in swept.open] == ["r2"]
    assert next_due(swept.open) == T0 + 30_000 + WINDOW
    assert on_sweep(swept.open, swept.closed, T0 + WINDOW, closed_limit=4).newly_closed == ()
    # The click's positive is still re-emitted by a replay of the click.
    positives, closures = replayed(swept.open, swept.closed, click.event_id)
    assert [(p.impression.request_id, p.acted.rank) for p in positives] == [("r1", 2)]
    assert closures == ()
