"""A real local KRaft broker: start, produce and consume, stop, and restart on the same data."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # NewTopic: no explicit re-export
    AdminClient,
    NewTopic,
)

from app.dev.localkafka import LocalKafka, pick_free_ports


@pytest.mark.integration
def _first_message(consumer: Consumer, timeout_s: float = 60.0) -> Message:
    """The first record the consumer gets (errors such as partition EOF skipped)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = consumer.poll(1.0)
        if message is not None and message.error() is None:
            return message
    raise AssertionError(f"no record within {timeout_s}s")


def test_local_broker_round_trip(tmp_path: Path) -> None:
    port = pick_free_ports(1)[0]
    kafka = LocalKafka(tmp_path / "kafka", port=port, startup_timeout=120.0)
    try:
        bootstrap = kafka.start()
        assert bootstrap == f"127.0.0.1:{port}"
        assert kafka.is_running() and kafka.is_ready()
        assert (tmp_path / "kafka" / "bootstrap").read_text(encoding="utf-8").strip() == bootstrap
        # A second handle on the same data dir attaches instead of starting another broker.
        assert LocalKafka(tmp_path / "kafka").start() == bootstrap

        topic = f"localkafka-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(topic, num_partitions=1)]).values():
            future.result(timeout=30)

        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topic, key=b"k", value=b"hello")
        assert producer.flush(30) == 0

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"g-{topic}",
                "auto.offset.reset": "earliest",
            }
        )
        try:
            consumer.subscribe([topic])
            message = _first_message(consumer)
            assert (message.key(), message.value()) == (b"k", b"hello")
        finally:
            consumer.close()
    finally:
        kafka.stop()
    assert not kafka.is_running()
    assert not (tmp_path / "kafka" / "kafka.pid").exists()
    kafka.stop()  # idempotent


@pytest.mark.integration
def test_restart_keeps_data_and_address(tmp_path: Path) -> None:
    # No port requested: the second start must find the first one's ports on its own.
    kafka = LocalKafka(tmp_path / "kafka", startup_timeout=120.0)
    try:
        bootstrap = kafka.start()
        topic = f"restart-{uuid.uuid4().hex[:8]}"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(topic, num_partitions=1)]).values():
            future.result(timeout=30)
        producer = Producer({"bootstrap.servers": bootstrap})
        producer.produce(topic, key=b"k", value=b"before restart")
        assert producer.flush(30) == 0
        controller_port = kafka._controller_port

        kafka.stop()
        assert not kafka.is_running()
        assert kafka.start() == bootstrap
        assert kafka._controller_port == controller_port

        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"g-{topic}",
                "enable.auto.commit": False,
            }
        )
        try:
            # assign(), not subscribe(): no group rebalance to wait for.
            consumer.assign([TopicPartition(topic, 0, 0)])
            message = _first_message(consumer)
            assert (message.key(), message.value()) == (b"k", b"before restart")
        finally:
            consumer.close()
    finally:
        kafka.stop()
