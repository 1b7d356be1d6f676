"""What a user is never shown (app/core/exclusions.py), on the model path and the cheap path, and
the co-occurrence that makes the cheap path personal."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from app.core.catalog import Catalog
from app.core.codec import encode_event
from app.core.cooccurrence import Cooccurrence
from app.core.exclusions import ExclusionPolicy
from app.core.processor import RECOMMENDATIONS, Processor
from app.core.ranking import FALLBACK_VERSION
from app.core.records import Event, Source
from app.core.retrieval import (
    QueryCache,
    Request,
    _assemble,
    _assemble_small,
    excluded_row_set,
    excluded_rows,
)
from app.core.scoring.package import LoadedModel
from app.core.settings import Settings
from app.core.state import StateLimits, apply_event, decode_state

NOW = 1_790_000_000_500


class Users:
    """Sends events for several users through one processor, keeping their states."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.store: dict[bytes, bytes] = {}
        self.offset = 0

    def send(self, event: Event, *, late: bool = False) -> dict[str, object] | None:
        timestamp = NOW - 60_000 if late else NOW
        source = Source("events", 0, self.offset, event.user_id.encode(), timestamp)
        self.offset += 1
        outcome = self.processor.handle(encode_event(event), source, self.store.get)
        if outcome.state is not None and outcome.user_id is not None:
            self.store[outcome.user_id.encode()] = outcome.state
        recs = [o.document() for o in outcome.outputs if o.role == RECOMMENDATIONS]
        return recs[0] if recs else None


def make_users(
    catalog: Catalog, model: LoadedModel, settings: Settings, **changes: object
) -> Users:
    changes.setdefault("deadline_ms", 0.0)
    return Users(
        Processor(catalog, model.ranker, model.spec, settings.replace(**changes), clock=lambda: NOW)
    )


def shown(rec: dict[str, object] | None) -> list[str]:
    assert rec is not None
    items = rec["items"]
    assert isinstance(items, list)
    return [i["item_id"] for i in items]


def test_next_items_never_show_the_kept_history(
    music_catalog: Catalog,
    model: LoadedModel,
    settings: Settings,
    event_factory: Callable[..., Event],
) -> None:
    users = make_users(music_catalog, model, settings, top_k=30)
    clicked: list[str] = []
    for i in range(0, 36, 3):  # twelve jazz items: the user's taste, the model's best guesses
        item = f"jazz-{i}"
        clicked.append(item)
        rec = users.send(event_factory("click", item_id=item))
        assert not set(shown(rec)) & set(clicked), (clicked, shown(rec))
    # 40 items, 12 seen: the page is filled from the other 28.
    assert len(shown(rec)) == 28


def test_searches_may_show_a_seen_item_but_never_a_purchase(
    music_catalog: Catalog,
    model: LoadedModel,
    settings: Settings,
    event_factory: Callable[..., Event],
) -> None:
    users = make_users(music_catalog, model, settings, top_k=40)
    users.send(event_factory("click", item_id="jazz-0"))
    users.send(event_factory("purchase", item_id="jazz-3"))
    results = shown(users.send(event_factory("search", query="jazz")))
    assert "jazz-0" in results  # seen, and it matches: ranked on its merits
    assert "jazz-3" not in results  # bought


def test_the_purchased_policy_shows_seen_items_again(
    music_catalog: Catalog,
    model: LoadedModel,
    settings: Settings,
    event_factory: Callable[..., Event],
) -> None:
    users = make_users(music_catalog, model, settings, top_k=40, exclude="purchased")
    users.send(event_factory("click", item_id="jazz-0"))
    items = shown(users.send(event_factory("click", item_id="jazz-3")))
    assert "jazz-0" in items and "jazz-3" not in items  # the event's own item stays out


