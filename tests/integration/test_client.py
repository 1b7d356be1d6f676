"""The client library against a real broker and a real worker: publish, then read the answers."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.client import (
    AsyncEventPublisher,
    EventPublisher,
    InvalidEvent,
    Recommendation,
    RecommendationReader,
    RecommendationTimeout,
    TopicNotFound,
)
from app.core.partitioning import Partitioner, partition_for
from app.core.records import Item
from app.core.settings import Settings
from tests.integration.kafka_io import KafkaIO
from tests.integration.worker_process import WorkerProcess, isolated_settings, running_worker

pytestmark = pytest.mark.integration

CATALOG = [
    Item(
        f"{cat}-{i}",
        f"{cat.title()} album {i}",
        cat,
        tags=(cat,),
        popularity={"jazz": 10.0, "rock": 1000.0}[cat] + i,
    )
    for i in range(20)
    for cat in ("jazz", "rock")
]
# Generous: the machine may be busy; nothing here measures speed.
ANSWER_S = 60.0


@pytest.fixture(scope="module")
def settings(bootstrap: str, module_tmp: Path) -> Settings:
    return isolated_settings(bootstrap, module_tmp)


@pytest.fixture(scope="module")
def worker(settings: Settings, kafka: KafkaIO, module_tmp: Path) -> Iterator[WorkerProcess]:
    with running_worker(settings, kafka, CATALOG, module_tmp / "worker.log") as proc:
        yield proc


@pytest.fixture
def reader(settings: Settings, worker: WorkerProcess) -> Iterator[RecommendationReader]:
    # Started before anything is published: it fixes its start offsets as it starts.
    with RecommendationReader(settings, cache_size=100) as recs:
        yield recs


def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def eventually(check: Callable[[], bool], timeout_s: float = ANSWER_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def home(settings: Settings, user_id: str) -> int:
    """The partition the worker expects the user's events on (it forwards others)."""
    return partition_for(user_id.encode(), settings.partitions, Partitioner(settings.partitioner))


def assert_search_answer(rec: Recommendation, event_id: str, user_id: str, query: str) -> None:
    assert (rec.event_id, rec.user_id, rec.kind, rec.query) == (event_id, user_id, "search", query)
    assert rec.items
    assert rec.items[0].item_id.startswith("jazz-")


async def test_sync_publish_then_wait_for_the_search_results(
    settings: Settings, worker: WorkerProcess, reader: RecommendationReader
) -> None:
    alice = user()
    with EventPublisher(settings) as events:
        clicks = [events.click(alice, f"rock-{i}") for i in range(3)]
        search = events.search(alice, "jazz", context={"device": "web"})
    for sent in [*clicks, search]:
        assert sent.topic == settings.topic_events
        assert sent.partition == home(settings, alice)
        assert sent.offset >= 0
    rec = await reader.wait_for(search.event_id, timeout=ANSWER_S)
    assert_search_answer(rec, search.event_id, alice, "jazz")
    # The clicks' answers came first on the same partition; the search's is the newest.
    for click in clicks:
        assert (await reader.wait_for(click.event_id, timeout=ANSWER_S)).kind == "next_items"
    assert reader.latest(alice) == rec
    # Nothing had to be forwarded: every event was already on its user's partition.
    assert worker.metric("liverank_events_rerouted_total") == 0


async def test_async_publish_then_wait_for_the_search_results(
    settings: Settings, worker: WorkerProcess, reader: RecommendationReader
) -> None:
    users = [user() for _ in range(4)]
    async with AsyncEventPublisher(settings) as events:
        clicks = await asyncio.gather(*(events.click(u, "jazz-3") for u in users))
        search = await events.search(users[0], "jazz album")
    for u, sent in zip(users, clicks, strict=True):
        assert sent.partition == home(settings, u)
    assert search.partition == home(settings, users[0])
    rec = await reader.wait_for(search.event_id, timeout=ANSWER_S)
    assert_search_answer(rec, search.event_id, users[0], "jazz album")
    answers = await asyncio.gather(*(reader.wait_for(c.event_id, timeout=ANSWER_S) for c in clicks))
    assert [a.user_id for a in answers] == users
    assert reader.latest(users[0]) == rec
    assert worker.metric("liverank_events_rerouted_total") == 0


async def test_an_answer_that_arrived_before_the_wait_is_found(
    settings: Settings, reader: RecommendationReader
) -> None:
    bob = user()
    with EventPublisher(settings) as events:
        search = events.search(bob, "rock")
    eventually(lambda: reader.cache.get(search.event_id) is not None)
    rec = await reader.wait_for(search.event_id, timeout=1.0)
    assert rec.event_id == search.event_id
    assert reader.result(search.event_id, timeout=1.0) == rec


async def test_forget_user_evicts_the_cached_recommendation(
    settings: Settings, reader: RecommendationReader
) -> None:
    carol = user()
    async with AsyncEventPublisher(settings) as events:
        click = await events.click(carol, "jazz-1")
        await reader.wait_for(click.event_id, timeout=ANSWER_S)
        assert reader.latest(carol) is not None
        forget = await events.forget_user(carol)
    assert forget.partition == home(settings, carol)
    eventually(lambda: reader.latest(carol) is None)


async def test_waiting_for_an_event_never_published_times_out(
    reader: RecommendationReader,
) -> None:
    missing = f"never-{uuid.uuid4().hex}"
    with pytest.raises(RecommendationTimeout) as caught:
        await reader.wait_for(missing, timeout=1.0)
    assert caught.value.event_id == missing
    assert missing in str(caught.value)
    with pytest.raises(TimeoutError):
        reader.result(missing, timeout=0.5)


async def test_a_missing_topic_raises_at_the_caller(settings: Settings) -> None:
    gone = settings.replace(
        topic_events=f"missing-{uuid.uuid4().hex[:8]}",
        topic_recommendations=f"missing-{uuid.uuid4().hex[:8]}",
    )
    with EventPublisher(gone) as events, pytest.raises(TopicNotFound, match="does not exist"):
        events.click(user(), "jazz-1")
    async with AsyncEventPublisher(gone) as async_events:
        with pytest.raises(TopicNotFound, match=gone.topic_events):
            await async_events.search(user(), "jazz")
    with pytest.raises(TopicNotFound, match=gone.topic_recommendations):
        RecommendationReader(gone).start()


async def test_an_event_the_schema_refuses_raises_at_the_caller(settings: Settings) -> None:
    with EventPublisher(settings) as events:
        with pytest.raises(InvalidEvent, match="query"):
            events.search(user(), "")
        with pytest.raises(InvalidEvent, match="user_id"):
            events.click("", "jazz-1")
    async with AsyncEventPublisher(settings) as async_events:
        with pytest.raises(InvalidEvent, match="item_id"):
            # Refused by the call itself, before anything is awaited or sent.
            async_events.view(user(), "")
