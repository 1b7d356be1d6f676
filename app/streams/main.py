"""Builds the ``faust.App`` from settings, nothing more."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver

from app.core.settings import Settings, SettingsError
from app.kafka.kafka_config import faust_credentials


def broker_url(bootstrap_servers: str) -> str:
    """Faust's broker URL for a comma-separated bootstrap list.

    >>> broker_url("a:9092,b:9092")
    'kafka://a:9092;kafka://b:9092'
    """
    return ";".join(
        f"kafka://{server.strip()}" for server in bootstrap_servers.split(",") if server.strip()
    )


def limit_fetch_wait(wait_ms: int) -> None:
    """Make faust's worker consumer ask the broker to hold a fetch at most ``wait_ms`` (faust
    hard-codes 1500 ms in its aiokafka driver, with no setting of its own)."""
    thread = aiokafka_driver.AIOKafkaConsumerThread
    original = thread.__dict__.get("_liverank_create", thread._create_worker_consumer)
    thread._liverank_create = original  # type: ignore[attr-defined]

    def create(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        # Read by AIOKafkaConsumer.start() when it builds its fetcher.
        consumer._fetch_max_wait_ms = wait_ms
        return consumer

    thread._create_worker_consumer = create  # type: ignore[method-assign]


def use_event_loop(name: str) -> None:
    """Make the event loops created from now on ``name``'s (``uvloop`` or ``asyncio``): faust's
    main loop and the one its consumer thread runs (mode creates both with the policy's
    ``new_event_loop``). Call it before faust makes its loop.

    faust's own ``--loop`` option would do the same, but only when it is on the command line
    before faust is imported."""
    if name == "asyncio":
        asyncio.set_event_loop_policy(None)
        return
    if name != "uvloop":
        raise SettingsError(f"event_loop must be uvloop or asyncio, not {name!r}")
    try:
        import uvloop
    except ImportError:
        raise SettingsError(
            "event_loop uvloop needs the uvloop package (not available on Windows): install "
            "it, or set LIVERANK_EVENT_LOOP=asyncio"
        ) from None
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def loop_name(loop: asyncio.AbstractEventLoop) -> str:
    """``uvloop`` or ``asyncio``: which implementation ``loop`` is, for the logs."""
    return "uvloop" if type(loop).__module__.split(".")[0] == "uvloop" else "asyncio"


def build_faust_app(settings: Settings) -> faust.App:
    limit_fetch_wait(settings.fetch_wait_ms)
    return faust.App(
        settings.app_id,
        broker=broker_url(settings.bootstrap_servers),
        broker_credentials=faust_credentials(settings),
        # rocksdb:// uses rocksdict when python-rocksdb is absent (faust-streaming >= 0.10).
        store="rocksdb://",
        datadir=str(settings.data_dir),
        processing_guarantee=settings.processing_guarantee,
        # Standbys replay other workers' changelog partitions, so a partition that moves here
        # (rebalance, crash) is served at once instead of after a full restore.
        table_standby_replicas=settings.standby_replicas,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        # The web server would expose /table (table contents); liverank serves its own
        # /metrics, /healthz and /readyz instead (app.ops.health).
        web_enabled=False,
        # No leader topic: liverank runs nothing "on_leader". Its one partition, idle forever,
        # was in the worker consumer's fetches: whenever the events partitions all held records
        # not yet handed over, aiokafka's next fetch (one per broker at a time) asked for that
        # partition alone and the broker held it the whole fetch wait (1.5 s) while the worker
        # ran dry. Under a backlog that happened every 1.5 s (docs/benchmarks.md).
        topic_disable_leader=True,
        key_serializer="raw",
        value_serializer="raw",
        # Commits flush the producers first (at-least-once). Faust commits inline in its fetch
        # loop every broker_commit_every acked events, which stalls consumption while the
        # flush runs; commit on the interval instead (a background task), and by count only
        # as a backstop.
        broker_commit_interval=settings.commit_interval_s,
        # Heartbeats come from the consumer's own thread, so a busy event loop does not miss
        # them; a short session moves a dead worker's partitions quickly.
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 4,
        broker_commit_every=100_000,
        producer_acks=-1,
        producer_linger_ms=1,
        consumer_auto_offset_reset="earliest",
        # aiokafka leaves a partition with records not yet handed over out of the next fetch
        # request: handing over all at once drains every partition together, and the stream
        # then waits a whole fetch round trip. A bound keeps fetches going while it works.
        broker_max_poll_records=settings.max_poll_records or None,
    )
