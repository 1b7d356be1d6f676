"""What the worker reads of faust's consumer offsets (app.streams.offsets), without a broker."""

from __future__ import annotations

from typing import Any

from faust.exceptions import ConsumerNotStarted
from faust.types import TP

from app.ops.metrics import PartitionOffsets
from app.streams.offsets import partition_offsets, unread


class _Consumer:
    def __init__(self, highwater: dict[TP, int | None], read: dict[TP, int]) -> None:
        self._highwater = highwater
        self._read_offset = read
        self._committed_offset = {tp: offset - 5 for tp, offset in read.items()}

    def assignment(self) -> set[TP]:
        return {*self._highwater, TP("other", 0)}

    def highwater(self, tp: TP) -> int | None:
        return self._highwater[tp]


def test_unread_counts_records_past_the_last_one_handed_over() -> None:
    consumer = _Consumer(
        {TP("events", 0): 120, TP("events", 1): 50, TP("events", 2): None},
        {TP("events", 0): 99, TP("events", 1): 49},
    )
    # Partition 0: offsets 100..119 not read (20); 1: caught up; 2: nothing known yet.
    assert unread(consumer, "events") == 20
    offsets = partition_offsets(consumer, "events")
    assert offsets[("events", 0)] == PartitionOffsets(highwater=120, committed=94, read=99)
    assert ("other", 0) not in offsets


def test_nothing_is_unread_before_the_consumer_starts() -> None:
    class _NotStarted:
        def assignment(self) -> Any:
            raise ConsumerNotStarted("not yet")

    assert unread(_NotStarted(), "events") == 0
    assert partition_offsets(_NotStarted(), "events") == {}


def test_a_partition_revoked_under_the_stream_counts_nothing_unread() -> None:
    # aiokafka drops a revoked partition (in its own thread) before faust's assignment
    # follows: its highwater() asserts, and the batching heuristic must not crash the agent.
    class _Revoked(_Consumer):
        def highwater(self, tp: TP) -> int | None:
            raise AssertionError("Partition is not assigned")

    consumer = _Revoked({TP("events", 0): 120}, {TP("events", 0): 10})
    assert unread(consumer, "events") == 0