def test_the_cheap_path_answers_from_what_followed_the_users_items(
    music_catalog: Catalog,
    model: LoadedModel,
    settings: Settings,
    event_factory: Callable[..., Event],
) -> None:
    users = make_users(music_catalog, model, settings, deadline_ms=1000.0)
    # Other users went from a rock item to two classical ones (not the popular genre).
    for n in range(5):
        user = f"other-{n}"
        for item in ("rock-1", "classical-2", "classical-5"):
            users.send(event_factory("click", user_id=user, item_id=item))
    # A late record: the cheap path. Its list starts with what followed rock-1.
    rec = users.send(event_factory("click", user_id="newcomer", item_id="rock-1"), late=True)
    assert rec is not None and rec["degraded"] is True
    assert rec["model_version"] == FALLBACK_VERSION
    items = rec["items"]
    assert isinstance(items, list)
    assert items[0]["item_id"] == "classical-2" and items[0]["source"] == "related"
    assert {i["source"] for i in items[1:]} <= {"category", "popular"}
    # Seen items stay out of the cheap path too.
    rec = users.send(event_factory("click", user_id="newcomer", item_id="classical-2"), late=True)
    assert "classical-2" not in shown(rec) and "rock-1" not in shown(rec)
    assert shown(rec)[0] == "classical-5"
    state = decode_state(users.store[b"newcomer"])
    assert [i.item_id for i in state.history] == ["rock-1", "classical-2"]


def test_degraded_and_coalesced_are_counted_per_record(
    music_catalog: Catalog,
    model: LoadedModel,
    settings: Settings,
    event_factory: Callable[..., Event],
) -> None:
    processor = Processor(
        music_catalog,
        model.ranker,
        model.spec,
        settings.replace(deadline_ms=1000.0, coalesce_users=True),
        clock=lambda: NOW,
    )
    records = [
        (
            encode_event(event_factory("click", user_id="u1", item_id=f"jazz-{i}")),
            Source("events", 0, i, b"u1", NOW - 5000),
        )
        for i in range(4)
    ]
    empty: dict[bytes, bytes] = {}
    result = processor.handle_batch(records, empty.get)
    recs = [
        o.document() for out in result.outcomes for o in out.outputs if o.role == RECOMMENDATIONS
    ]
    assert len(recs) == 4 and all(r["degraded"] for r in recs)
    assert result.degraded == 4  # three of them are coalesced copies of the fourth's ranking
    assert result.coalesced == 3 == sum(1 for r in recs if r.get("coalesced_into"))


def test_cooccurrence_keeps_memory_bounded_and_the_strongest_successors() -> None:
    co = Cooccurrence(max_neighbours=3)
    for n in range(50):
        co.add("a", f"x{n}")
    for _ in range(10):
        co.add("a", "best")
    assert len(co.neighbours("a")) <= 6
    assert co.top(["a"], 1, exclude=set()) == ["best"]
    co.add("a", "a")  # a repeat is no transition
    assert "a" not in co.neighbours("a")


@pytest.mark.parametrize("policy", ["seen", "purchased"])
def test_settings_accept_the_policies(settings: Settings, policy: str) -> None:
    assert settings.replace(exclude=policy).exclude == policy


def test_the_small_assembly_takes_what_the_vectorized_one_takes(
    music_catalog: Catalog,
    model: LoadedModel,
    settings: Settings,
    event_factory: Callable[..., Event],
) -> None:
    """The cheap path's plain-Python assembly and the numpy one agree, row for row."""
    index = music_catalog.index
    state = None
    events = [
        event_factory("click", item_id="rock-1"),
        event_factory("purchase", item_id="jazz-3"),
        event_factory("view", item_id="classical-2"),
        event_factory("click", item_id="rock-4"),
    ]
    for e in events:
        state = apply_event(state, e, index.item(e.item_id or ""), StateLimits())
    assert state is not None
    policy = ExclusionPolicy.SEEN
    for event in [events[-1], event_factory("search", query="jazz vinyl")]:
        for related in ([], ["classical-5", "rock-4", "jazz-6", "nope"]):
            rows = np.array([index.row_of[i] for i in related if i in index.row_of], np.int32)
            request = Request(
                state, event, ("jazz", "vinyl") if event.query else (), ("rock", "jazz"), {}, rows
            )
            for limit in (5, 10, 30):
                scratch = np.zeros(len(index), dtype=np.bool_)
                excluded = excluded_rows(index, request, policy)
                big = _assemble(index, request, excluded, None, limit, scratch, limit, QueryCache())
                small = _assemble_small(
                    index,
                    request,
                    excluded_row_set(index, request, policy),
                    limit,
                    limit,
                    QueryCache(),
                )
                assert big.rows.tolist() == small.rows.tolist()
                assert big.sources == small.sources
                assert np.array_equal(big.query_match, small.query_match)
                assert not scratch.any()
