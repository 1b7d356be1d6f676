"""Retraining data from the stream: feedback and catalog records to per-user sequences."""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from app.core.codec import encode_item, format_time_ms
from app.core.records import Item
from app.training.stream import (
    better,
    catalog_items,
    interactions,
    next_version,
    sequence_data,
)
from tests.conftest import T0


@dataclass
class Msg:
    """What the readers use of a confluent-kafka message."""

    _key: bytes | None
    _value: bytes | None
    _offset: int
    _partition: int = 0

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def offset(self) -> int:
        return self._offset

    def partition(self) -> int:
        return self._partition


def feedback(n: int, user: str, kind: str, item: str | None, at: int, **extra: object) -> Msg:
    doc: dict[str, object] = {
        "event_id": f"e{n}",
        "user_id": user,
        "type": kind,
        "event_time": format_time_ms(at),
    }
    if item is not None:
        doc["item_id"] = item
    doc.update(extra)
    return Msg(user.encode(), orjson.dumps(doc), n)


def test_the_catalog_is_the_last_record_per_item() -> None:
    a, b = Item("a", "A", "jazz"), Item("b", "B", "rock")
    msgs = [
        Msg(b"a", encode_item(a), 0),
        Msg(b"b", encode_item(b), 1),
        Msg(b"a", None, 2),  # deleted
        Msg(b"x", b"{broken", 3),
        Msg(b"b", encode_item(Item("b", "B2", "rock")), 4),
    ]
    assert catalog_items(msgs) == {"b": Item("b", "B2", "rock")}


def test_sequences_in_event_time_order_without_redeliveries_searches_or_unknown_items() -> None:
    items = {i: Item(i, i.upper(), "jazz") for i in ("a", "b", "c")}
    msgs = [
        feedback(0, "u1", "view", "a", T0 + 3_000),
        feedback(1, "u1", "click", "b", T0 + 1_000),
        feedback(2, "u1", "click", "b", T0 + 1_000, duplicate=True),
        feedback(3, "u1", "search", None, T0 + 2_000, query="jazz"),
        feedback(4, "u1", "purchase", "c", T0 + 4_000),
        feedback(5, "u1", "view", "gone", T0 + 5_000),
        feedback(6, "u2", "view", "a", T0),  # too short to learn from or evaluate
        Msg(b"u3", None, 7),  # a forgotten user's tombstone elsewhere: skipped
    ]
    data = sequence_data(items, interactions(msgs))
    assert data.user_tokens == ("u1",)
    assert [data.item_tokens[i] for i in data.sequences[0]] == ["b", "a", "c"]
    assert data.types is not None and data.types[0].tolist() == [2, 1, 4]
    assert data.item_genres[1] == ("jazz",)


def test_publish_only_when_better() -> None:
    serving = {"hr@10": 0.20, "ndcg@10": 0.10}
    assert better({"hr@10": 0.21, "ndcg@10": 0.11}, serving, 0.005)
    assert not better({"hr@10": 0.203, "ndcg@10": 0.11}, serving, 0.005)
    assert not better({"hr@10": 0.30, "ndcg@10": 0.09}, serving, 0.005)
    assert next_version("1.1.0") == "1.2.0"
