"""User state transitions: bounded, idempotent, decaying; and its stored form in RocksDB."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from rocksdict import Rdict

from app.core.attribution import Acted, Impression
from app.core.records import Event, Item
from app.core.state import (
    Interaction,
    LastRecommendation,
    StateLimits,
    UserState,
    apply_event,
    decode_state,
    encode_state,
    state_size_bound,
)
from app.dev.bench.state_size import sizes
from tests.conftest import T0

LIMITS = StateLimits(
    history_size=5,
    recent_event_ids=8,
    max_query_terms=4,
    max_purchased=3,
    max_affinities=3,
    affinity_half_life_s=3600.0,
)


def run(events: list[Event], items: dict[str, Item] | None = None) -> UserState:
    state: UserState | None = None
    for e in events:
        state = apply_event(state, e, (items or {}).get(e.item_id or ""), LIMITS)
    assert state is not None
    return state


def test_click_updates_history_affinity_and_counters(
    event_factory: Callable[..., Event], item_factory: Callable[..., Item]
) -> None:
    item = item_factory("i1", "jazz", tags=("piano",))
    state = run([event_factory("click", item_id="i1")], {"i1": item})
    assert [(i.item_id, i.type) for i in state.history] == [("i1", "click")]
    assert dict(state.category_affinity) == {"jazz": 2.0}
    assert dict(state.tag_affinity) == {"piano": 2.0}
    assert state.counter("click") == 1
    assert state.last_event_id == "e0"


def test_redelivered_event_is_applied_once(
    event_factory: Callable[..., Event], item_factory: Callable[..., Item]
) -> None:
    e = event_factory("purchase", item_id="i1")
    once = run([e], {"i1": item_factory("i1")})
    twice = apply_event(once, e, item_factory("i1"), LIMITS)
    assert twice == once
    assert once.counter("purchase") == 1


def test_state_is_bounded(
    event_factory: Callable[..., Event], item_factory: Callable[..., Item]
) -> None:
    items = {f"i{n}": item_factory(f"i{n}", f"cat{n}", tags=(f"t{n}",)) for n in range(50)}
    events = [event_factory("purchase", item_id=f"i{n}") for n in range(50)]
    events += [event_factory("search", query=f"word{n} other{n}") for n in range(10)]
    state = run(events, items)
    assert len(state.history) == 5
    assert state.history[-1].item_id == "i49"
    assert state.purchased == ("i47", "i48", "i49")
    assert len(state.category_affinity) <= 3
    assert len(state.tag_affinity) <= 3
    assert len(state.query_terms) == 4
    assert len(state.recent_event_ids) == 8
    assert len(encode_state(state)) < 2000


def test_affinity_decays_with_half_life(
    event_factory: Callable[..., Event], item_factory: Callable[..., Item]
) -> None:
    items = {"j": item_factory("j", "jazz"), "r": item_factory("r", "rock")}
    state = run(
        [
            event_factory("click", item_id="j", time_ms=0),
            event_factory("click", item_id="r", time_ms=3_600_000),
        ],
        items,
    )
    assert dict(state.category_affinity) == {"rock": 2.0, "jazz": 1.0}
    categories, _ = state.affinities_at(7_200_000, 3600.0)
    assert categories == pytest.approx({"rock": 1.0, "jazz": 0.5})


def test_late_event_does_not_move_time_backwards(
    event_factory: Callable[..., Event], item_factory: Callable[..., Item]
) -> None:
    items = {"j": item_factory("j", "jazz")}
    state = run(
        [
            event_factory("click", item_id="j", time_ms=10_000),
            event_factory("click", item_id="j", time_ms=5_000),
        ],
        items,
    )
    assert state.affinity_time_ms == 10_000
    assert dict(state.category_affinity) == {"jazz": 4.0}


def test_search_keeps_recent_terms_in_order(event_factory: Callable[..., Event]) -> None:
    state = run(
        [event_factory("search", query="jazz piano"), event_factory("search", query="jazz trio")]
    )
    assert state.query_terms == ("piano", "jazz", "trio")


def test_unknown_item_still_counts_in_history(event_factory: Callable[..., Event]) -> None:
    state = run([event_factory("view", item_id="ghost")])
    assert state.history[0].item_id == "ghost"
    assert state.category_affinity == ()


def test_round_trip_through_rocksdb(
    tmp_path: Path, event_factory: Callable[..., Event], item_factory: Callable[..., Item]
) -> None:
    items = {"i1": item_factory("i1", "jazz", tags=("piano",))}
    state = run(
        [
            event_factory("click", item_id="i1"),
            event_factory("search", query="爵士 piano"),
            event_factory("purchase", item_id="i1"),
        ],
        items,
    )
    db = Rdict(str(tmp_path / "db"))
    db[b"u1"] = encode_state(state)
    db.close()
    reopened = Rdict(str(tmp_path / "db"))
    try:
        stored = reopened[b"u1"]
        assert isinstance(stored, bytes)
        assert decode_state(stored) == state
    finally:
        reopened.close()


def test_unknown_state_version_is_refused() -> None:
    with pytest.raises(ValueError, match="version"):
        decode_state(b'{"v": 99}')


def test_a_replay_longer_than_the_id_window_is_still_applied_once(
    event_factory: Callable[..., Event],
) -> None:
    # A crash can leave more of one user's records uncommitted than the event-id window holds;
    # the record offsets still say which were applied.
    limits = StateLimits(recent_event_ids=4)
    events = [event_factory("click", item_id=f"i{n}") for n in range(20)]
    state: UserState | None = None
    for offset, event in enumerate(events):
        state = apply_event(state, event, None, limits, (3, 100 + offset))
    assert state is not None and state.applied_offset == (3, 119)
    replayed = state
    for offset, event in enumerate(events):
        assert replayed.has_applied(event.event_id, (3, 100 + offset))
        replayed = apply_event(replayed, event, None, limits, (3, 100 + offset))
    assert replayed == state
    assert decode_state(encode_state(state)) == state
    # A new record after the last one applied is new, even on the same partition.
    later = apply_event(state, event_factory("click", item_id="i99"), None, limits, (3, 120))
    assert later.counter("click") == 21


@pytest.mark.parametrize("alphabet", ["x", "爵", "\U0001d11e"])
def test_a_user_with_endless_hostile_events_stays_under_the_size_bound(alphabet: str) -> None:
    """Every id at its schema maximum, in 1-, 3- and 4-byte UTF-8 characters; every query
    full of long terms. The state grows until the lists are full, then stops
    (``scripts/state-size`` runs the same user for a million events)."""
    limits = StateLimits()
    bound = state_size_bound(limits, top_k=10, impressions=0)  # apply_event opens none
    found = sizes(6_000, [2_000, 6_000], limits, alphabet)
    assert found[6_000] <= bound
    # Full after 1,250 events (1,000 distinct items seen): three times as many add nothing
    # (numbers may lengthen).
    assert abs(found[6_000] - found[2_000]) < 0.02 * found[2_000]
    print(f"\nstate size, ids of {alphabet!r}: {found} bytes (bound {bound})")


def test_full_attribution_impressions_stay_under_the_bound() -> None:
    """Eight open and eight closed impressions, every string at its maximum, every item acted
    on three ways: the worst a state's attribution part can be."""

    def s(prefix: str, n: int) -> str:
        return f"{prefix}{n}".ljust(128, "\U0001d11e")

    def impression(n: int, closed: bool) -> Impression:
        return Impression(
            request_id=s("r", n),
            kind="next_items",
            model_version=s("v", n),
            items=tuple(s(f"i{n}-", k) for k in range(10)),
            shown_ms=T0,
            due_ms=T0 + 1_800_000,
            source=(3, 10**12),
            acted=tuple(
                Acted(k, action, s(f"e{k}", n), T0 + k)
                for k in range(10)
                for action in ("click", "add_to_cart", "purchase")
            ),
            closed_reason="evicted" if closed else None,
            closed_ms=T0 if closed else None,
            closed_by=s("c", n) if closed else None,
        )

    state = UserState(
        user_id=s("u", 0),
        impressions=tuple(impression(n, False) for n in range(8)),
        closed_impressions=tuple(impression(n, True) for n in range(8, 16)),
    )
    size = len(encode_state(state))
    assert decode_state(encode_state(state)) == state
    assert size <= state_size_bound(StateLimits(), top_k=10) - state_size_bound(
        StateLimits(), top_k=10, impressions=0
    )


