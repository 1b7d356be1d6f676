"""The one module that encodes and decodes wire records, validated against ``schemas/``."""

from __future__ import annotations

import base64
import functools
import hashlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

from app.core.attribution import Impression, Positive, unacted
from app.core.records import (
    ITEM_EVENTS,
    DeadLetterError,
    Event,
    EventType,
    Item,
    RankedItem,
    Recommendation,
    Source,
)


def schema_dir(source_root: Path, prefix: Path) -> Path:
    """The JSON Schemas: ``schemas/`` of a source checkout, else the copy an installed wheel
    carries (``share/liverank/schemas`` under the environment's prefix, as in the images).

    >>> schema_dir(Path("/nowhere"), Path("/opt/venv")).as_posix()
    '/opt/venv/share/liverank/schemas'
    """
    checkout = source_root / "schemas"
    return checkout if checkout.is_dir() else prefix / "share" / "liverank" / "schemas"


SCHEMA_DIR = schema_dir(Path(__file__).resolve().parents[2], Path(sys.prefix))
SCHEMA_VERSION = 1
_EVENT_TYPES = frozenset(t.value for t in EventType)


class DecodeError(ValueError):
    """A record that breaks its contract; ``error`` says which way, ``reason`` says how."""

    def __init__(self, error: DeadLetterError, reason: str) -> None:
        super().__init__(f"{error.value}: {reason}")
        self.error = error
        self.reason = reason


def load_schema(name: str) -> dict[str, Any]:
    """The parsed JSON Schema ``schemas/<name>.v1.json``."""
    schema: dict[str, Any] = orjson.loads(
        (SCHEMA_DIR / f"{name}.v{SCHEMA_VERSION}.json").read_bytes()
    )
    return schema


@cache
def validator(name: str) -> Callable[[Any], Any]:
    """A compiled validator for a schema; compiled once per process, from the file itself."""
    compiled: Callable[[Any], Any] = fastjsonschema.compile(load_schema(name))
    return compiled


def parse_time_ms(value: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 time with a zone offset."""
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:  # the schema's pattern already demands an offset
        raise ValueError("event_time has no zone offset")
    return int(moment.timestamp() * 1000)


@functools.lru_cache(maxsize=1024)
def format_time_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds, as every emitted record writes times.

    >>> format_time_ms(0)
    '1970-01-01T00:00:00.000Z'
    """
    # Cached: a micro-batch stamps all its records with the same emit time.
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def decode_event(raw: bytes, *, max_bytes: int) -> Event:
    """Bytes from the events topic to an :class:`Event`, or :class:`DecodeError` saying why not."""
    if len(raw) > max_bytes:
        raise DecodeError(
            DeadLetterError.OVERSIZE, f"{len(raw)} bytes is over the limit of {max_bytes}"
        )
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(DeadLetterError.MALFORMED_JSON, str(exc)) from None
    if not isinstance(doc, dict):
        raise DecodeError(
            DeadLetterError.NOT_AN_OBJECT, f"expected a JSON object, got {type(doc).__name__}"
        )
    # Cheap, specific checks first so the dead-letter reason names the real problem.
    kind = doc.get("type")
    if not isinstance(kind, str) or kind not in _EVENT_TYPES:  # a list or object is unhashable
        raise DecodeError(
            DeadLetterError.UNKNOWN_TYPE,
            f"type {kind!r} is not one of {sorted(_EVENT_TYPES)}",
        )
    for id_field in ("event_id", "user_id"):
        if not doc.get(id_field):
            raise DecodeError(DeadLetterError.MISSING_ID, f"{id_field} is missing or empty")
    if kind in ITEM_EVENTS and not doc.get("item_id"):
        raise DecodeError(DeadLetterError.MISSING_ID, f"item_id is required for type {kind!r}")
    try:
        validator("event")(doc)
        time_ms = parse_time_ms(doc["event_time"])
    except fastjsonschema.JsonSchemaValueException as exc:
        raise DecodeError(DeadLetterError.SCHEMA_VIOLATION, exc.message) from None
    except ValueError as exc:
        raise DecodeError(DeadLetterError.SCHEMA_VIOLATION, f"event_time: {exc}") from None
    return Event(
        event_id=doc["event_id"],
        user_id=doc["user_id"],
        type=EventType(kind),
        event_time_ms=time_ms,
        event_time=doc["event_time"],
        item_id=doc.get("item_id"),
        query=doc.get("query"),
        context=doc.get("context"),
    )


def _event_fields(event: Event) -> dict[str, Any]:
    """The event's own fields, as both the event and the feedback records carry them."""
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": event.event_id,
        "user_id": event.user_id,
        "type": event.type.value,
        "event_time": event.event_time,
    }
    if event.item_id is not None:
        doc["item_id"] = event.item_id
    if event.query is not None:
        doc["query"] = event.query
    return doc


