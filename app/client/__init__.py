"""The client library: publish behaviour events and read the recommendations they produce.

Both classes take the worker's :class:`~app.core.settings.Settings`
(``Settings.from_env(os.environ)`` reads the same ``LIVERANK_*`` variables), or keyword changes
to the defaults, so topic names, brokers, security and the partitioner come from one place.
Publish a search and wait for its ranked results::

    import asyncio

    from app.client import AsyncEventPublisher, RecommendationReader, Settings

    async def main() -> None:
        settings = Settings(bootstrap_servers="127.0.0.1:9092")  # or Settings.from_env(os.environ)
        async with RecommendationReader(settings) as recs, AsyncEventPublisher(settings) as events:
            sent = await events.search("user-42", "jazz piano")
            rec = await recs.wait_for(sent.event_id, timeout=10)
            print([item.item_id for item in rec.items])
            print(recs.latest("user-42") == rec)

    asyncio.run(main())

Start the reader before publishing (it fixes its start offsets when it starts). Errors:
:class:`InvalidEvent` (refused before sending: the worker would dead-letter it),
:class:`PublishError` / :class:`TopicNotFound` (not delivered), :class:`RecommendationTimeout`
(no answer in time; a ``TimeoutError``).
"""

from __future__ import annotations

from app.client.publisher import (
    AsyncEventPublisher,
    Delivery,
    EventBuilder,
    EventPublisher,
    InvalidEvent,
    Prepared,
    PublishError,
    TopicNotFound,
    build_event,
)
from app.client.reader import (
    ReaderClosed,
    RecommendationCache,
    RecommendationReader,
    RecommendationTimeout,
)
from app.core.codec import decode_recommendation
from app.core.records import Event, EventType, RankedItem, Recommendation
from app.core.settings import Settings

__all__ = [
    "AsyncEventPublisher",
    "Delivery",
    "Event",
    "EventBuilder",
    "EventPublisher",
    "EventType",
    "InvalidEvent",
    "Prepared",
    "PublishError",
    "RankedItem",
    "ReaderClosed",
    "Recommendation",
    "RecommendationCache",
    "RecommendationReader",
    "RecommendationTimeout",
    "Settings",
    "TopicNotFound",
    "build_event",
    "decode_recommendation",
]
