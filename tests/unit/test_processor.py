"""The processor: one record in, state and outputs out; failures become dead letters."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import orjson
import pytest

from app.catalog import Catalog
from app.codec import encode_event
from app.processor import DEAD_LETTERS, FEEDBACK, RECOMMENDATIONS, Outcome, Processor
from app.records import DeadLetterError, Event, Source
from app.scoring.base import RankInputs
from app.scoring.package import LoadedModel
from app.settings import Settings
from app.state import decode_state


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
    rec = orjson.loads(outcome.outputs[0].value)
    assert rec["event_id"] == e.event_id and rec["emit_time"] == "2026-09-21T14:13:20.500Z"
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
    assert orjson.loads(again.outputs[1].value)["duplicate"] is True


def test_feedback_attributes_click_to_previous_recommendation(
    harness: Harness, event_factory: Callable[..., Event]
) -> None:
    search = event_factory("search", query="classical")
    shown = orjson.loads(harness.send(encode_event(search)).outputs[0].value)["items"]
    clicked = shown[2]["item_id"]
    outcome = harness.send(encode_event(event_factory("click", item_id=clicked)))
    feedback = orjson.loads(outcome.outputs[1].value)
    assert feedback["last_recommendation"]["event_id"] == search.event_id
    assert feedback["last_recommendation"]["position"] == 2


def test_key_must_be_the_user_id(harness: Harness, event_factory: Callable[..., Event]) -> None:
    outcome = harness.send(encode_event(event_factory("click", user_id="u1")), key=b"u2")
    assert outcome.status == "dead_letter" and roles(outcome) == [DEAD_LETTERS]
    letter = orjson.loads(outcome.outputs[0].value)
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

    harness = Harness(Processor(music_catalog, Broken(), model.spec, settings))
    raw = encode_event(event_factory("click", item_id="jazz-0"))
    outcome = harness.send(raw)
    # The event is applied to state (so a replay is deduplicated), and dead-lettered because
    # it got no recommendation.
    assert outcome.error is DeadLetterError.PROCESSING_ERROR
    assert [o.role for o in outcome.outputs] == [DEAD_LETTERS, FEEDBACK]
    letter = orjson.loads(outcome.outputs[0].value)
    assert letter["error"] == "processing_error" and "GPU fell off" in letter["reason"]
    assert len(decode_state(harness.store[b"u1"]).history) == 1
    ok = harness.send(encode_event(event_factory("view", item_id="jazz-1")))  # and it goes on
    assert ok.status == "processed"
    # Replaying the dead letter once the model works: its recommendation, no double count.
    fixed = Harness(Processor(music_catalog, model.ranker, model.spec, settings))
    fixed.store = harness.store
    replay = fixed.send(raw)
    assert replay.status == "duplicate" and replay.recommendation is not None
    assert len(decode_state(fixed.store[b"u1"]).history) == 2
