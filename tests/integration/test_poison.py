"""Poison records against a real broker (issue 14): no record can stop a worker. Every produce
path survives every produce error: a record refused for its size (a forward, an output, a dead
letter) is replaced by a dead letter that fits, and the valid events behind it are answered;
any other produce error stops the worker loudly instead of stalling it."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewTopic,
)

from app.core.codec import encode_dead_letter, encode_event, format_time_ms
from app.core.partitioning import Partitioner, partition_for
from app.core.processor import ATTRIBUTION, DEAD_LETTERS, FEEDBACK, RECOMMENDATIONS, Output
from app.core.records import DeadLetterError, Event, EventType, Source
from app.core.settings import Settings
from app.kafka.kafka_config import admin_client
from app.kafka.topics import changelog_topic, create_topics
from app.ops.metrics import Metrics
from app.streams.outputs import Forward, Origin, OutputProducer, ProducerFailed
from tests.integration.kafka_io import KafkaIO, Record
from tests.integration.test_faults import (
    answered,
    interleaved_events,
    prepare_topics,
    produce,
    triggers_of,
)
from tests.integration.worker_process import WorkerProcess, isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BIG = 1_020_000  # over librdkafka's 1,000,000-byte message.max.bytes, under the broker's limit


def set_max_message_bytes(settings: Settings, topic: str, limit: int) -> None:
    """Lower (or raise) a topic's max.message.bytes on the running broker."""
    admin = admin_client(settings)
    resource = ConfigResource(
        "topic",
        topic,
        incremental_configs=[
            ConfigEntry(
                "max.message.bytes",
                str(limit),
                incremental_operation=AlterConfigOpType.SET,
            )
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def big_producer(settings: Settings) -> Producer:
    """A plain producer that may send records up to the broker's default limit."""
    return Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "message.max.bytes": 1_048_576,
            "linger.ms": 0,
        }
    )


def send(producer: Producer, topic: str, key: bytes, value: bytes, partition: int) -> None:
    errors: list[object] = []
    producer.produce(
        topic,
        key=key,
        value=value,
        partition=partition,
        on_delivery=lambda err, _msg: errors.append(err) if err else None,
    )
    assert producer.flush(30) == 0 and not errors, errors


def letters(kafka: KafkaIO, settings: Settings, count: int) -> list[dict[str, object]]:
    records = kafka.read_until(
        settings.topic_dead_letters, lambda rs: len(rs) >= count, timeout_s=120
    )
    return [orjson.loads(r.value or b"{}") for r in records]


def copied(letter: dict[str, object]) -> bytes:
    return base64.b64decode(str(letter["value_b64"]))


# ---------------------------------------------------------------- the producer, directly


@pytest.fixture
def producer_settings(bootstrap: str, tmp_path: Path) -> Iterator[Settings]:
    settings = isolated_settings(bootstrap, tmp_path)
    create_topics(settings)
    yield settings


def outputs_for(settings: Settings, fatal: list[str]) -> OutputProducer:
    return OutputProducer(
        settings,
        {
            RECOMMENDATIONS: settings.topic_recommendations,
            FEEDBACK: settings.topic_feedback,
            DEAD_LETTERS: settings.topic_dead_letters,
            ATTRIBUTION: settings.topic_attribution,
        },
        on_fatal=fatal.append,
        metrics=Metrics(),
    )


