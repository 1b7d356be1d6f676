"""Which partition a user's records belong on, and how a partition count change moves them.

Events are keyed by ``user_id``; a user's state lives in the table partition of the same number
as the events partition their records arrive on (the table is co-partitioned with the events
topic). Which partition that is depends on the producers' partitioner and the partition count,
so both are part of the events topic's contract:

- ``murmur2``: the Java client's default (also Kafka Streams, Faust/aiokafka and kafka-python);
  librdkafka clients get it with ``partitioner=murmur2_random``.
- ``crc32``: librdkafka's default (``consistent_random``), used by confluent-kafka-python, -go
  and -dotnet producers left at their defaults.

Changing the partition count re-maps keys: with ``murmur2`` or ``crc32``, going from N to 2N
partitions keeps a key where it was or moves it to ``p + N``, so about half the users move.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from aiokafka.partitioner import murmur2


class Partitioner(StrEnum):
    MURMUR2 = "murmur2"
    CRC32 = "crc32"

    @property
    def librdkafka(self) -> str:
        """The librdkafka ``partitioner`` value that places keyed records the same way."""
        return "murmur2_random" if self is Partitioner.MURMUR2 else "consistent_random"


def partition_for(key: bytes, partitions: int, partitioner: Partitioner) -> int:
    """The partition a producer using ``partitioner`` writes ``key`` to, out of ``partitions``.

    >>> partition_for(b"u1", 4, Partitioner.MURMUR2), partition_for(b"u1", 4, Partitioner.CRC32)
    (0, 2)
    """
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    if partitioner is Partitioner.MURMUR2:
        # Java: Utils.toPositive(Utils.murmur2(key)) % numPartitions.
        return (int(murmur2(key)) & 0x7FFFFFFF) % partitions
    # librdkafka's rd_kafka_msg_partitioner_consistent: rd_crc32(key) % partition_cnt.
    return zlib.crc32(key) % partitions


def misplaced(
    key: bytes | None, partition: int, partitions: int, partitioner: Partitioner
) -> int | None:
    """The partition a record that arrived on ``partition`` belongs on, or None where it is.

    A keyless record has no home: it stays (and is dead-lettered where it is)."""
    if key is None:
        return None
    home = partition_for(key, partitions, partitioner)
    return None if home == partition else home


@dataclass(frozen=True, slots=True)
class Copy:
    """A key's live value on one partition of the changelog (the value itself stays in Kafka:
    the migration reads it again, one partition at a time, when it moves)."""

    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Move:
    """Copy the key's value from partition ``source`` to partition ``to`` (no copy when
    ``source`` is None: ``to`` has the value already), then delete the key from each of
    ``tombstone``."""

    key: bytes
    to: int
    source: int | None
    tombstone: tuple[int, ...]


def live_copies(
    records: Iterable[tuple[bytes | None, int, int, bool]],
) -> dict[bytes, dict[int, Copy]]:
    """Key -> partition -> its live copy, from changelog records ``(key, partition, offset,
    is_tombstone)`` in any order: per key and partition the highest offset wins, and a
    tombstone there means no live value on that partition. Keys only, so that the index of a
    large changelog fits in memory."""
    last: dict[tuple[bytes, int], tuple[int, bool]] = {}
    for key, partition, offset, tombstone in records:
        if key is None:
            continue
        seen = last.get((key, partition))
        if seen is None or offset > seen[0]:
            last[(key, partition)] = (offset, tombstone)
    live: dict[bytes, dict[int, Copy]] = {}
    for (key, partition), (offset, tombstone) in last.items():
        if not tombstone:
            live.setdefault(key, {})[partition] = Copy(partition, offset)
    return live


def plan_moves(
    live: Mapping[bytes, Mapping[int, Copy]], partitions: int, partitioner: Partitioner
) -> list[Move]:
    """The moves that leave every key live on exactly its partition under ``partitions``.

    A key already live where it belongs keeps that value (a re-run after a partial migration
    finds the copies it wrote) and loses any stray copies; otherwise its newest copy (highest
    offset; only an interrupted earlier run leaves more than one, and then they are equal)
    moves there. Keys alone where they belong need nothing: a finished plan plans nothing.
    """
    moves = []
    for key in sorted(live):
        copies = live[key]
        target = partition_for(key, partitions, partitioner)
        strays = tuple(sorted(p for p in copies if p != target))
        if not strays:
            continue
        if target in copies:
            moves.append(Move(key, target, None, strays))
        else:
            newest = max(copies.values(), key=lambda c: (c.offset, c.partition))
            moves.append(Move(key, target, newest.partition, strays))
    return moves
