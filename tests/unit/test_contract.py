"""The wire contract: schemas are valid, samples validate, and every record the app emits does."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from app.core.catalog import Catalog
from app.core.codec import SCHEMA_DIR, decode_event, decode_item, encode_event, load_schema
from app.core.processor import Processor
from app.core.records import Event, EventType, Source
from app.core.scoring.package import LoadedModel
from app.core.settings import Settings
from tests.conftest import T0

SCHEMAS = ("event", "item", "recommendation", "feedback", "dead_letter")
EXAMPLES = sorted((SCHEMA_DIR / "examples").glob("*.json"))


def validator(name: str) -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(load_schema(name), format_checker=jsonschema.FormatChecker())


@pytest.mark.parametrize("name", SCHEMAS)
def test_schema_files_are_valid_draft7(name: str) -> None:
    jsonschema.Draft7Validator.check_schema(load_schema(name))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_and_decode(path: Path) -> None:
    name = path.name.split(".")[0]
    doc = orjson.loads(path.read_bytes())
    validator(name).validate(doc)
    if name == "event":
        assert decode_event(path.read_bytes(), max_bytes=16384).event_id == doc["event_id"]
    else:
        assert decode_item(path.read_bytes(), None)


def test_event_types_match_schema_enum() -> None:
    enum = load_schema("event")["properties"]["type"]["enum"]
    assert sorted(enum) == sorted(t.value for t in EventType)


@pytest.mark.parametrize(
    "payload",
    [
        b'{"event_id": "e", "user_id": "u", "type": "click", "event_time": "2026-11-29T10:00:00Z"}',
        b'{"event_id": "e", "user_id": "u", "type": "search", "event_time": "2026-11-29T10:00Z"}',
        b'{"event_id": "e", "user_id": "u", "type": "view", "item_id": "i", "event_time": "now"}',
    ],
)
def test_compiled_and_reference_validators_agree_on_bad_events(payload: bytes) -> None:
    """The app's fast path (fastjsonschema) refuses what the reference validator refuses."""
    assert not validator("event").is_valid(orjson.loads(payload))
    with pytest.raises(ValueError):
        decode_event(payload, max_bytes=16384)


def emitted(
    music_catalog: Catalog,
    model: LoadedModel,
    settings: Settings,
    event_factory: Callable[..., Event],
) -> list[tuple[str, dict[str, Any]]]:
    # Two open impressions at most: the third recommendation closes the first (negatives).
    processor = Processor(
        music_catalog,
        model.ranker,
        model.spec,
        settings.replace(attribution_open=2),
        clock=lambda: T0,
    )
    store: dict[bytes, bytes] = {}
    inputs: list[tuple[bytes | None, bytes | None]] = []
    for e in [
        event_factory("search", query="jazz 爵士"),
        event_factory("view", item_id="jazz-0"),
        event_factory("click", item_id="jazz-0"),
        event_factory("add_to_cart", item_id="jazz-0"),
        event_factory("purchase", item_id="jazz-0"),
        event_factory("click", item_id="unknown-item"),
        event_factory("forget_user"),
    ]:
        inputs.append((b"u1", encode_event(e)))
    inputs += [(b"u1", inputs[2][1]), (b"u1", b"{oops"), (None, b"[]"), (b"u1", None)]
    out = []
    for offset, (key, value) in enumerate(inputs):
        outcome = processor.handle(value, Source("events", 0, offset, key), store.get)
        if outcome.state is not None:
            store[b"u1"] = outcome.state
        # A tombstone (forget_user, on the recommendations topic) has no document.
        out += [(o.role, o.document()) for o in outcome.outputs if o.value is not None]
    return out


def test_everything_the_processor_emits_validates(
    music_catalog: Catalog,
    model: LoadedModel,
    settings: Settings,
    event_factory: Callable[..., Event],
) -> None:
    records = emitted(music_catalog, model, settings, event_factory)
    roles = {
        "recommendations": "recommendation",
        "feedback": "feedback",
        "dead_letters": "dead_letter",
        "attribution": "attribution",
    }
    for role, doc in records:
        validator(roles[role]).validate(doc)
    assert {role for role, _ in records} == set(roles)
    kinds = {doc["kind"] for role, doc in records if role == "attribution"}
    assert kinds == {"positive", "negative"}
    assert sum(1 for role, _ in records if role == "dead_letters") == 3
    assert any(role == "feedback" and doc["type"] == "forget_user" for role, doc in records)