def encode_event(event: Event) -> bytes:
    doc = _event_fields(event)
    if event.context is not None:
        doc["context"] = event.context
    return orjson.dumps(doc)


def decode_item(raw: bytes | None, key: bytes | None) -> Item | str:
    """A catalog record to an :class:`Item`, or the item id alone for a tombstone.

    Raises :class:`DecodeError` for a record that breaks ``schemas/item.v1.json``.
    """
    if raw is None:
        if not key:
            raise DecodeError(DeadLetterError.MISSING_ID, "tombstone without a key")
        return key.decode("utf-8", errors="replace")
    doc = _validated(raw, "item")
    return Item(
        item_id=doc["item_id"],
        title=doc["title"],
        category=doc["category"],
        tags=tuple(doc.get("tags", ())),
        price=doc.get("price"),
        popularity=float(doc.get("popularity", 0.0)),
        withdrawn=bool(doc.get("withdrawn", False)),
    )


def encode_item(item: Item) -> bytes:
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "item_id": item.item_id,
        "title": item.title,
        "category": item.category,
        "tags": list(item.tags),
        "popularity": item.popularity,
        "withdrawn": item.withdrawn,
    }
    if item.price is not None:
        doc["price"] = item.price
    return orjson.dumps(doc)


def decode_recommendation(raw: bytes) -> Recommendation:
    """A recommendations-topic value to a :class:`Recommendation`, checked against
    ``schemas/recommendation.v1.json``; :class:`DecodeError` if it breaks it."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(DeadLetterError.MALFORMED_JSON, str(exc)) from None
    try:
        validator("recommendation")(doc)
        event_time_ms = parse_time_ms(doc["event_time"])
    except fastjsonschema.JsonSchemaValueException as exc:
        raise DecodeError(DeadLetterError.SCHEMA_VIOLATION, exc.message) from None
    except ValueError as exc:
        raise DecodeError(DeadLetterError.SCHEMA_VIOLATION, f"event_time: {exc}") from None
    return Recommendation(
        event_id=doc["event_id"],
        user_id=doc["user_id"],
        kind=doc["kind"],
        items=tuple(RankedItem(i["item_id"], float(i["score"]), i["source"]) for i in doc["items"]),
        model_version=doc["model_version"],
        event_time=doc["event_time"],
        event_time_ms=event_time_ms,
        query=doc.get("query"),
        degraded=bool(doc.get("degraded", False)),
        coalesced_into=doc.get("coalesced_into"),
    )


def encode_recommendation(rec: Recommendation, *, emit_time_ms: int) -> bytes:
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "event_id": rec.event_id,
        "user_id": rec.user_id,
        "kind": rec.kind,
        "items": [{"item_id": r.item_id, "score": r.score, "source": r.source} for r in rec.items],
        "model_version": rec.model_version,
        "event_time": rec.event_time,
        "emit_time": format_time_ms(emit_time_ms),
    }
    if rec.query is not None:
        doc["query"] = rec.query
    if rec.degraded:
        doc["degraded"] = True
    if rec.coalesced_into is not None:
        doc["coalesced_into"] = rec.coalesced_into
    return orjson.dumps(doc)


def encode_feedback(
    event: Event,
    *,
    emit_time_ms: int,
    duplicate: bool,
    last_recommendation: tuple[str, str, tuple[str, ...]] | None,
) -> bytes:
    """The feedback record for an applied event.

    ``last_recommendation`` is (event id, model version, item ids) of what the user was last sent.
    """
    doc = _event_fields(event)
    doc["emit_time"] = format_time_ms(emit_time_ms)
    doc["duplicate"] = duplicate
    if last_recommendation is not None:
        rec_event_id, model_version, item_ids = last_recommendation
        position = item_ids.index(event.item_id) if event.item_id in item_ids else None
        doc["last_recommendation"] = {
            "event_id": rec_event_id,
            "model_version": model_version,
            "item_ids": list(item_ids),
            "position": position,
        }
    return orjson.dumps(doc)


# Reasons quote what they found (a key, a type); a hostile record must not make them huge.
MAX_REASON_CHARS = 1000
DEFAULT_DEAD_LETTER_BYTES = 64 * 1024


def _clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, saying so.

    >>> _clip("abcdef", 4)
    'abcd... (6 characters)'
    """
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def encode_dead_letter(
    error: DeadLetterError,
    reason: str,
    source: Source,
    value: bytes,
    *,
    received_time_ms: int,
    max_bytes: int = DEFAULT_DEAD_LETTER_BYTES,
) -> bytes:
    """The dead letter for a record; at most ``max_bytes`` of its key and of its value are
    copied (a record at the broker's size limit would not fit back otherwise), but its size and
    sha256 always are."""
    key = source.key
    doc = {
        "schema_version": SCHEMA_VERSION,
        "error": error.value,
        "reason": _clip(reason, MAX_REASON_CHARS),
        "topic": source.topic,
        "partition": source.partition,
        "offset": source.offset,
        "key_b64": None if key is None else base64.b64encode(key[:max_bytes]).decode("ascii"),
        "value_b64": base64.b64encode(value[:max_bytes]).decode("ascii"),
        "value_size": len(value),
        "value_sha256": hashlib.sha256(value).hexdigest(),
        "value_truncated": len(value) > max_bytes,
        "received_time": format_time_ms(received_time_ms),
    }
    return orjson.dumps(doc)


