"""liverank_consumer_lag_records against a real broker: high watermark minus committed offset."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from app.core.settings import Settings
from app.kafka.topics import create_topics
from tests.integration.kafka_io import KafkaIO
from tests.integration.worker_process import isolated_settings, running_worker

pytestmark = pytest.mark.integration

SAMPLE = re.compile(
    r'^liverank_consumer_lag_records\{partition="(\d+)",topic="([^"]+)"\} (\S+)$', re.M
)


def lag_samples(metrics_text: str, topic: str) -> dict[int, float]:
    return {int(p): float(v) for p, t, v in SAMPLE.findall(metrics_text) if t == topic}


def commit(settings: Settings, offsets: dict[int, int]) -> None:
    """Commit offsets for the worker's consumer group before it joins (no member yet)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "group.id": settings.app_id,
            "enable.auto.commit": False,
        }
    )
    try:
        parts = [TopicPartition(settings.topic_events, p, o) for p, o in offsets.items()]
        consumer.commit(offsets=parts, asynchronous=False)
    finally:
        consumer.close()


def test_lag_is_highwater_minus_committed(bootstrap: str, kafka: KafkaIO, tmp_path: Path) -> None:
    # No commit during the test (the interval is far longer), so the committed offsets stay
    # where this test put them while the worker reads on: the gauge must count from them.
    settings = isolated_settings(bootstrap, tmp_path, commit_interval_s=600.0)
    topic = settings.topic_events
    create_topics(settings)
    # A record in every partition, committed before the worker joins: its lag starts at 0.
    per_partition = {p: 0 for p in range(settings.partitions)}
    user = 0
    while min(per_partition.values()) == 0:
        record = kafka.produce(topic, f"u{user}".encode(), b"not json")
        per_partition[record.partition] += 1
        user += 1
    commit(settings, per_partition)

    with running_worker(settings, kafka, [], tmp_path / "worker.log") as worker:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if lag_samples(worker.get("/metrics")[1], topic) == {
                p: 0.0 for p in range(settings.partitions)
            }:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no zero lag on every partition:\n{worker.get('/metrics')[1]}")

        produced = {p: 0 for p in range(settings.partitions)}
        for i in range(40):
            produced[kafka.produce(topic, f"v{i}".encode(), b"not json").partition] += 1
        # The worker takes every new record (each is dead-lettered: not JSON) ...
        deadline = time.monotonic() + 60
        while worker.metric("liverank_events_total") < 40 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert worker.metric("liverank_events_total") == 40, worker.log_tail()
        # ... but commits none of them, so each partition lags by what was produced since.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            lags = lag_samples(worker.get("/metrics")[1], topic)
            if lags == {p: float(n) for p, n in produced.items()}:
                break
            time.sleep(0.2)
        assert lags == {p: float(n) for p, n in produced.items()}
