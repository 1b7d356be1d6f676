"""Per-user feature state and its pure transition ``apply_event(state, event, item) -> state``."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import msgpack
import orjson

from app.core.attribution import Acted, Impression
from app.core.records import Event, EventType, Item, item_genres
from app.core.text import tokenize

# How much one event of each type says about a user's taste.
EVENT_WEIGHTS: dict[EventType, float] = {
    EventType.VIEW: 1.0,
    EventType.CLICK: 2.0,
    EventType.ADD_TO_CART: 4.0,
    EventType.PURCHASE: 8.0,
    EventType.SEARCH: 0.0,
    EventType.FORGET_USER: 0.0,
}
# The stored form: 3 is MessagePack with the seen items; 2 (MessagePack without them) and 1
# (JSON) are still read, their seen items taken from the kept history (a user's state is
# rewritten as 3 at their next event: the migration is lazy and needs no downtime).
STATE_VERSION = 3
PACKED_V2 = 2
JSON_STATE_VERSION = 1
# Query terms longer than this are not remembered (NFKC can expand one character to 18, so a
# 512-character query could otherwise leave kilobytes-long "terms" in the state).
MAX_TERM_CHARS = 64
# The schemas' limit on event_id, user_id, item_id, category; tags are at most 64.
MAX_ID_CHARS = 128
MAX_TAG_CHARS = 64


@dataclass(frozen=True, slots=True)
class StateLimits:
    """Bounds that keep one user's state small, plus the affinity half-life."""

    history_size: int = 50
    recent_event_ids: int = 64
    max_query_terms: int = 16
    max_purchased: int = 200
    # Distinct items remembered as seen (excluded from next-item lists), beyond the history.
    max_seen: int = 1000
    max_affinities: int = 32
    affinity_half_life_s: float = 6 * 3600.0


class Interaction(NamedTuple):
    """One item event in a user's history. A named tuple: a state holds up to ``history_size``
    and is decoded per user per batch; tuples are built in C and pack as they are."""

    item_id: str
    type: str
    time_ms: int


class LastRecommendation(NamedTuple):
    event_id: str
    model_version: str
    item_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class UserState:
    """What the worker knows about one user. Values are never mutated; transitions copy.

    Affinities are stored as of ``affinity_time_ms`` and decay exponentially from there.
    """

    user_id: str
    history: tuple[Interaction, ...] = ()
    category_affinity: tuple[tuple[str, float], ...] = ()
    tag_affinity: tuple[tuple[str, float], ...] = ()
    affinity_time_ms: int = 0
    query_terms: tuple[str, ...] = ()
    purchased: tuple[str, ...] = ()
    counters: tuple[tuple[str, int], ...] = ()
    last_event_id: str | None = None
    recent_event_ids: tuple[str, ...] = ()
    last_recommendation: LastRecommendation | None = None
    updated_ms: int = 0
    # (partition, offset) of the last events-topic record applied. A user's records are all on
    # one partition and applied in offset order, so a redelivered record at or below it was
    # applied already, however many of the user's events a replay after a crash covers; the
    # event-id window catches producers that send an event twice.
    applied_offset: tuple[int, int] | None = None
    # Recommendations shown and still in their attribution window, and the last few closed ones
    # (app.core.attribution); bounded by the attribution settings.
    impressions: tuple[Impression, ...] = ()
    closed_impressions: tuple[Impression, ...] = ()
    # Every distinct item the user interacted with, first met first, the last ``max_seen`` kept
    # (app.core.exclusions.seen_items): next-item lists never show them again.
    seen: tuple[str, ...] = ()

    def has_applied(self, event_id: str, position: tuple[int, int] | None = None) -> bool:
        """True for an event already in this state: its id is recent, or ``position`` (the
        record's partition and offset) is not past the last record applied."""
        if event_id == self.last_event_id or event_id in self.recent_event_ids:
            return True
        last = self.applied_offset
        return (
            position is not None
            and last is not None
            and position[0] == last[0]
            and position[1] <= last[1]
        )

    def with_attribution(
        self,
        last: LastRecommendation | None,
        impressions: tuple[Impression, ...],
        closed: tuple[Impression, ...],
    ) -> UserState:
        """This state with what attribution keeps: the last recommendation sent and the open
        and recently closed impressions (built directly: ``dataclasses.replace`` costs more)."""
        return UserState(
            self.user_id,
            self.history,
            self.category_affinity,
            self.tag_affinity,
            self.affinity_time_ms,
            self.query_terms,
            self.purchased,
            self.counters,
            self.last_event_id,
            self.recent_event_ids,
            last,
            self.updated_ms,
            self.applied_offset,
            impressions,
            closed,
            self.seen,
        )

    def counter(self, name: str) -> int:
        return dict(self.counters).get(name, 0)

    @property
    def interactions(self) -> int:
        """Item interactions so far (every event but searches)."""
        return sum(n for kind, n in self.counters if kind != EventType.SEARCH.value)

    def affinities_at(
        self, now_ms: int, half_life_s: float
    ) -> tuple[dict[str, float], dict[str, float]]:
        """Category and tag affinities decayed to ``now_ms``."""
        factor = _decay(self.affinity_time_ms, now_ms, half_life_s)
        return (
            {k: v * factor for k, v in self.category_affinity},
            {k: v * factor for k, v in self.tag_affinity},
        )