def dead_letter_key(key: bytes | None, max_bytes: int = 1024) -> bytes | None:
    """The dead letter's own record key: the offending record's, unless absurdly long."""
    return key if key is None or len(key) <= max_bytes else hashlib.sha256(key).digest()


def shrink_dead_letter(value: bytes, max_bytes: int, note: str = "") -> bytes:
    """The same dead letter copying at most ``max_bytes`` of the record's key and value: for a
    dead letter the broker refused for its size. The original value's size and sha256 stay;
    ``note`` is added to the reason.

    >>> letter = encode_dead_letter(
    ...     DeadLetterError.OVERSIZE, "too big", Source("ev", 0, 7, b"k"), b"x" * 100,
    ...     received_time_ms=0)
    >>> small = orjson.loads(shrink_dead_letter(letter, 10, "cut"))
    >>> small["value_size"], small["value_truncated"], base64.b64decode(small["value_b64"])
    (100, True, b'xxxxxxxxxx')
    >>> small["reason"]
    'too big (cut)'
    """
    doc = orjson.loads(value)
    raw = base64.b64decode(doc["value_b64"])
    doc["value_b64"] = base64.b64encode(raw[:max_bytes]).decode("ascii")
    doc["value_truncated"] = bool(doc.get("value_truncated")) or len(raw) > max_bytes
    if doc.get("key_b64") is not None:
        key = base64.b64decode(doc["key_b64"])
        doc["key_b64"] = base64.b64encode(key[:max_bytes]).decode("ascii")
    if note:
        doc["reason"] = _clip(f"{doc['reason']} ({note})", MAX_REASON_CHARS)
    return orjson.dumps(doc)


def _impression_fields(
    imp: Impression, user_id: str, *, events_topic: str, window_s: float, emit_time_ms: int
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "request_id": imp.request_id,
        "user_id": user_id,
        "recommendation_kind": imp.kind,
        "model_version": imp.model_version,
        "shown_time": format_time_ms(imp.shown_ms),
        "serving": {"topic": events_topic, "partition": imp.source[0], "offset": imp.source[1]},
        "window_s": window_s,
        "emit_time": format_time_ms(emit_time_ms),
    }


