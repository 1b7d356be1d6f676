"""Typed records that cross the Kafka boundary: events, items, and what the worker emits."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class EventType(StrEnum):
    VIEW = "view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    PURCHASE = "purchase"
    SEARCH = "search"
    # Erase the user: their state is deleted (a tombstone in the changelog), downstream gets a
    # tombstone on the recommendations topic and a forget_user record on the feedback topic.
    FORGET_USER = "forget_user"


# Events with an item_id (searches carry a query, forget_user neither).
ITEM_EVENTS = frozenset(
    {EventType.VIEW, EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE}
)

# Events that ask for fresh next-item recommendations (a search asks for query results).
NEXT_ITEM_TRIGGERS = frozenset({EventType.CLICK, EventType.ADD_TO_CART, EventType.PURCHASE})


@dataclass(frozen=True, slots=True)
class Event:
    """A decoded, validated behaviour event (schemas/event.v1.json)."""

    event_id: str
    user_id: str
    type: EventType
    event_time_ms: int
    event_time: str
    item_id: str | None = None
    query: str | None = None
    context: dict[str, object] | None = None


@dataclass(frozen=True, slots=True)
class Item:
    """A catalog item (schemas/item.v1.json); ``withdrawn`` items are never recommended."""

    item_id: str
    title: str
    category: str
    tags: tuple[str, ...] = ()
    price: float | None = None
    popularity: float = 0.0
    withdrawn: bool = False


def item_genres(item: Item) -> tuple[str, ...]:
    """What the model calls an item's genres: its category and its tags, each once.

    >>> item_genres(Item("m1", "Heat", "Action", ("Crime", "Action", "Thriller")))
    ('Action', 'Crime', 'Thriller')
    """
    return tuple(dict.fromkeys((item.category, *item.tags)))


# Documented rules an odd but valid event is applied under instead of being dead-lettered
# (docs/guarantees.md), counted by liverank_input_rules_total{rule}.
RULE_UNKNOWN_ITEM = "unknown_item"  # applied to the history; no affinity (nothing known of it)
RULE_WITHDRAWN_ITEM = "withdrawn_item"  # applied like any other; never recommended
RULE_OUT_OF_ORDER = "out_of_order"  # applied; affinity time never moves backwards
INPUT_RULES = (RULE_UNKNOWN_ITEM, RULE_WITHDRAWN_ITEM, RULE_OUT_OF_ORDER)


class DeadLetterError(StrEnum):
    OVERSIZE = "oversize"
    MALFORMED_JSON = "malformed_json"
    NOT_AN_OBJECT = "not_an_object"
    UNKNOWN_TYPE = "unknown_type"
    MISSING_ID = "missing_id"
    SCHEMA_VIOLATION = "schema_violation"
    KEY_MISMATCH = "key_mismatch"
    TIME_OUT_OF_RANGE = "time_out_of_range"
    PROCESSING_ERROR = "processing_error"


@dataclass(frozen=True, slots=True)
class Source:
    """Where a record came from, carried into dead letters."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    # The record's Kafka timestamp: how long it waited for us is what overload looks like.
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class RankedItem:
    item_id: str
    score: float
    source: str


@dataclass(frozen=True, slots=True)
class Recommendation:
    """Ranked items for one triggering event (schemas/recommendation.v1.json)."""

    event_id: str
    user_id: str
    kind: str
    items: tuple[RankedItem, ...]
    model_version: str
    event_time: str
    event_time_ms: int
    query: str | None = None
    degraded: bool = False
    coalesced_into: str | None = None