def _decay(from_ms: int, to_ms: int, half_life_s: float) -> float:
    if to_ms <= from_ms:
        return 1.0
    return math.pow(0.5, (to_ms - from_ms) / 1000.0 / half_life_s)


def _strongest(pair: tuple[str, float]) -> tuple[float, str]:
    return -pair[1], pair[0]


def _bump(
    pairs: tuple[tuple[str, float], ...],
    factor: float,
    keys: tuple[str, ...],
    weight: float,
    limit: int,
) -> tuple[tuple[str, float], ...]:
    values = dict(pairs) if factor == 1.0 else {k: v * factor for k, v in pairs}
    for key in keys:
        values[key] = values.get(key, 0.0) + weight
    # Keep the strongest affinities only; ties broken by key for determinism.
    ranked = sorted(values.items(), key=_strongest)
    del ranked[limit:]
    return tuple([(k, round(v, 6)) for k, v in ranked if v > 1e-6])


def _push(seq: tuple[Any, ...], value: Any, limit: int) -> tuple[Any, ...]:
    """Append ``value`` keeping the last ``limit`` entries.

    >>> _push((1, 2, 3), 4, 3)
    (2, 3, 4)
    """
    return (*seq, value)[-limit:]


def apply_event(
    state: UserState | None,
    event: Event,
    item: Item | None,
    limits: StateLimits,
    position: tuple[int, int] | None = None,
) -> UserState:
    """The user's state after ``event``; ``item`` is the catalog entry for ``event.item_id``.

    Redelivered events (already applied) return the state unchanged, so the update is idempotent.
    """
    if event.type is EventType.FORGET_USER:
        # Forgetting is not a state change but the end of the state: the caller deletes it.
        raise ValueError("forget_user deletes the user's state; it is not applied to it")
    current = state if state is not None else UserState(user_id=event.user_id)
    if current.has_applied(event.event_id, position):
        return current
    # Out-of-order events never move affinity time backwards.
    now_ms = max(current.affinity_time_ms, event.event_time_ms)
    factor = _decay(current.affinity_time_ms, now_ms, limits.affinity_half_life_s)
    weight = EVENT_WEIGHTS[event.type]

    category_affinity = current.category_affinity
    tag_affinity = current.tag_affinity
    if item is not None and weight > 0:
        category_affinity = _bump(
            current.category_affinity, factor, (item.category,), weight, limits.max_affinities
        )
        # Each of the item's genres once (a tag that repeats the category counts once).
        tags = item_genres(item)[1:]
        tag_affinity = _bump(current.tag_affinity, factor, tags, weight, limits.max_affinities)
    elif factor != 1.0:
        category_affinity = _bump(current.category_affinity, factor, (), 0.0, limits.max_affinities)
        tag_affinity = _bump(current.tag_affinity, factor, (), 0.0, limits.max_affinities)

    history = current.history
    purchased = current.purchased
    query_terms = current.query_terms
    seen = current.seen
    if event.type is EventType.SEARCH:
        terms = tuple(t for t in tokenize(event.query or "") if len(t) <= MAX_TERM_CHARS)
        kept = tuple(t for t in query_terms if t not in terms)
        query_terms = (*kept, *terms)[-limits.max_query_terms :]
    elif event.item_id is not None:
        history = _push(
            history,
            Interaction(event.item_id, event.type.value, event.event_time_ms),
            limits.history_size,
        )
        if event.type is EventType.PURCHASE and event.item_id not in purchased:
            purchased = _push(purchased, event.item_id, limits.max_purchased)
        # Only catalog items: an unknown id is never shown anyway, and a producer cannot grow
        # a state with made-up ids.
        if item is not None and event.item_id not in seen:
            seen = _push(seen, event.item_id, limits.max_seen)

    counters = dict(current.counters)
    counters[event.type.value] = counters.get(event.type.value, 0) + 1

    return UserState(
        current.user_id,
        history,
        category_affinity,
        tag_affinity,
        now_ms,
        query_terms,
        purchased,
        tuple(sorted(counters.items())),
        event.event_id,
        _push(current.recent_event_ids, event.event_id, limits.recent_event_ids),
        current.last_recommendation,
        max(current.updated_ms, event.event_time_ms),
        position if position is not None else current.applied_offset,
        current.impressions,
        current.closed_impressions,
        seen,
    )


