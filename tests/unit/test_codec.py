"""Decoding events strictly, and encoding every emitted record."""

from __future__ import annotations

import base64
import hashlib

import jsonschema
import orjson
import pytest

from app.core.codec import (
    DecodeError,
    dead_letter_key,
    decode_event,
    decode_item,
    encode_dead_letter,
    encode_event,
    format_time_ms,
    load_schema,
    parse_time_ms,
)
from app.core.records import DeadLetterError, EventType, Item, Source

GOOD = {
    "event_id": "e1",
    "user_id": "u1",
    "type": "click",
    "item_id": "i1",
    "event_time": "2026-11-29T10:15:00.123Z",
    "context": {"device": "ios", "locale": "ja-JP"},
}


def raw(**changes: object) -> bytes:
    doc = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in doc.items() if v is not None})


def test_valid_event_decodes() -> None:
    event = decode_event(raw(), max_bytes=4096)
    assert event.type is EventType.CLICK
    assert event.item_id == "i1"
    assert event.event_time_ms == parse_time_ms("2026-11-29T10:15:00.123+00:00")
    assert event.context == {"device": "ios", "locale": "ja-JP"}


def test_search_needs_query_not_item() -> None:
    event = decode_event(raw(type="search", item_id=None, query="kind of blue"), max_bytes=4096)
    assert event.query == "kind of blue"
    with pytest.raises(DecodeError) as err:
        decode_event(raw(type="search", item_id=None), max_bytes=4096)
    assert err.value.error is DeadLetterError.SCHEMA_VIOLATION
    assert "query" in err.value.reason


def test_encode_decode_round_trip() -> None:
    event = decode_event(raw(), max_bytes=4096)
    assert decode_event(encode_event(event), max_bytes=4096) == event


@pytest.mark.parametrize(
    ("payload", "error", "reason_part"),
    [
        (b"{not json", DeadLetterError.MALFORMED_JSON, ""),
        (b"[1, 2]", DeadLetterError.NOT_AN_OBJECT, "list"),
        (raw(type="like"), DeadLetterError.UNKNOWN_TYPE, "'like'"),
        # Found by fuzzing: an unhashable type used to raise TypeError out of the decoder.
        (raw(type=["click"]), DeadLetterError.UNKNOWN_TYPE, "['click']"),
        (raw(type={"a": 1}), DeadLetterError.UNKNOWN_TYPE, "{'a': 1}"),
        (raw(user_id=None), DeadLetterError.MISSING_ID, "user_id"),
        (raw(event_id=""), DeadLetterError.MISSING_ID, "event_id"),
        (raw(item_id=None), DeadLetterError.MISSING_ID, "item_id"),
        (raw(event_time="yesterday"), DeadLetterError.SCHEMA_VIOLATION, "event_time"),
        (raw(event_time="2026-11-29T10:15:00"), DeadLetterError.SCHEMA_VIOLATION, "event_time"),
        (raw(surprise=1), DeadLetterError.SCHEMA_VIOLATION, "surprise"),
        (raw(item_id=7), DeadLetterError.SCHEMA_VIOLATION, "item_id"),
        (raw(query="x" * 600, type="search"), DeadLetterError.SCHEMA_VIOLATION, "query"),
    ],
)
def test_bad_events_say_why(payload: bytes, error: DeadLetterError, reason_part: str) -> None:
    with pytest.raises(DecodeError) as err:
        decode_event(payload, max_bytes=4096)
    assert err.value.error is error
    assert reason_part in err.value.reason


def test_oversize_is_refused_before_parsing() -> None:
    with pytest.raises(DecodeError) as err:
        decode_event(raw(query="q" * 100, type="search"), max_bytes=50)
    assert err.value.error is DeadLetterError.OVERSIZE


def test_item_and_tombstone() -> None:
    item = decode_item(orjson.dumps({"item_id": "i", "title": "T", "category": "c"}), b"i")
    assert item == Item("i", "T", "c")
    assert decode_item(None, b"i") == "i"
    with pytest.raises(DecodeError):
        decode_item(b'{"item_id": "i"}', b"i")


def test_dead_letter_keeps_original_bytes_and_position() -> None:
    value = b"\xff\xfe not utf-8"
    doc = orjson.loads(
        encode_dead_letter(
            DeadLetterError.MALFORMED_JSON,
            "bad",
            Source("events", 3, 42, b"u1"),
            value,
            received_time_ms=0,
        )
    )
    assert base64.b64decode(doc["value_b64"]) == value
    assert base64.b64decode(doc["key_b64"]) == b"u1"
    assert (doc["topic"], doc["partition"], doc["offset"]) == ("events", 3, 42)
    assert doc["received_time"] == format_time_ms(0) == "1970-01-01T00:00:00.000Z"
    assert (doc["value_size"], doc["value_truncated"]) == (len(value), False)


def test_dead_letters_of_huge_records_are_bounded() -> None:
    """A record at the broker's 1 MB limit must not come back as a 1.4 MB dead letter that the
    broker refuses: the copy is cut, its size and digest are kept, and so is the reason."""
    value = b"A" * 1_000_000
    key = b"k" * 100_000
    doc = orjson.loads(
        encode_dead_letter(
            DeadLetterError.OVERSIZE,
            "r" * 50_000,
            Source("events", 0, 1, key),
            value,
            received_time_ms=0,
            max_bytes=4096,
        )
    )
    assert base64.b64decode(doc["value_b64"]) == value[:4096]
    assert base64.b64decode(doc["key_b64"]) == key[:4096]
    assert doc["value_truncated"] is True and doc["value_size"] == 1_000_000
    assert doc["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert len(doc["reason"]) < 1100 and doc["reason"].endswith("(50000 characters)")
    jsonschema.validate(doc, load_schema("dead_letter"))
    assert dead_letter_key(key) == hashlib.sha256(key).digest()
    assert dead_letter_key(b"u1") == b"u1"


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id"])
def test_ids_with_control_characters_are_refused(field: str) -> None:
    doc = {
        "event_id": "e1",
        "user_id": "u1",
        "type": "view",
        "item_id": "i1",
        "event_time": "2026-11-29T10:00:00Z",
    }
    doc[field] = "a\x00b"
    with pytest.raises(DecodeError) as caught:
        decode_event(orjson.dumps(doc), max_bytes=16384)
    assert caught.value.error is DeadLetterError.SCHEMA_VIOLATION


def test_forget_user_needs_no_item() -> None:
    raw = orjson.dumps(
        {
            "event_id": "e1",
            "user_id": "u1",
            "type": "forget_user",
            "event_time": "2026-11-29T10:00:00Z",
        }
    )
    event = decode_event(raw, max_bytes=16384)
    assert event.type is EventType.FORGET_USER and event.item_id is None
