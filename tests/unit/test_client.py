"""The client library without a broker: events built and refused as the worker would, the
partition it expects, the recommendation cache and its waiters."""

from __future__ import annotations

import asyncio
import doctest
import importlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import jsonschema
import orjson
import pytest

from app.client import (
    Event,
    EventBuilder,
    EventType,
    InvalidEvent,
    PublishError,
    RankedItem,
    Recommendation,
    RecommendationCache,
    RecommendationTimeout,
    Settings,
    TopicNotFound,
    build_event,
    decode_recommendation,
)
from app.core.codec import DecodeError, decode_event, encode_recommendation, load_schema
from app.core.partitioning import Partitioner, misplaced, partition_for

NOW = datetime(2026, 11, 29, 10, 15, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)

RecFactory = Callable[..., Recommendation]


@pytest.fixture
def builder() -> EventBuilder:
    return EventBuilder(Settings())


@pytest.fixture
def rec_factory() -> RecFactory:
    def make(user_id: str = "u1", event_id: str | None = None, minute: int = 0) -> Recommendation:
        moment = NOW + timedelta(minutes=minute)
        return Recommendation(
            event_id=event_id or uuid.uuid4().hex,
            user_id=user_id,
            kind="search",
            items=(RankedItem("jazz-1", 2.5, "query"), RankedItem("jazz-2", 1.0, "popular")),
            model_version="1.1.0",
            event_time=moment.isoformat().replace("+00:00", "Z"),
            event_time_ms=int(moment.timestamp() * 1000),
            query="jazz",
        )

    return make


def wire(rec: Recommendation) -> bytes:
    return encode_recommendation(rec, emit_time_ms=rec.event_time_ms + 7)


@pytest.mark.parametrize("module", ["app.client.publisher", "app.client.reader"])
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0


def test_every_typed_event_is_valid_and_decodes_as_the_worker_does(builder: EventBuilder) -> None:
    events = [
        build_event("view", "u1", item_id="i1"),
        build_event(EventType.CLICK, "u1", item_id="i1", context={"device": "ios"}),
        build_event("add_to_cart", "u1", item_id="i1"),
        build_event("purchase", "u1", item_id="i1"),
        build_event("search", "u1", query="jazz piano"),
        build_event("forget_user", "u1"),
    ]
    schema = load_schema("event")
    for event in events:
        prepared = builder.prepare(event)
        assert prepared.key == b"u1"
        jsonschema.validate(orjson.loads(prepared.value), schema)
        assert decode_event(prepared.value, max_bytes=16384) == event
    assert len({e.event_id for e in events}) == len(events)  # uuid4 by default


def test_defaults_are_now_and_timezone_aware() -> None:
    event = build_event("click", "u1", item_id="i1")
    assert event.event_time.endswith("Z")
    age = datetime.now(UTC) - datetime.fromisoformat(event.event_time)
    assert timedelta(0) <= age < timedelta(minutes=5)
    assert uuid.UUID(event.event_id).version == 4


def test_given_ids_and_times_are_kept(builder: EventBuilder) -> None:
    paris = timezone(timedelta(hours=1))
    event = build_event("search", "u1", query="q", event_id="e-1", event_time=NOW.astimezone(paris))
    assert (event.event_id, event.event_time_ms) == ("e-1", NOW_MS)
    assert builder.prepare(event, now_ms=NOW_MS).event.event_time == "2026-11-29T10:15:00.000Z"