def with_recommendation(state: UserState, rec: LastRecommendation) -> UserState:
    """Remember what the user was last sent, for feedback attribution."""
    return replace(state, last_recommendation=rec)


def state_size_bound(limits: StateLimits, top_k: int, impressions: int = 16) -> int:
    """Bytes ``encode_state`` can reach, whatever a user does, at these limits, with up to
    ``impressions`` open and recently closed impressions (attribution).

    Every kept list full and every string at its schema maximum, each character at its UTF-8
    worst case (4 bytes; the schemas refuse the control characters JSON would escape to 6);
    numbers at 24 characters. The state of a user with a million events is no bigger than
    that of one with a thousand."""

    def text(chars: int) -> int:
        return 4 * chars + 3  # quotes and a comma

    number = 24
    model_version = 128
    return (
        256  # keys, brackets, version, times, offsets
        + 2 * text(MAX_ID_CHARS)  # user id, last event id
        + limits.history_size * (text(MAX_ID_CHARS) + text(11) + number + 3)
        + limits.max_affinities * (text(MAX_ID_CHARS) + number + 3)
        + limits.max_affinities * (text(MAX_TAG_CHARS) + number + 3)
        + limits.max_query_terms * text(MAX_TERM_CHARS)
        + limits.max_purchased * text(MAX_ID_CHARS)
        + limits.max_seen * text(MAX_ID_CHARS)
        + len(EventType) * (text(11) + number + 3)
        + limits.recent_event_ids * text(MAX_ID_CHARS)
        + text(MAX_ID_CHARS)
        + text(model_version)
        + top_k * text(MAX_ID_CHARS)
        # Open and recently closed impressions (attribution): ids, version, items, times, the
        # source, up to three actions per item, and what closed it.
        + impressions
        * (
            3 * text(MAX_ID_CHARS)
            + text(model_version)
            + top_k * text(MAX_ID_CHARS)
            + 6 * number
            + 3 * top_k * (2 * number + text(11) + text(MAX_ID_CHARS))
            + 32
        )
    )


def encode_state(state: UserState) -> bytes:
    """The RocksDB table value: a MessagePack array, version first (see :func:`decode_state`).

    Named tuples (history, impressions, actions, the last recommendation) pack as arrays in
    their field order, so the field order of those classes is part of the format (pinned by
    tests/unit/test_state.py)."""
    packed: bytes = msgpack.packb(
        (
            STATE_VERSION,
            state.user_id,
            state.history,
            state.category_affinity,
            state.tag_affinity,
            state.affinity_time_ms,
            state.query_terms,
            state.purchased,
            state.counters,
            state.last_event_id,
            state.recent_event_ids,
            state.last_recommendation,
            state.updated_ms,
            state.applied_offset,
            state.impressions,
            state.closed_impressions,
            state.seen,
        ),
        use_bin_type=True,
    )
    return packed


