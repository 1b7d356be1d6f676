"""The pipe's limit: consume events and produce one record each, with no processing at all.

Batched consume and a lingering producer: what this reaches is the ceiling the broker and the
Kafka client set on this machine, before any decoding, state or ranking.

Run as ``python -m app.dev.bench.pipe --help``; ``scripts/bench`` starts it as a process.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from confluent_kafka import Consumer, Producer

from app.dev.bench.kafka_io import stop_on_signals, subscribe
from app.kafka.kafka_config import produce_waiting


def run(bootstrap: str, group: str, source: str, sink: str, ready_file: Path | None) -> int:
    """Copy ``source`` to ``sink`` record by record until SIGTERM; returns the records copied."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest"}
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "acks": 1})
    stopped = stop_on_signals()
    subscribe(consumer, source, ready_file)
    copied = 0
    try:
        while not stopped.is_set():
            # What is already fetched, at once; only when nothing is, wait for one record
            # (consume() with a timeout would hold a partial batch back until it fills).
            batch = consumer.consume(num_messages=1000, timeout=0)
            if not batch:
                msg = consumer.poll(0.1)
                batch = [msg] if msg is not None else []
            for msg in batch:
                if msg.error() is not None:
                    continue
                produce_waiting(producer, sink, 0.005, value=msg.value(), key=msg.key())
                copied += 1
            producer.poll(0)
    finally:
        consumer.close()
        producer.flush(10)
    return copied


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.dev.bench.pipe", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--source", required=True)
    parser.add_argument("--sink", required=True)
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args(argv)
    run(args.bootstrap, args.group, args.source, args.sink, args.ready_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