def test_every_refused_record_becomes_a_dead_letter_that_fits(
    producer_settings: Settings, kafka: KafkaIO
) -> None:
    settings = producer_settings
    # Topics whose limits shrank after start-up: a forward, an output and a dead letter are
    # refused by the broker (asynchronously, in delivery reports), and a record over the
    # producer's own limit by librdkafka (synchronously).
    set_max_message_bytes(settings, settings.topic_events, 8_000)
    set_max_message_bytes(settings, settings.topic_feedback, 8_000)
    set_max_message_bytes(settings, settings.topic_dead_letters, 6_000)
    fatal: list[str] = []
    outputs = outputs_for(settings, fatal)
    source = Source(settings.topic_events, 1, 42, b"u-big", 0)
    forwarded = b"f" * 12_000
    feedback = b"b" * 12_000
    huge = b"h" * BIG
    letter = encode_dead_letter(
        DeadLetterError.MALFORMED_JSON,
        "not JSON",
        Source(settings.topic_events, 0, 7, b"u-letter"),
        b"m" * 20_000,
        received_time_ms=0,
    )
    outputs.forward(
        settings.topic_events,
        [Forward(0, b"u-big", forwarded, None, (), source)],
    )
    outputs.produce([Output(FEEDBACK, b"u-big", feedback)], Origin(source, b"raw event"))
    outputs.produce([Output(RECOMMENDATIONS, b"u-huge", huge)], Origin(source, huge))
    outputs.dead_letter(b"u-letter", letter)
    outputs.flush(60)
    assert not fatal

    docs = letters(kafka, settings, 4)
    assert len(docs) == 4, [d["reason"] for d in docs]
    forward = next(d for d in docs if "could not be forwarded" in str(d["reason"]))
    assert forward["error"] == "oversize" and forward["value_size"] == len(forwarded)
    assert forward["value_sha256"] == hashlib.sha256(forwarded).hexdigest()
    assert forward["value_truncated"] is True and len(copied(forward)) <= 1024
    refused = [d for d in docs if "record of" in str(d["reason"])]
    assert {d["error"] for d in refused} == {"processing_error"}
    assert any(settings.topic_feedback in str(d["reason"]) for d in refused)
    assert any(d["value_size"] == BIG for d in refused)
    shrunk = next(d for d in docs if d["offset"] == 7)
    assert shrunk["error"] == "malformed_json" and shrunk["value_size"] == 20_000
    assert shrunk["value_truncated"] is True and len(copied(shrunk)) <= 1024
    print(f"\nrefused records: {len(docs)} dead letters that fit, each within 6,000 bytes")


def test_a_record_that_cannot_go_in_any_form_fails_loudly(
    producer_settings: Settings,
) -> None:
    settings = producer_settings
    fatal: list[str] = []
    outputs = outputs_for(settings, fatal)
    # A partition the topic does not have: no smaller record would help.
    outputs.forward(settings.topic_events, [Forward(99, b"u1", b"{}", None)])
    with pytest.raises(ProducerFailed, match="Unknown partition"):
        outputs.flush(30)
    assert fatal and "Unknown partition" in fatal[0]


def test_changelog_records_report_their_offsets_and_a_lost_one_is_fatal(
    producer_settings: Settings, kafka: KafkaIO
) -> None:
    settings = producer_settings
    fatal: list[str] = []
    outputs = outputs_for(settings, fatal)
    topic = changelog_topic(settings)
    outputs.changelog(topic, 1, b"u1", b"state 1")
    outputs.changelog(topic, 1, b"u1", b"state 2")
    outputs.changelog(topic, 0, b"u2", None)  # a tombstone
    outputs.flush(30)
    assert outputs.take_changelog_offsets() == {(topic, 0): 0, (topic, 1): 1}
    assert outputs.take_changelog_offsets() == {}  # taken once
    records = kafka.read_until(topic, lambda rs: len(rs) >= 3)
    assert sorted((r.partition, r.offset, r.key, r.value) for r in records) == [
        (0, 0, b"u2", None),
        (1, 0, b"u1", b"state 1"),
        (1, 1, b"u1", b"state 2"),
    ]
    # No dead letter can stand in for a state: a changelog record that cannot go stops the
    # worker, whether the broker refuses it (in its delivery report) or librdkafka does (at
    # once: over the producer's own size limit).
    set_max_message_bytes(settings, topic, 8_000)
    outputs.changelog(topic, 0, b"u3", b"s" * 12_000)
    with pytest.raises(ProducerFailed, match="changelog record was lost"):
        outputs.flush(30)
    assert fatal and "changelog record was lost" in fatal[0]
    refusing = outputs_for(settings, [])
    refusing.changelog(topic, 0, b"u4", b"s" * (settings.producer_max_message_bytes + 1))
    with pytest.raises(ProducerFailed, match="changelog record was refused"):
        refusing.flush(30)


# ---------------------------------------------------------------- a live worker