def encode_positive(
    positive: Positive, user_id: str, *, events_topic: str, window_s: float, emit_time_ms: int
) -> bytes:
    """An attribution record (schemas/attribution.v1.json) for an action on a shown item."""
    acted = positive.acted
    doc = _impression_fields(
        positive.impression,
        user_id,
        events_topic=events_topic,
        window_s=window_s,
        emit_time_ms=emit_time_ms,
    )
    doc.update(
        kind="positive",
        item_id=positive.impression.items[acted.rank],
        rank=acted.rank,
        action=acted.action,
        event_id=acted.event_id,
        delay_ms=max(0, positive.delay_ms),
    )
    return orjson.dumps(doc)


def encode_negative(
    imp: Impression, user_id: str, *, events_topic: str, window_s: float, emit_time_ms: int
) -> bytes:
    """An attribution record for a closed impression: the items shown and not acted on."""
    doc = _impression_fields(
        imp, user_id, events_topic=events_topic, window_s=window_s, emit_time_ms=emit_time_ms
    )
    doc.update(
        kind="negative",
        items=[{"item_id": item, "rank": rank} for rank, item in unacted(imp)],
        shown=len(imp.items),
        acted=[{"rank": a.rank, "action": a.action} for a in imp.acted],
        close_reason=imp.closed_reason or "window",
        closed_time=format_time_ms(imp.closed_ms if imp.closed_ms is not None else emit_time_ms),
    )
    return orjson.dumps(doc)


def encode_shadow(
    imp: Impression, user_id: str, *, events_topic: str, window_s: float, emit_time_ms: int
) -> bytes:
    """An attribution record for a closed shadow impression (app.core.shadow): the list the
    shadow model would have shown, and the actions on it within the window."""
    doc = _impression_fields(
        imp, user_id, events_topic=events_topic, window_s=window_s, emit_time_ms=emit_time_ms
    )
    doc.update(
        kind="shadow",
        items=[{"item_id": item, "rank": rank} for rank, item in enumerate(imp.items)],
        shown=len(imp.items),
        acted=[{"rank": a.rank, "action": a.action} for a in imp.acted],
        close_reason=imp.closed_reason or "window",
        closed_time=format_time_ms(imp.closed_ms if imp.closed_ms is not None else emit_time_ms),
    )
    return orjson.dumps(doc)


SERVING = "serving"
SHADOW = "shadow"
MODEL_ROLES = (SERVING, SHADOW)


def model_update_key(name: str, role: str = SERVING) -> bytes:
    """The model-updates topic's key: compaction keeps the newest serving announcement and the
    newest shadow one of each model apart.

    >>> model_update_key("seqrank"), model_update_key("seqrank", SHADOW)
    (b'seqrank', b'seqrank:shadow')
    """
    return (name if role == SERVING else f"{name}:{role}").encode("utf-8")


@dataclass(frozen=True, slots=True)
class ModelUpdate:
    """A model version announced on the model-updates topic (schemas/model_update.v1.json).
    ``role``: serving, or shadow (scored beside the serving model, never served)."""

    name: str
    version: str
    path: str
    published_ms: int
    note: str | None = None
    role: str = SERVING


def decode_model_update(raw: bytes | None) -> ModelUpdate:
    if raw is None:
        raise DecodeError(DeadLetterError.MALFORMED_JSON, "model update has no value")
    doc = _validated(raw, "model_update")
    try:
        published = parse_time_ms(doc["published_time"])
    except ValueError as exc:
        raise DecodeError(DeadLetterError.SCHEMA_VIOLATION, f"published_time: {exc}") from None
    return ModelUpdate(
        doc["name"],
        doc["version"],
        doc["path"],
        published,
        doc.get("note"),
        doc.get("role", SERVING),
    )


def _validated(raw: bytes, schema: str) -> Any:
    """The JSON document in ``raw``, checked against ``schemas/<schema>.v1.json``."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(DeadLetterError.MALFORMED_JSON, str(exc)) from None
    try:
        validator(schema)(doc)
    except fastjsonschema.JsonSchemaValueException as exc:
        raise DecodeError(DeadLetterError.SCHEMA_VIOLATION, exc.message) from None
    return doc


def encode_model_update(update: ModelUpdate) -> bytes:
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "name": update.name,
        "version": update.version,
        "path": update.path,
        "published_time": format_time_ms(update.published_ms),
    }
    if update.note is not None:
        doc["note"] = update.note
    if update.role != SERVING:
        doc["role"] = update.role
    return orjson.dumps(doc)
