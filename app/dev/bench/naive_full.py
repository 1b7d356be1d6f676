"""The like-for-like naive baseline: a plain per-event confluent-kafka loop doing the worker's work.

Poll one record, hand it to the worker's own ``Processor.handle`` (a batch of one: decode,
deduplicate, state, attribution, ranking with the worker's model and catalog), produce every
output record to the worker's topics, store the user's state in RocksDB and write it to a
compacted changelog topic keyed by user id (the topic a Faust table would use), so that the
state survives the machine as the worker's does. Offsets are committed every
``COMMIT_INTERVAL_S`` after the producer is flushed: at-least-once, as the worker. What it
lacks is only the worker's batching and Faust.

Configured like the worker, through ``LIVERANK_*`` variables; ``scripts/bench`` starts it as
``python -m app.dev.bench.naive_full --ready-file PATH``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from rocksdict import Options, Rdict

from app.core.records import Source
from app.core.settings import Settings
from app.dev.bench.kafka_io import stop_on_signals, subscribe
from app.dev.bench.per_event import load
from app.kafka.kafka_config import PRODUCER_QUEUE, client_config, keyed_by_user, produce_waiting
from app.kafka.topics import changelog_topic

log = logging.getLogger("liverank.bench.naive_full")


def run(settings: Settings, ready_file: Path | None) -> int:
    """Consume until SIGTERM/SIGINT; returns how many records were processed."""
    loaded = load(settings)
    processor, topics = loaded.processor, loaded.topics
    changelog = changelog_topic(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Rdict(str(settings.data_dir / "naive-full-state"), options=Options(raw_mode=True))
    # The worker's producer settings (app.streams.outputs), so that delivery costs the same.
    producer = Producer(
        client_config(
            settings,
            {
                "linger.ms": 1,
                "acks": "all",
                "enable.idempotence": True,
                **PRODUCER_QUEUE,
                **keyed_by_user(settings),
            },
        )
    )
    consumer = Consumer(
        client_config(
            settings,
            {
                "group.id": settings.app_id,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
            },
        )
    )
    stopped = stop_on_signals()
    subscribe(consumer, settings.topic_events, ready_file)
    processed = 0
    uncommitted = False
    next_commit = time.monotonic() + settings.commit_interval_s
    try:
        while not stopped.is_set():
            msg = consumer.poll(0.1)
            if msg is not None and msg.error() is None:
                partition = msg.partition() or 0
                source = Source(
                    msg.topic() or "", partition, msg.offset() or 0, msg.key(), msg.timestamp()[1]
                )
                outcome = processor.handle(msg.value(), source, db.get)
                for out in outcome.outputs:
                    produce_waiting(producer, topics[out.role], key=out.key, value=out.value)
                if outcome.user_id is not None and (outcome.state is not None or outcome.delete):
                    key = outcome.user_id.encode("utf-8")
                    if outcome.state is not None:
                        db[key] = outcome.state
                    else:
                        db.delete(key)
                    # Co-partitioned with the events, as a Faust table's changelog.
                    produce_waiting(
                        producer, changelog, key=key, value=outcome.state, partition=partition
                    )
                producer.poll(0)
                consumer.store_offsets(msg)
                uncommitted = True
                processed += 1
            if uncommitted and time.monotonic() >= next_commit:
                commit(producer, consumer)
                uncommitted = False
                next_commit = time.monotonic() + settings.commit_interval_s
    finally:
        if uncommitted:
            commit(producer, consumer)
        consumer.close()
        producer.flush(10)
        db.close()
    return processed


def commit(producer: Producer, consumer: Consumer) -> None:
    """Every output and changelog record on the broker, then the offsets: at-least-once."""
    left = producer.flush(30)
    if left:
        raise RuntimeError(f"{left} records not delivered; offsets not committed")
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._NO_OFFSET:
            raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.dev.bench.naive_full", description=__doc__)
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # An entry point, like the worker's: its settings come from the environment.
    settings = Settings.from_env(dict(os.environ))
    processed = run(settings, args.ready_file)
    log.info("stopped after %d records", processed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
