"""The Faust tables: per-user state, keyed by user_id like the events topic."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import faust
from faust.types import TP

from app.core.settings import Settings
from app.kafka.topics import USER_STATE_TABLE


class ChangelogSink(Protocol):
    def changelog(self, topic: str, partition: int, key: bytes, value: bytes | None) -> None: ...


class UserStateTable(faust.Table[bytes, bytes]):
    """faust's table, with its changelog records sent by librdkafka.

    faust sends a table's changelog through its aiokafka producer. That costs event-loop time
    per record: its buffer, the producer's sender, the protocol encoding. Its commit also waits
    for that producer's flush while the agent keeps adding records. Here they go to ``sink`` (the
    worker's :class:`app.streams.outputs.OutputProducer`), on the same changelog partition,
    through librdkafka as the outputs do, and the commit's flush covers them too.

    faust remembers in each RocksDB partition the newest changelog offset it holds; a restore
    reads the changelog from there. Here the producer keeps the delivered offsets, and
    :meth:`persist_changelog_offsets` writes them after every commit's flush. A record
    delivered after the last commit is read again by a restore, which only replays values
    already stored.
    """

    def __init__(self, app: faust.App, *, sink: ChangelogSink, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.sink = sink

    def on_key_set(self, key: bytes, value: bytes) -> None:
        partition = self._changelog_partition(key)
        self.sink.changelog(self.changelog_topic_name, partition, key, value)
        self._maybe_set_key_ttl(key, partition)
        self._sensor_on_set(self, key, value)

    def on_key_del(self, key: bytes) -> None:
        partition = self._changelog_partition(key)
        # A tombstone: no restore or standby brings the state back.
        self.sink.changelog(self.changelog_topic_name, partition, key, None)
        self._maybe_del_key_ttl(key, partition)
        self._sensor_on_del(self, key)

    def _changelog_partition(self, key: bytes) -> int:
        # The current record's partition: co-partitioned with the events topic.
        partition = self.partition_for_key(key)
        if partition is None:  # only with use_partitioner, which this table does not set
            raise RuntimeError("the user-state table needs a record's partition")
        return partition

    def persist_changelog_offsets(self, offsets: Mapping[tuple[str, int], int]) -> None:
        """Remember the newest delivered changelog offsets in the RocksDB partitions this
        worker holds (a partition revoked meanwhile is skipped: its next owner reads the
        changelog itself)."""
        open_partitions: Any = getattr(self.data, "_dbs", None)
        for (topic, partition), offset in offsets.items():
            if topic != self.changelog_topic_name:
                continue
            if open_partitions is not None and partition not in open_partitions:
                continue
            self.data.set_persisted_offset(TP(topic, partition), offset)


def rocksdb_options(memory_mb: int) -> dict[str, int]:
    """faust's RocksDB options for one partition's database within ``memory_mb``: two write
    buffers of a quarter each, a block cache of half.

    faust's defaults are 64 MiB write buffers, up to three of them, and a 2 GiB block cache, per
    partition: every state write adds a version to the write buffer, so a worker's memory grew
    by the states it wrote until 192 MiB per partition were full (docs/benchmarks.md).

    >>> rocksdb_options(32)
    {'write_buffer_size': 8388608, 'max_write_buffer_number': 2, 'block_cache_size': 16777216}
    """
    mib = 1024 * 1024
    return {
        "write_buffer_size": memory_mb * mib // 4,
        "max_write_buffer_number": 2,
        "block_cache_size": memory_mb * mib // 2,
    }


def user_state_table(app: faust.App, settings: Settings, sink: ChangelogSink) -> UserStateTable:
    """Raw bytes in and out: ``app.core.state`` owns the encoding.

    The changelog has the events topic's partition count and a user's value is written while
    processing that user's event, so the value lands on the same partition number: the table is
    co-partitioned with the events topic, and a user's state lives with the worker that owns
    their events. ``sink``: where its changelog records go.
    """
    table = UserStateTable(
        app,
        sink=sink,
        name=USER_STATE_TABLE,
        default=None,
        beacon=app.tables.beacon,
        partitions=settings.partitions,
        options=rocksdb_options(settings.state_memory_mb),
        # Serialized with the app-wide "raw" key/value serializers (app.streams.main).
        key_type=bytes,
        value_type=bytes,
    )
    app.tables.add(table)
    return table
