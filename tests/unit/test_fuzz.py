"""Property-based fuzzing: no input breaks the decoder, the processor or the state transitions."""

from __future__ import annotations

import string
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.core.catalog import Catalog
from app.core.codec import DecodeError, decode_event, decode_item, format_time_ms
from app.core.processor import DEAD_LETTERS, Processor
from app.core.records import ITEM_EVENTS, Event, EventType, Item, Source
from app.core.scoring.package import LoadedModel
from app.core.settings import Settings
from app.core.state import StateLimits, UserState, apply_event, decode_state, encode_state
from tests.conftest import T0

MAX_BYTES = 16 * 1024
# Draws for the documented fields, plus anything at all, so that near-valid events are common.
# orjson writes 64-bit integers only: bigger ones cannot arrive as JSON from it.
INT64 = st.integers(-(2**63), 2**63 - 1)
JSON_LEAF = st.none() | st.booleans() | INT64 | st.floats() | st.text(max_size=40)
JSON = st.recursive(
    JSON_LEAF,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=30,
)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.text(min_size=0, max_size=30) | JSON,
    "user_id": st.sampled_from(["u1", "u2", ""]) | JSON,
    "type": st.sampled_from([t.value for t in EventType] + ["like", ""]) | JSON,
    "item_id": st.sampled_from(["jazz-0", "rock-1", "gone"]) | JSON,
    "query": st.text(max_size=60) | JSON,
    "event_time": st.sampled_from(
        [
            "2026-09-21T14:13:20.000Z",
            "2026-09-21T14:13:20+02:00",
            "yesterday",
            "0001-01-01T00:00:00Z",
        ]
    )
    | JSON,
    "context": st.dictionaries(st.text(max_size=10), JSON_LEAF, max_size=4) | JSON,
}
EVENT_DOCS = st.fixed_dictionaries({}, optional={**FIELD_VALUES, "extra": JSON})


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=512))
def test_any_bytes_decode_or_fail_with_a_reason(raw: bytes) -> None:
    try:
        event = decode_event(raw, max_bytes=MAX_BYTES)
    except DecodeError as exc:
        assert exc.reason
    else:
        assert isinstance(event, Event)


@settings(max_examples=3000, deadline=None)
@given(EVENT_DOCS)
def test_any_json_object_decodes_to_a_valid_event_or_fails_with_a_reason(
    doc: dict[str, Any],
) -> None:
    raw = orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)
    try:
        event = decode_event(raw, max_bytes=MAX_BYTES)
    except DecodeError as exc:
        assert exc.reason
        return
    # What the decoder accepts is what the contract promises the rest of the code.
    assert event.event_id and event.user_id
    if event.type is EventType.SEARCH:
        assert isinstance(event.query, str)
    elif event.type in ITEM_EVENTS:
        assert isinstance(event.item_id, str) and event.item_id
    assert format_time_ms(event.event_time_ms)


@pytest.fixture(scope="module")
def processor(model: LoadedModel) -> Processor:
    catalog = Catalog()
    for i, category in enumerate(["jazz", "rock", "jazz"]):
        catalog.upsert(Item(f"{category}-{i}", f"{category} {i}", category, tags=(category,)))
    catalog.publish()
    return Processor(catalog, model.ranker, model.spec, Settings(), clock=lambda: T0)


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.one_of(st.binary(max_size=256), EVENT_DOCS.map(orjson.dumps)), st.binary(max_size=8))
def test_the_processor_never_raises_and_explains_every_rejection(
    processor: Processor, raw: bytes, key: bytes
) -> None:
    store: dict[bytes, bytes] = {}
    outcome = processor.handle(raw, Source("events", 0, 0, key or b"u1"), store.get)
    assert outcome.status in {"processed", "duplicate", "forgotten", "dead_letter"}
    if outcome.status == "dead_letter":
        (letter,) = [o.document() for o in outcome.outputs if o.role == DEAD_LETTERS]
        assert letter["error"] == outcome.error and letter["reason"]


EVENTS = st.builds(
    lambda kind, n, item, query, dt: Event(
        event_id=f"e{n}",
        user_id="u1",
        type=kind,
        event_time_ms=T0 + dt,
        event_time=format_time_ms(T0 + dt),
        item_id=None if kind is EventType.SEARCH else item,
        query=query if kind is EventType.SEARCH else None,
    ),
    # forget_user ends the state rather than changing it (tests/unit/test_processor.py).
    st.sampled_from([t for t in EventType if t is not EventType.FORGET_USER]),
    st.integers(0, 400),
    st.sampled_from([f"i{n}" for n in range(300)]),
    st.text(alphabet=string.ascii_letters + " 爵士乐", max_size=40),
    st.integers(-(10**9), 10**9),  # out of order, far apart
)


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, max_size=400))
def test_state_stays_bounded_and_each_event_counts_once(events: list[Event]) -> None:
    limits = StateLimits(history_size=20, recent_event_ids=500, max_purchased=10)
    items: Callable[[str | None], Item | None] = lambda i: (  # noqa: E731
        None if i is None else Item(i, i, f"c{hash(i) % 40}", tags=(f"t{hash(i) % 90}",))
    )
    state: UserState | None = None
    for event in events:
        state = apply_event(state, event, items(event.item_id), limits)
        assert apply_event(state, event, items(event.item_id), limits) == state  # idempotent
    if state is None:
        return
    assert len(state.history) <= 20 and len(state.purchased) <= 10
    assert len(state.category_affinity) <= limits.max_affinities
    assert len(state.tag_affinity) <= limits.max_affinities
    assert sum(n for _, n in state.counters) == len({e.event_id for e in events})
    assert decode_state(encode_state(state)) == state


ITEM_DOCS = st.fixed_dictionaries(
    {
        "item_id": st.sampled_from(["a", "b", "c", "d"]),
        "title": st.text(min_size=1, max_size=60),
        "category": st.sampled_from(["jazz", "rock", "x" * 128]),
    },
    optional={
        "tags": st.lists(st.text(min_size=1, max_size=64), max_size=32),
        "price": st.floats(min_value=0, allow_nan=False, allow_infinity=False) | INT64,
        "popularity": st.floats(min_value=0, allow_nan=False, allow_infinity=False) | INT64,
        "withdrawn": st.booleans(),
        "extra": JSON,
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(ITEM_DOCS, min_size=1, max_size=6))
def test_any_catalog_gives_finite_features(docs: list[dict[str, Any]]) -> None:
    """Whatever the catalog says (absurd prices and popularity included), an item is either
    refused with a reason or indexed with finite features."""
    catalog = Catalog()
    for doc in docs:
        try:
            item = decode_item(orjson.dumps(doc), doc["item_id"].encode())
        except DecodeError as exc:
            assert exc.reason
            continue
        assert isinstance(item, Item)
        catalog.upsert(item)
    catalog.publish()
    index = catalog.index
    assert np.isfinite(index.popularity).all()
    assert np.isfinite(index.vectors).all()