@pytest.mark.parametrize(
    ("make", "error", "says"),
    [
        (lambda: build_event("click", "", item_id="i1"), "missing_id", "user_id"),
        (lambda: build_event("search", "u1"), "schema_violation", "['query']"),
        (lambda: build_event("search", "u1", query=""), "schema_violation", "query must be"),
        (lambda: build_event("view", "u1"), "missing_id", "item_id is required"),
        (lambda: build_event("click", "u\n1", item_id="i"), "schema_violation", "user_id"),
        (
            lambda: build_event("click", "u1", item_id="i", context={"device": "x" * 65}),
            "schema_violation",
            "context.device",
        ),
    ],
)
def test_refused_events_say_why(
    builder: EventBuilder, make: Callable[[], Event], error: str, says: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        builder.prepare(make())
    assert caught.value.error == error
    assert says in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_unknown_type_and_naive_time_are_refused_at_once() -> None:
    with pytest.raises(InvalidEvent, match="unknown_type"):
        build_event("like", "u1", item_id="i1")
    with pytest.raises(InvalidEvent, match="timezone-aware"):
        build_event("click", "u1", item_id="i1", event_time=datetime(2026, 1, 1))  # noqa: DTZ001


def test_times_the_worker_would_dead_letter_are_refused() -> None:
    builder = EventBuilder(Settings(max_event_age_s=3600, max_event_future_s=60))
    old = build_event("click", "u1", item_id="i", event_time=NOW - timedelta(hours=2))
    ahead = build_event("click", "u1", item_id="i", event_time=NOW + timedelta(minutes=5))
    for event in (old, ahead):
        with pytest.raises(InvalidEvent, match="time_out_of_range"):
            builder.prepare(event, now_ms=NOW_MS)
    fine = build_event("click", "u1", item_id="i", event_time=NOW - timedelta(minutes=59))
    assert builder.prepare(fine, now_ms=NOW_MS).event == fine


def test_oversize_events_are_refused() -> None:
    builder = EventBuilder(Settings(max_event_bytes=256))
    with pytest.raises(InvalidEvent, match="oversize"):
        builder.prepare(build_event("search", "u1", query="q" * 300))


@pytest.mark.parametrize("partitioner", ["murmur2", "crc32"])
@pytest.mark.parametrize("partitions", [1, 2, 4, 12])
def test_the_partition_is_the_one_the_worker_expects(partitioner: str, partitions: int) -> None:
    builder = EventBuilder(Settings(partitioner=partitioner, partitions=partitions))
    for i in range(200):
        user = f"user-{i:05d}" if i % 2 else f"ユーザー{i}"
        prepared = builder.prepare(build_event("click", user, item_id="i1"))
        expected = partition_for(user.encode(), partitions, Partitioner(partitioner))
        assert prepared.partition == builder.partition_of(user) == expected
        # The worker's own test: a record it would forward elsewhere is misplaced.
        where = (prepared.key, prepared.partition, partitions, Partitioner(partitioner))
        assert misplaced(*where) is None


def test_the_two_partitioners_disagree_somewhere() -> None:
    # Otherwise the test above could not tell them apart.
    m = EventBuilder(Settings(partitioner="murmur2", partitions=4))
    c = EventBuilder(Settings(partitioner="crc32", partitions=4))
    assert any(m.partition_of(f"u{i}") != c.partition_of(f"u{i}") for i in range(20))


def test_a_sample_recommendation_decodes(rec_factory: RecFactory) -> None:
    rec = rec_factory(event_id="e-42")
    raw = wire(rec)
    jsonschema.validate(orjson.loads(raw), load_schema("recommendation"))
    assert decode_recommendation(raw) == rec
    literal = (
        b'{"schema_version":1,"event_id":"e1","user_id":"u1","kind":"next_items",'
        b'"items":[{"item_id":"a","score":1,"source":"similar"}],"model_version":"cheap-path",'
        b'"event_time":"2026-11-29T10:15:00.123+01:00","emit_time":"2026-11-29T09:15:00.200Z",'
        b'"degraded":true,"coalesced_into":"e2"}'
    )
    decoded = decode_recommendation(literal)
    assert decoded.items == (RankedItem("a", 1.0, "similar"),)
    assert decoded.degraded and decoded.coalesced_into == "e2" and decoded.query is None
    assert decoded.event_time_ms == NOW_MS - 3600_000 + 123


@pytest.mark.parametrize(
    "raw", [b"not json", b"[]", b'{"schema_version":1,"event_id":"e1"}', b'{"items":"x"}']
)
def test_broken_recommendations_raise_decode_error(raw: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_recommendation(raw)


def test_the_cache_keeps_the_latest_per_user_bounded_lru(rec_factory: RecFactory) -> None:
    cache = RecommendationCache(size=3, recent=100)
    for user in ("a", "b", "c"):
        cache.apply(user.encode(), wire(rec_factory(user)))
    assert cache.latest("a") is not None  # a is now the most recently used
    cache.apply(b"d", wire(rec_factory("d")))
    assert len(cache) == 3
    assert cache.latest("b") is None  # the least recently used went
    assert {u for u in "acd" if cache.latest(u) is not None} == {"a", "c", "d"}


def test_the_newest_event_wins_and_a_replayed_older_one_does_not(rec_factory: RecFactory) -> None:
    cache = RecommendationCache()
    first, second = rec_factory(minute=0), rec_factory(minute=1)
    cache.apply(b"u1", wire(first))
    cache.apply(b"u1", wire(second))
    assert cache.latest("u1") == second
    cache.apply(b"u1", wire(first))  # a replay after a worker's crash
    assert cache.latest("u1") == second
    assert cache.get(first.event_id) == first


def test_a_tombstone_evicts_the_user(rec_factory: RecFactory) -> None:
    cache = RecommendationCache()
    cache.apply(b"u1", wire(rec_factory("u1")))
    cache.apply(b"u2", wire(rec_factory("u2")))
    assert cache.apply(b"u1", None) is None
    assert cache.latest("u1") is None
    assert cache.latest("u2") is not None
    cache.apply(None, None)  # a keyless tombstone names nobody
    assert len(cache) == 1


def test_a_broken_record_changes_nothing(rec_factory: RecFactory) -> None:
    cache = RecommendationCache()
    rec = rec_factory()
    cache.apply(b"u1", wire(rec))
    with pytest.raises(DecodeError):
        cache.apply(b"u1", b'{"event_id": "x"}')
    assert cache.latest("u1") == rec


def test_recent_answers_are_bounded_and_found_before_anyone_waits(
    rec_factory: RecFactory,
) -> None:
    cache = RecommendationCache(size=10, recent=2)
    recs = [rec_factory(event_id=f"e{i}") for i in range(3)]
    for rec in recs:
        cache.apply(b"u1", wire(rec))
    assert cache.get("e0") is None
    future = cache.expect("e2")
    assert future.done() and future.result() == recs[2]


async def test_a_waiter_gets_the_record_when_it_arrives(rec_factory: RecFactory) -> None:
    cache = RecommendationCache()
    rec = rec_factory(event_id="later")
    future = cache.expect("later")
    assert not future.done()
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, cache.apply, b"u1", wire(rec))
    assert await asyncio.wait_for(asyncio.wrap_future(future), 30) == rec


def test_a_waiter_that_gave_up_is_dropped_and_failures_reach_the_rest(
    rec_factory: RecFactory,
) -> None:
    cache = RecommendationCache()
    gave_up, waiting = cache.expect("e1"), cache.expect("e2")
    gave_up.cancel()
    cache.unexpect("e1", gave_up)
    cache.apply(b"u1", wire(rec_factory(event_id="e1")))  # no waiter left: no error
    cache.fail(RuntimeError("gone"))
    with pytest.raises(RuntimeError, match="gone"):
        waiting.result(0)


def test_topic_not_found_is_a_publish_error() -> None:
    error = TopicNotFound("t.events", "e-1")
    assert isinstance(error, PublishError) and error.event_id == "e-1"
    assert str(error) == "topic 't.events' does not exist"


def test_the_timeout_error_names_the_event() -> None:
    error = RecommendationTimeout("e-99", 2.5)
    assert isinstance(error, TimeoutError)
    assert "e-99" in str(error) and error.event_id == "e-99"