def test_an_event_keeps_what_attribution_owns(
    event_factory: Callable[..., Event], item_factory: Callable[..., Item]
) -> None:
    """apply_event builds the next state positionally: the fields it does not own (the user,
    the last recommendation, the impressions) come through unchanged."""
    shown = Impression("r1", "next_items", "1", ("i1", "i2"), T0, T0 + 60_000, (0, 3))
    closed = Impression("r0", "next_items", "1", ("i3",), T0, T0 + 1, (0, 1), (), "window", 9)
    last = LastRecommendation("r1", "1", ("i1", "i2"))
    before = UserState("u1").with_attribution(last, (shown,), (closed,))
    after = apply_event(before, event_factory(item_id="i1"), item_factory("i1", "jazz"), LIMITS)
    assert after.user_id == "u1"
    assert after.last_recommendation == last
    assert (after.impressions, after.closed_impressions) == ((shown,), (closed,))
    assert [i.item_id for i in after.history] == ["i1"]


# A state as version 1 (JSON) wrote it, before the binary format: still read (lazy migration).
V1_STATE = (
    b'{"v":1,"u":"u1","h":[["i1","click",1000],["i3","view",2000]],"ca":[["jazz",2.5]],'
    b'"ta":[["piano",1.25]],"at":2000,"q":["blue","note"],"p":["i9"],'
    b'"c":[["click",1],["view",1]],"le":"e2","re":["e1","e2"],"lr":["r1","1.1.0",["i2","i3"]],'
    b'"t":2000,"ao":[0,8],"im":[["r1","next_items","1.1.0",["i2","i3"],1000,61000,[0,7],'
    b'[[1,"click","e2",2000]],null,null,null]],'
    b'"ic":[["r0","search","1.1.0",["i4"],500,900,[0,3],[],"window",900,"e1"]]}'
)


