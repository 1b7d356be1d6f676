"""The worker's metrics: consumer lag from partition offsets, and its samples following the
assignment."""

from __future__ import annotations

import doctest

import pytest

import app.ops.metrics
from app.core.records import INPUT_RULES, DeadLetterError
from app.ops.metrics import Metrics, PartitionOffsets, consumer_lag, partition_lag


@pytest.mark.parametrize(
    ("offsets", "lag"),
    [
        # committed is the position once there is one, however far the reads have gone
        (PartitionOffsets(highwater=120, committed=100, read=119), 20),
        (PartitionOffsets(highwater=120, committed=120, read=119), 0),
        # before the first commit: the record after the last one read
        (PartitionOffsets(highwater=120, committed=None, read=115), 4),
        (PartitionOffsets(highwater=120, committed=None, read=119), 0),
        # nothing read, nothing committed: unknown unless the partition is empty
        (PartitionOffsets(highwater=120, committed=None, read=None), None),
        (PartitionOffsets(highwater=0, committed=None, read=None), 0),
        # no fetch response yet (aiokafka: None; -1 as librdkafka says "invalid")
        (PartitionOffsets(highwater=None, committed=100, read=100), None),
        (PartitionOffsets(highwater=-1, committed=100, read=100), None),
        # aiokafka reports "no committed offset" as -1 in some paths
        (PartitionOffsets(highwater=50, committed=-1, read=9), 40),
        # committed past the end (log truncated under it): no negative backlog
        (PartitionOffsets(highwater=10, committed=12, read=None), 0),
    ],
)
def test_partition_lag(offsets: PartitionOffsets, lag: int | None) -> None:
    assert partition_lag(offsets) == lag


def test_consumer_lag_keeps_known_partitions_only() -> None:
    lags = consumer_lag(
        {
            ("events", 0): PartitionOffsets(10, 7, 9),
            ("events", 1): PartitionOffsets(None, 7, 9),
            ("events", 2): PartitionOffsets(5, None, None),
        }
    )
    assert lags == {("events", 0): 3}


def lag_samples(metrics: Metrics) -> dict[tuple[str, str], float]:
    return {
        (s.labels["topic"], s.labels["partition"]): s.value
        for family in metrics.registry.collect()
        if family.name == "liverank_consumer_lag_records"
        for s in family.samples
    }


def test_lag_samples_follow_the_assignment() -> None:
    metrics = Metrics()
    metrics.set_consumer_lag({("events", 0): 5, ("events", 1): 0})
    assert lag_samples(metrics) == {("events", "0"): 5.0, ("events", "1"): 0.0}
    # partition 1 revoked, 3 assigned: 1's sample goes instead of staying at its last value
    metrics.set_consumer_lag({("events", 0): 2, ("events", 3): 7})
    assert lag_samples(metrics) == {("events", "0"): 2.0, ("events", "3"): 7.0}
    metrics.set_consumer_lag({})
    assert lag_samples(metrics) == {}


def test_docstring_examples() -> None:
    result = doctest.testmod(app.ops.metrics)
    assert result.attempted > 0 and result.failed == 0


def test_known_label_values_start_at_zero_so_their_first_increment_shows_in_rate() -> None:
    metrics = Metrics()
    value = metrics.registry.get_sample_value
    for error in DeadLetterError:
        assert value("liverank_dead_letters_total", {"error": error.value}) == 0.0
    for result in ("accepted", "rejected", "invalid"):
        assert value("liverank_model_reloads_total", {"result": result}) == 0.0
    for kind in ("search", "next_items"):
        assert value("liverank_recommendations_total", {"kind": kind}) == 0.0
    for rule in INPUT_RULES:
        assert value("liverank_input_rules_total", {"rule": rule}) == 0.0
    metrics.dead_letters.labels(DeadLetterError.OVERSIZE.value).inc()
    assert value("liverank_dead_letters_total", {"error": "oversize"}) == 1.0
