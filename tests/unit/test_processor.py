"""The processor: one record in, state and outputs out; failures become dead letters."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from app.core.catalog import Catalog
from app.core.codec import encode_event
from app.core.processor import (
    DEAD_LETTERS,
    FEEDBACK,
    RECOMMENDATIONS,
    Outcome,
    Processor,
)
from app.core.records import (
    RULE_OUT_OF_ORDER,
    RULE_UNKNOWN_ITEM,
    RULE_WITHDRAWN_ITEM,
    DeadLetterError,
    Event,
    Source,
)
from app.core.scoring.base import RankInputs
from app.core.scoring.package import LoadedModel
from app.core.settings import Settings
from app.core.state import decode_state
from tests.conftest import T0

NO_STATE: dict[bytes, bytes] = {}


class Harness:
    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.store: dict[bytes, bytes] = {}
        self.offset = 0

    def send(self, value: bytes | None, key: bytes | None = b"u1") -> Outcome:
        outcome = self.processor.handle(
            value, Source("events", 0, self.offset, key), self.store.get
        )
        self.offset += 1
        if outcome.state is not None and outcome.user_id is not None:
            self.store[outcome.user_id.encode()] = outcome.state
        elif outcome.delete and outcome.user_id is not None:
            self.store.pop(outcome.user_id.encode(), None)
        return outcome


@pytest.fixture
def harness(music_catalog: Catalog, model: LoadedModel, settings: Settings) -> Harness:
    processor = Processor(
        music_catalog, model.ranker, model.spec, settings, clock=lambda: 1_790_000_000_500
    )
    return Harness(processor)


def roles(outcome: Outcome) -> list[str]:
    return [o.role for o in outcome.outputs]


def test_view_updates_state_and_emits_feedback_only(
    harness: Harness, event_factory: Callable[..., Event]
) -> None:
    outcome = harness.send(encode_event(event_factory("view", item_id="jazz-0")))
    assert outcome.status == "processed"
    assert roles(outcome) == [FEEDBACK]
    state = decode_state(harness.store[b"u1"])
    assert state.history[0].item_id == "jazz-0"


def test_click_emits_recommendation_then_feedback(
    harness: Harness, event_factory: Callable[..., Event]
) -> None:
    e = event_factory("click", item_id="jazz-0")
    outcome = harness.send(encode_event(e))
    assert roles(outcome) == [RECOMMENDATIONS, FEEDBACK]
    rec = outcome.outputs[0].document()
    assert rec["event_id"] == e.event_id and rec["emit_time"] == "2026-09-21T14:13:20.500Z"
    # The impression opened: the sweeper indexes the user by when its window ends.
    window_ms = int(harness.processor.settings.attribution_window_s * 1000)
    assert outcome.next_due == e.event_time_ms + window_ms
    assert outcome.outputs[0].key == b"u1"
    state = decode_state(harness.store[b"u1"])
    assert state.last_recommendation is not None
    assert list(state.last_recommendation.item_ids) == [i["item_id"] for i in rec["items"]]


def test_redelivery_reemits_but_does_not_reapply(
    harness: Harness, event_factory: Callable[..., Event]
) -> None:
    raw = encode_event(event_factory("click", item_id="jazz-0"))
    first = harness.send(raw)
    state_after_first = harness.store[b"u1"]
    again = harness.send(raw)
    assert again.status == "duplicate"
    assert decode_state(harness.store[b"u1"]) == decode_state(state_after_first)
    assert again.outputs[0].value == first.outputs[0].value  # same ranking, same record
    assert again.outputs[1].document()["duplicate"] is True


def test_feedback_attributes_click_to_previous_recommendation(
    harness: Harness, event_factory: Callable[..., Event]
) -> None:
    search = event_factory("search", query="classical")
    shown = harness.send(encode_event(search)).outputs[0].document()["items"]
    clicked = shown[2]["item_id"]
    outcome = harness.send(encode_event(event_factory("click", item_id=clicked)))
    feedback = outcome.outputs[1].document()
    assert feedback["last_recommendation"]["event_id"] == search.event_id
    assert feedback["last_recommendation"]["position"] == 2


def test_key_must_be_the_user_id(harness: Harness, event_factory: Callable[..., Event]) -> None:
    outcome = harness.send(encode_event(event_factory("click", user_id="u1")), key=b"u2")
    assert outcome.status == "dead_letter" and roles(outcome) == [DEAD_LETTERS]
    letter = outcome.outputs[0].document()
    assert letter["error"] == "key_mismatch" and "user_id" in letter["reason"]
    assert harness.store == {}


def test_unreadable_state_is_reset_not_fatal(
    harness: Harness, event_factory: Callable[..., Event]
) -> None:
    harness.store[b"u1"] = b'{"v": 0}'
    outcome = harness.send(encode_event(event_factory("click", item_id="jazz-0")))
    assert outcome.status == "processed" and outcome.state_reset
    assert len(decode_state(harness.store[b"u1"]).history) == 1


def test_scoring_failure_becomes_dead_letter(
    music_catalog: Catalog,
    model: LoadedModel,
    settings: Settings,
    event_factory: Callable[..., Event],
) -> None:
    class Broken:
        model_version = "broken"

        def score(self, inputs: RankInputs) -> np.ndarray:
            raise RuntimeError("GPU fell off")

    harness = Harness(Processor(music_catalog, Broken(), model.spec, settings, clock=lambda: T0))
    raw = encode_event(event_factory("click", item_id="jazz-0"))
    outcome = harness.send(raw)
    # The event is applied to state (so a replay is deduplicated), and dead-lettered because
    # it got no recommendation.
    assert outcome.error is DeadLetterError.PROCESSING_ERROR
    assert [o.role for o in outcome.outputs] == [DEAD_LETTERS, FEEDBACK]
    letter = outcome.outputs[0].document()
    assert letter["error"] == "processing_error" and "GPU fell off" in letter["reason"]
    assert len(decode_state(harness.store[b"u1"]).history) == 1
    ok = harness.send(encode_event(event_factory("view", item_id="jazz-1")))  # and it goes on
    assert ok.status == "processed"
    # Replaying the dead letter once the model works: its recommendation, no double count.
    fixed = Harness(Processor(music_catalog, model.ranker, model.spec, settings, clock=lambda: T0))
    fixed.store = harness.store
    replay = fixed.send(raw)
    assert replay.status == "duplicate" and replay.recommendation is not None
    assert len(decode_state(fixed.store[b"u1"]).history) == 2


def test_forget_user_deletes_state_and_tells_downstream(
    harness: Harness, event_factory: Callable[..., Event]
) -> None:
    harness.send(encode_event(event_factory("click", item_id="jazz-0")))
    assert b"u1" in harness.store
    forget = harness.send(encode_event(event_factory("forget_user", item_id=None)))
    assert forget.status == "forgotten" and forget.delete and forget.state is None
    assert b"u1" not in harness.store
    tombstone, notice = forget.outputs
    assert (tombstone.role, tombstone.key, tombstone.value) == (RECOMMENDATIONS, b"u1", None)
    assert notice.role == FEEDBACK and notice.document()["type"] == "forget_user"
    assert "last_recommendation" not in notice.document()
    # Forgetting twice (a replay) is harmless; a later event starts a new, empty state.
    assert harness.send(encode_event(event_factory("forget_user", item_id=None))).delete
    again = harness.send(encode_event(event_factory("view", item_id="rock-1")))
    state = decode_state(again.state or b"")
    assert [i.item_id for i in state.history] == ["rock-1"]
    assert state.last_recommendation is None


def test_forget_user_inside_a_batch(
    music_catalog: Catalog,
    model: LoadedModel,
    settings: Settings,
    event_factory: Callable[..., Event],
) -> None:
    """Events before the forget are answered in order; the batch ends with the state deleted,
    unless the user acts again after it."""
    processor = Processor(music_catalog, model.ranker, model.spec, settings, clock=lambda: T0)
    events = [
        event_factory("click", user_id="a", item_id="jazz-0"),
        event_factory("forget_user", user_id="a"),
        event_factory("click", user_id="b", item_id="rock-1"),
        event_factory("forget_user", user_id="b"),
        event_factory("view", user_id="b", item_id="rock-4"),
    ]
    records = [
        (encode_event(e), Source("events", 0, n, e.user_id.encode())) for n, e in enumerate(events)
    ]
    store = {b"a": b"stale", b"b": b"stale"}
    outcomes = processor.handle_batch(records, store.get).outcomes
    assert [o.status for o in outcomes] == [
        "processed", "forgotten", "processed", "forgotten", "processed"
    ]  # fmt: skip
    assert outcomes[0].recommendation is not None  # the click before the forget is answered
    assert [o.delete for o in outcomes] == [False, True, False, False, False]
    assert [o.state is not None for o in outcomes] == [False, False, False, False, True]
    b_state = decode_state(outcomes[4].state or b"")
    assert [i.item_id for i in b_state.history] == ["rock-4"]


def test_event_times_far_from_the_record_timestamp_are_dead_lettered(
    harness: Harness, event_factory: Callable[..., Event]
) -> None:
    processor = harness.processor
    at = T0 + 5_000

    def send(time_ms: int) -> Outcome:
        event = event_factory("view", item_id="jazz-0", time_ms=time_ms)
        return processor.handle(
            encode_event(event), Source("events", 0, 1, b"u1", at), NO_STATE.get
        )

    assert send(at - 29 * 86_400_000).status == "processed"  # a month-old retry: fine
    assert send(at + 299_000).status == "processed"  # clock skew: fine
    for time_ms in (at - 31 * 86_400_000, at + 301_000, 0, 253_402_300_799_000):
        outcome = send(time_ms)
        assert outcome.error is DeadLetterError.TIME_OUT_OF_RANGE
        (letter,) = [o.document() for o in outcome.outputs if o.role == DEAD_LETTERS]
        assert "record's timestamp" in letter["reason"]
    # The reference is the record's timestamp, not the clock: a replay a year later decides
    # the same way.
    later = Processor(
        processor.catalog,
        processor.ranker.scorer,
        processor.spec,
        processor.settings,
        clock=lambda: at + 365 * 86_400_000,
    )
    event = event_factory("view", item_id="jazz-0", time_ms=at - 1000)
    replay = later.handle(encode_event(event), Source("events", 0, 1, b"u1", at), NO_STATE.get)
    assert replay.status == "processed"
    # 0 turns the checks off.
    lax = Processor(
        processor.catalog,
        processor.ranker.scorer,
        processor.spec,
        processor.settings.replace(max_event_age_s=0, max_event_future_s=0),
        clock=lambda: T0,
    )
    event = event_factory("view", item_id="jazz-0", time_ms=0)
    assert lax.handle(
        encode_event(event), Source("events", 0, 1, b"u1", at), NO_STATE.get
    ).status == ("processed")


def test_documented_rules_are_applied_and_named(
    harness: Harness, event_factory: Callable[..., Event], music_catalog: Catalog
) -> None:
    withdrawn = music_catalog.index.item("jazz-3")
    assert withdrawn is not None
    music_catalog.upsert(dataclasses.replace(withdrawn, withdrawn=True))
    music_catalog.publish()
    first = harness.send(encode_event(event_factory("click", item_id="jazz-3")))
    assert first.status == "processed" and first.rules == (RULE_WITHDRAWN_ITEM,)
    assert first.recommendation is not None
    assert "jazz-3" not in {i.item_id for i in first.recommendation.items}
    unknown = harness.send(encode_event(event_factory("view", item_id="no-such-item")))
    assert unknown.status == "processed" and unknown.rules == (RULE_UNKNOWN_ITEM,)
    late = harness.send(encode_event(event_factory("view", item_id="rock-1", time_ms=T0 - 60_000)))
    assert late.rules == (RULE_OUT_OF_ORDER,)
    state = decode_state(late.state or b"")
    assert state.affinity_time_ms > T0  # time never went back
    assert [i.item_id for i in state.history] == ["jazz-3", "no-such-item", "rock-1"]