def _impressions(raw: tuple[Any, ...]) -> tuple[Impression, ...]:
    return tuple(
        Impression(
            rid,
            kind,
            version,
            items,
            shown,
            due,
            source,
            tuple(map(Acted._make, acted)) if acted else (),
            reason,
            closed_ms,
            by,
        )
        for rid, kind, version, items, shown, due, source, acted, reason, closed_ms, by in raw
    )


def decode_state(raw: bytes) -> UserState:
    """A stored state, version 3 or 2 (MessagePack) or 1 (JSON, from before the binary
    format)."""
    if raw[:1] == b"{":
        return _decode_json_state(raw)
    try:
        doc = msgpack.unpackb(raw, use_list=False, raw=False, strict_map_key=True)
    except (msgpack.UnpackException, ValueError) as exc:
        raise ValueError(f"unreadable user state: {type(exc).__name__}: {exc}") from None
    if not isinstance(doc, tuple) or not doc or doc[0] not in (STATE_VERSION, PACKED_V2):
        found = doc[0] if isinstance(doc, tuple) and doc else type(doc).__name__
        raise ValueError(f"unsupported user state version {found!r}")
    if doc[0] == PACKED_V2:
        doc = (*doc, None)  # no seen items yet: taken from the history below
    # Unpacking checks the field count: a state of another shape is refused (ValueError).
    (
        _version,
        user_id,
        history,
        category_affinity,
        tag_affinity,
        affinity_time_ms,
        query_terms,
        purchased,
        counters,
        last_event_id,
        recent_event_ids,
        last,
        updated_ms,
        applied_offset,
        impressions,
        closed,
        seen,
    ) = doc
    interactions = tuple(map(Interaction._make, history))
    return UserState(
        user_id,
        interactions,
        category_affinity,
        tag_affinity,
        affinity_time_ms,
        query_terms,
        purchased,
        counters,
        last_event_id,
        recent_event_ids,
        None if last is None else LastRecommendation._make(last),
        updated_ms,
        applied_offset,
        _impressions(impressions),
        _impressions(closed),
        _seen_from_history(interactions) if seen is None else seen,
    )


def _seen_from_history(history: tuple[Interaction, ...]) -> tuple[str, ...]:
    """The seen items of a state written before they were kept: its history's, distinct."""
    return tuple(dict.fromkeys(i.item_id for i in history))


def _impression(doc: list[Any]) -> Impression:
    rid, kind, version, items, shown, due, source, acted, reason, closed_ms, by = doc
    return Impression(
        request_id=rid,
        kind=kind,
        model_version=version,
        items=tuple(items),
        shown_ms=int(shown),
        due_ms=int(due),
        source=(int(source[0]), int(source[1])),
        acted=tuple(Acted(int(r), a, e, int(t)) for r, a, e, t in acted),
        closed_reason=reason,
        closed_ms=None if closed_ms is None else int(closed_ms),
        closed_by=by,
    )


def _decode_json_state(raw: bytes) -> UserState:
    """Version 1: the JSON states written before version 2."""
    doc = orjson.loads(raw)
    if not isinstance(doc, dict) or doc.get("v") != JSON_STATE_VERSION:
        found = doc.get("v") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"unsupported user state version {found!r}")
    lr = doc["lr"]
    history = tuple(Interaction(i, t, int(ms)) for i, t, ms in doc["h"])
    return UserState(
        user_id=doc["u"],
        history=history,
        category_affinity=tuple((k, float(v)) for k, v in doc["ca"]),
        tag_affinity=tuple((k, float(v)) for k, v in doc["ta"]),
        affinity_time_ms=int(doc["at"]),
        query_terms=tuple(doc["q"]),
        purchased=tuple(doc["p"]),
        counters=tuple((k, int(v)) for k, v in doc["c"]),
        last_event_id=doc["le"],
        recent_event_ids=tuple(doc["re"]),
        last_recommendation=None if lr is None else LastRecommendation(lr[0], lr[1], tuple(lr[2])),
        updated_ms=int(doc["t"]),
        applied_offset=None if doc.get("ao") is None else (int(doc["ao"][0]), int(doc["ao"][1])),
        # States written before attribution have no impressions.
        impressions=tuple(_impression(i) for i in doc.get("im", ())),
        closed_impressions=tuple(_impression(i) for i in doc.get("ic", ())),
        seen=_seen_from_history(history),
    )