@pytest.fixture
def worker(bootstrap: str, kafka: KafkaIO, tmp_path: Path) -> Iterator[WorkerProcess]:
    settings = isolated_settings(bootstrap, tmp_path, partitions=2, commit_interval_s=0.5)
    # An events topic made by someone else, with producer-set timestamps (CreateTime), not
    # the LogAppendTime liverank creates it with: the worker's own clock must judge event time.
    admin = admin_client(settings)
    topic = NewTopic(settings.topic_events, 2, 1, config={"message.timestamp.type": "CreateTime"})
    for future in admin.create_topics([topic]).values():
        future.result(timeout=30)
    prepare_topics(settings, kafka)
    proc = WorkerProcess(settings, tmp_path / "worker.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def valid_then_answered(worker: WorkerProcess, kafka: KafkaIO, events: list[Event]) -> list[Record]:
    produce(worker.settings, events)
    return answered(kafka, worker.settings, triggers_of(events))


def test_poison_records_never_stop_a_worker(worker: WorkerProcess, kafka: KafkaIO) -> None:
    settings = worker.settings
    big = big_producer(settings)
    partitioner = Partitioner(settings.partitioner)
    home = partition_for(b"u-poison", settings.partitions, partitioner)
    events = interleaved_events(900, seed=41)
    first, second, third = events[:300], events[300:600], events[600:]

    # 1. A 1.02 MB record on another partition than its key's (issue 14: its forward failed and
    # stopped the agent for good), and one on its own partition.
    send(big, settings.topic_events, b"u-poison", b"x" * BIG, (home + 1) % settings.partitions)
    send(big, settings.topic_events, b"u-poison", b"y" * BIG, home)
    valid_then_answered(worker, kafka, first)
    oversize = [d for d in letters(kafka, settings, 2) if d["error"] == "oversize"]
    # (Counted by where they were read: a redelivery would send a dead letter again.)
    assert len({(d["partition"], d["offset"]) for d in oversize}) == 2
    assert {d["value_size"] for d in oversize} == {BIG}
    assert all(d["value_truncated"] for d in oversize)

    # 2. A dead letter the broker refuses: the dead-letter topic's limit shrank below it.
    set_max_message_bytes(settings, settings.topic_dead_letters, 6_000)
    malformed = b"{" + b"a" * 15_000
    send(big, settings.topic_events, b"u-poison", malformed, home)
    valid_then_answered(worker, kafka, second)
    shrunk = [d for d in letters(kafka, settings, 3) if d["value_size"] == len(malformed)]
    assert shrunk and all(d["error"] == "malformed_json" for d in shrunk)
    assert all(len(copied(d)) <= 1024 and d["value_truncated"] is True for d in shrunk)

    # 3. An output the broker refuses: a valid search whose feedback record (it carries the
    # query, 512 four-byte characters) is over the feedback topic's new limit, which the
    # other events' feedback records stay under.
    set_max_message_bytes(settings, settings.topic_feedback, 1_500)
    now_ms = int(time.time() * 1000)
    wordy = Event(
        "e-wordy-" + "w" * 100,
        "u-poison",
        EventType.SEARCH,
        now_ms,
        format_time_ms(now_ms),
        query="\U0001d11e" * 512,
    )
    send(big, settings.topic_events, b"u-poison", encode_event(wordy), home)
    valid_then_answered(worker, kafka, [*third, wordy])
    refused = [d for d in letters(kafka, settings, 4) if d["error"] == "processing_error"]
    assert len(refused) >= 1 and settings.topic_feedback in str(refused[0]["reason"])

    # 4. Events from 1970 and 2100, their producer's timestamps set to match (issue 14: they
    # were applied, and one set liverank_behind_seconds to 56 years).
    rest = interleaved_events(100, seed=43)
    for when_ms in (1_000, 4_102_444_800_000):
        odd = Event(f"e-odd-{when_ms}", "u-poison", EventType.CLICK, when_ms, "", item_id="m1")
        odd = dataclasses.replace(odd, event_time=format_time_ms(when_ms))
        big.produce(
            settings.topic_events,
            key=b"u-poison",
            value=encode_event(odd),
            partition=home,
            timestamp=when_ms,
        )
    assert big.flush(30) == 0
    valid_then_answered(worker, kafka, rest)
    odd_letters = [
        d for d in letters(kafka, settings, 6) if str(d["reason"]).startswith("event_time")
    ]
    assert {d["error"] for d in odd_letters} == {"time_out_of_range"}
    assert len({d["offset"] for d in odd_letters}) == 2
    assert worker.metric("liverank_record_timestamps_replaced_total") >= 2
    assert worker.metric("liverank_behind_seconds") < 86_400

    assert worker.proc is not None and worker.proc.poll() is None
    assert worker.get("/healthz")[0] == 200
    assert worker.metric("liverank_records_refused_total") >= 2
    print(
        f"\npoison: 2 records of {BIG:,} bytes (one misplaced), a dead letter and a feedback "
        f"record over their topics' limits; all {len(triggers_of(events)) + 1} triggers "
        "behind them answered; events from 1970 and 2100 with matching producer timestamps dead-"
        "lettered (time_out_of_range); the worker never stopped"
    )
