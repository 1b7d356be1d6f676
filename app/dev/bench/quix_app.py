"""The Quix Streams baseline: the worker's processing per event in a Quix Streams application.

Each record goes through the worker's own ``Processor.handle`` (a batch of one) inside a
stateful ``StreamingDataFrame.apply``: the user's state is Quix's RocksDB state (``State.get``
and ``State.set``, raw bytes, with Quix's own changelog topic), and every output record is
produced by ``to_topic`` to the worker's topic for its role. Quix commits at-least-once every
``COMMIT_INTERVAL_S``, flushing its producer and state first.

It runs in its own virtualenv (``.venv-quix``: quixstreams pins an older confluent-kafka than
liverank's), configured like the worker through ``LIVERANK_*`` variables; ``scripts/bench``
starts it as ``.venv-quix/bin/python -m app.dev.bench.quix_app``. The only module that imports
quixstreams.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# quixstreams is installed only in .venv-quix; mypy (run from .venv) sees it as Any.
from quixstreams import Application, State, message_context
from quixstreams.models import Topic
from quixstreams.models.serializers import SerializationContext, Serializer
from quixstreams.state.rocksdb import RocksDBOptions

from app.core.records import Source
from app.core.settings import Settings
from app.dev.bench.per_event import load
from app.kafka.kafka_config import keyed_by_user

log = logging.getLogger("liverank.bench.quix")

# Quix keys state by the message key (the user): one entry per user. Bytes, as the state's
# keys go through the same dumps as its values.
STATE_KEY = b"state"


def _raw(value: Any) -> Any:
    """State keys and values are bytes already (values: the worker's encoding): stored as
    they are, not as JSON."""
    return value


class OutputValue(Serializer):  # type: ignore[misc]  # quixstreams is untyped here
    """Produces an output record's value bytes (a tombstone stays None)."""

    def __call__(self, value: Any, ctx: SerializationContext) -> bytes | None:
        payload: bytes | None = value[2]
        return payload


class OutputKey(Serializer):  # type: ignore[misc]
    def __call__(self, value: Any, ctx: SerializationContext) -> bytes | None:
        key: bytes | None = value
        return key


def build(settings: Settings) -> Any:
    """The Quix application, ready to ``run()``."""
    loaded = load(settings)
    processor = loaded.processor
    app = Application(
        broker_address=settings.bootstrap_servers,
        consumer_group=settings.app_id,
        auto_offset_reset="earliest",
        commit_interval=settings.commit_interval_s,
        processing_guarantee="at-least-once",
        state_dir=str(settings.data_dir / "quix-state"),
        rocksdb_options=RocksDBOptions(dumps=_raw, loads=_raw),
        # The worker's partitioner, so output records land where the worker's do.
        producer_extra_config={"acks": "all", "linger.ms": 1, **keyed_by_user(settings)},
        loglevel="INFO",
    )
    events = app.topic(
        settings.topic_events,
        key_deserializer="bytes",
        value_deserializer="bytes",
    )
    outputs: dict[str, Topic] = {
        role: app.topic(name, key_serializer=OutputKey(), value_serializer=OutputValue())
        for role, name in loaded.topics.items()
    }

    def handle(value: bytes, key: bytes, timestamp: int, headers: Any, state: State) -> list[Any]:
        ctx = message_context()
        source = Source(ctx.topic, ctx.partition, ctx.offset, key, timestamp)
        outcome = processor.handle(value, source, lambda _key: state.get(STATE_KEY))
        if outcome.state is not None:
            state.set(STATE_KEY, outcome.state)
        elif outcome.delete:
            state.delete(STATE_KEY)
        return [(out.role, out.key, out.value) for out in outcome.outputs]

    def topic_of(value: Any, key: Any, timestamp: int, headers: Any) -> Topic:
        return outputs[value[0]]

    sdf = app.dataframe(events)
    sdf = sdf.apply(handle, stateful=True, metadata=True, expand=True)
    sdf.to_topic(topic_of, key=lambda value: value[1])
    return app


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.dev.bench.quix_app", description=__doc__)
    parser.add_argument("--ready-file", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level="INFO", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env(dict(os.environ))
    app = build(settings)
    if args.ready_file is not None:
        # Loaded; the bench waits for the group's partition assignment as well.
        args.ready_file.write_text("loaded\n")
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
