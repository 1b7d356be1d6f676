"""What faust's consumer knows of its partitions' offsets, read without a broker request."""

from __future__ import annotations

from typing import Any

from faust.exceptions import ConsumerNotStarted

from app.ops.metrics import PartitionOffsets


def partition_offsets(consumer: Any, topic: str) -> dict[tuple[str, int], PartitionOffsets]:
    """What faust's consumer knows of each partition of ``topic`` assigned to it (none before
    the consumer has started). Reads only what the consumer already holds: no broker request."""
    try:
        assigned = [tp for tp in consumer.assignment() if tp.topic == topic]
    except ConsumerNotStarted:
        return {}
    # faust keeps each partition's committed and read offsets (set from the group's committed
    # offsets on assignment, updated on every commit and read, dropped on revocation) but has no
    # public accessor for them; its Monitor's copies are not reset when a partition moves away
    # and back, so they would report a stale position.
    committed = consumer._committed_offset
    read = consumer._read_offset
    return {
        # highwater: the log end offset of the latest fetch response (None before the first).
        (tp.topic, tp.partition): PartitionOffsets(
            consumer.highwater(tp), committed.get(tp), read.get(tp)
        )
        for tp in assigned
    }


def unread(consumer: Any, topic: str) -> int:
    """Records of ``topic``'s assigned partitions not yet handed to the stream, as of the latest
    fetch responses (0 where a partition's offsets are not known yet)."""
    try:
        known = partition_offsets(consumer, topic)
    except AssertionError:
        # aiokafka asserts the partition is assigned: during a rebalance its assignment changes
        # (in the consumer's thread) before faust's does. Nothing is known to be waiting then.
        return 0
    behind = 0
    for offsets in known.values():
        if offsets.highwater is not None and offsets.read is not None:
            # read: the offset of the last record handed over; highwater: the next one written.
            behind += max(0, offsets.highwater - offsets.read - 1)
    return behind