def v1_equivalent() -> UserState:
    shown = Impression(
        "r1",
        "next_items",
        "1.1.0",
        ("i2", "i3"),
        1000,
        61000,
        (0, 7),
        (Acted(1, "click", "e2", 2000),),
    )
    closed = Impression("r0", "search", "1.1.0", ("i4",), 500, 900, (0, 3), (), "window", 900, "e1")
    return UserState(
        "u1",
        (Interaction("i1", "click", 1000), Interaction("i3", "view", 2000)),
        (("jazz", 2.5),),
        (("piano", 1.25),),
        2000,
        ("blue", "note"),
        ("i9",),
        (("click", 1), ("view", 1)),
        "e2",
        ("e1", "e2"),
        LastRecommendation("r1", "1.1.0", ("i2", "i3")),
        2000,
        (0, 8),
        (shown,),
        (closed,),
        ("i1", "i3"),  # seen: before version 3, the history's items
    )


def test_a_version_1_json_state_is_read_and_rewritten_as_version_3() -> None:
    state = decode_state(V1_STATE)
    assert state == v1_equivalent()
    rewritten = encode_state(state)
    assert rewritten[:1] != b"{" and decode_state(rewritten) == state
    assert len(rewritten) < 0.75 * len(V1_STATE)  # the binary form is the smaller


def test_the_version_3_layout_is_pinned() -> None:
    """The stored bytes of a known state: a changed field order in UserState or in the named
    tuples it holds would make stored states unreadable, so it must be a new version."""
    assert encode_state(v1_equivalent()).hex() == V3_HEX


def test_a_version_2_state_is_read_with_its_history_as_seen() -> None:
    """Version 2 (MessagePack without the seen items) is still read: the lazy migration takes
    the seen items from the kept history, and the next write is version 3."""
    state = decode_state(bytes.fromhex(V2_HEX))
    assert state == v1_equivalent()
    assert encode_state(state)[3:4] == b"\x03"  # an array16 header (3 bytes), the version


V3_HEX = (
    "dc001103a275319293a26931a5636c69636bcd03e893a26933a476696577cd07d09192a46a617a7acb400400"
    "00000000009192a57069616e6fcb3ff4000000000000cd07d092a4626c7565a46e6f746591a269399292a563"
    "6c69636b0192a47669657701a2653292a26531a2653293a27231a5312e312e3092a26932a26933cd07d09200"
    "08919ba27231aa6e6578745f6974656d73a5312e312e3092a26932a26933cd03e8cdee48920007919401a563"
    "6c69636ba26532cd07d0c0c0c0919ba27230a6736561726368a5312e312e3091a26934cd01f4cd0384920003"
    "90a677696e646f77cd0384a2653192a26931a26933"
)


V2_HEX = (
    "dc001002a275319293a26931a5636c69636bcd03e893a26933a476696577cd07d09192a46a617a7acb400400"
    "00000000009192a57069616e6fcb3ff4000000000000cd07d092a4626c7565a46e6f746591a269399292a563"
    "6c69636b0192a47669657701a2653292a26531a2653293a27231a5312e312e3092a26932a26933cd07d09200"
    "08919ba27231aa6e6578745f6974656d73a5312e312e3092a26932a26933cd03e8cdee48920007919401a563"
    "6c69636ba26532cd07d0c0c0c0919ba27230a6736561726368a5312e312e3091a26934cd01f4cd0384920003"
    "90a677696e646f77cd0384a26531"
)


def test_unreadable_or_unknown_states_are_refused() -> None:
    for raw in (
        b'{"v": 99}',
        msgpack.packb((99, "u")),
        msgpack.packb({"v": 2}),
        msgpack.packb((2, "u")),
        b"\xc1",
        b"",
    ):
        with pytest.raises(ValueError):
            decode_state(raw)
