"""Decoded states are reused only while the table holds the bytes they came from."""

from __future__ import annotations

import dataclasses

from app.core.attribution import Impression
from app.core.state import LastRecommendation, UserState, decode_state, encode_state
from app.core.state_cache import DecodedStates


def test_a_hit_needs_the_same_bytes_and_the_oldest_user_goes_first() -> None:
    cache = DecodedStates(2)
    a, b, c = UserState("a"), UserState("b"), UserState("c")
    cache.put("a", encode_state(a), a)
    cache.put("b", encode_state(b), b)
    assert cache.get("a", encode_state(a)) is a  # equal bytes, another object: still a hit
    cache.put("c", encode_state(c), c)  # "b" was used least lately
    assert cache.get("b", encode_state(b)) is None
    assert cache.get("a", encode_state(a)) is a
    # Something else wrote the table (the sweeper, a restore): the bytes differ, so a miss.
    newer = dataclasses.replace(a, updated_ms=5)
    assert cache.get("a", encode_state(newer)) is None
    assert (cache.hits, cache.misses, len(cache)) == (2, 2, 2)
    cache.discard("a")
    assert cache.get("a", encode_state(a)) is None


def test_capacity_zero_keeps_nothing() -> None:
    cache = DecodedStates(0)
    state = UserState("u")
    cache.put("u", encode_state(state), state)
    assert len(cache) == 0 and cache.get("u", encode_state(state)) is None


def test_with_attribution_changes_those_three_fields_and_keeps_every_other() -> None:
    """with_attribution builds the state positionally (faster than dataclasses.replace): a new
    field in UserState must not be dropped or shifted."""
    values: dict[str, object] = {}
    for n, f in enumerate(dataclasses.fields(UserState)):
        values[f.name] = f"{f.name}-{n}"  # a distinct marker per field
    state = UserState(**values)  # type: ignore[arg-type]
    last = LastRecommendation("e", "1", ("x",))
    shown = (Impression("r", "next_items", "1", ("x",), 1, 2, (0, 1)),)
    after = state.with_attribution(last, shown, ())
    assert after == dataclasses.replace(
        state, last_recommendation=last, impressions=shown, closed_impressions=()
    )
    assert decode_state(encode_state(UserState("u").with_attribution(last, shown, shown)))
