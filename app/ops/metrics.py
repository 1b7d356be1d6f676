"""Prometheus metrics, on a registry of the worker's own (so tests can build several)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from app.core.attribution import Impression, Positive
from app.core.records import INPUT_RULES, DeadLetterError
from app.core.shadow import ShadowClosed
from app.ops.quality import SHADOW, Closed, LiveQuality, LiveQualityCollector

# End-to-end latency spans milliseconds (healthy) to minutes (a worker catching up).
_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_SCORING_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
)


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """What a consumer knows of one partition it is assigned.

    ``highwater`` and ``committed`` are next-record offsets, as Kafka counts them: the offset the
    next record written will get, and the next record the group will process. ``read`` is the
    offset of the last record handed to the stream (faust's read offset). None: not known yet.
    """

    highwater: int | None
    committed: int | None
    read: int | None


def partition_lag(offsets: PartitionOffsets) -> int | None:
    """Records between the partition's end and the group's committed position, as Kafka tools and
    KEDA count lag; None when it cannot be known.

    Before the first commit on a partition the read position stands in for the committed one (a
    fresh group starts from the earliest record, whose offset is not known here), and a
    partition with nothing written has no lag.

    >>> partition_lag(PartitionOffsets(highwater=120, committed=100, read=115))
    20
    >>> partition_lag(PartitionOffsets(highwater=120, committed=None, read=115))
    4
    >>> partition_lag(PartitionOffsets(highwater=120, committed=None, read=None)) is None
    True
    """
    if offsets.highwater is None or offsets.highwater < 0:
        return None  # no fetch response yet
    if offsets.committed is not None and offsets.committed >= 0:
        position = offsets.committed
    elif offsets.read is not None and offsets.read >= 0:
        position = offsets.read + 1
    elif offsets.highwater == 0:
        position = 0
    else:
        return None
    # A committed offset past the end (the log truncated under it) is no negative backlog.
    return max(0, offsets.highwater - position)


def consumer_lag(
    partitions: Mapping[tuple[str, int], PartitionOffsets],
) -> dict[tuple[str, int], int]:
    """``partition_lag`` of each (topic, partition) whose lag is known.

    >>> unknown = PartitionOffsets(highwater=None, committed=0, read=None)
    >>> consumer_lag({("ev", 0): PartitionOffsets(9, 4, 8), ("ev", 1): unknown})
    {('ev', 0): 5}
    """
    lags = {tp: partition_lag(offsets) for tp, offsets in partitions.items()}
    return {tp: lag for tp, lag in lags.items() if lag is not None}


@dataclass
class Metrics:
    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )
    quality_k: int = 10

    def __post_init__(self) -> None:
        r = self.registry
        self.quality = LiveQuality(self.quality_k)
        r.register(LiveQualityCollector(self.quality))
        self.positives = Counter(
            "liverank_attribution_positives",
            "Actions on recommended items within the attribution window.",
            ["model_version", "action"],
            registry=r,
        )
        self.model_reloads = Counter(
            "liverank_model_reloads",
            "Model updates from the model-updates topic, by result: accepted, rejected (failed "
            "the gate; the serving model stays) or invalid (not a model update record).",
            ["result"],
            registry=r,
        )
        self.impressions_closed = Counter(
            "liverank_impressions_closed",
            "Impressions whose attribution window closed (window) or that were evicted.",
            ["model_version", "reason"],
            registry=r,
        )
        self.events = Counter(
            "liverank_events", "Input events by type and outcome.", ["type", "outcome"], registry=r
        )
        self.dead_letters = Counter(
            "liverank_dead_letters",
            "Records sent to the dead-letter topic, by error.",
            ["error"],
            registry=r,
        )
        self.rerouted = Counter(
            "liverank_events_rerouted",
            "Events that arrived on a partition their key does not belong on (under "
            "PARTITIONER) and were forwarded to theirs: a producer with another partitioner, or "
            "one that has not seen a partition increase yet.",
            registry=r,
        )
        self.recommendations = Counter(
            "liverank_recommendations",
            "Recommendation records emitted, by kind.",
            ["kind"],
            registry=r,
        )
        self.end_to_end = Histogram(
            "liverank_end_to_end_latency_seconds",
            "From the event's event_time to the recommendation being handed to the producer.",
            ["kind"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.processing = Histogram(
            "liverank_processing_seconds",
            "Time the worker spends on one micro-batch: decode, state, retrieval, scoring, "
            "encode, table writes and handing records to the producer.",
            buckets=_SCORING_BUCKETS,
            registry=r,
        )
        self.scoring = Histogram(
            "liverank_scoring_seconds",
            "Time of one micro-batch's ranking (retrieval, features, one model call).",
            buckets=_SCORING_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "liverank_batch_size",
            "Records per micro-batch taken from the stream.",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.model_batch_size = Histogram(
            "liverank_model_batch_size",
            "Events ranked per model call (one call per micro-batch).",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )
        self.degraded = Counter(
            "liverank_degraded",
            "Recommendations answered by the cheap path: the record waited longer than "
            "deadline_ms before it was ranked.",
            registry=r,
        )
        self.coalesced = Counter(
            "liverank_coalesced",
            "Triggering events answered by a later event's ranking of the same user in the same "
            "micro-batch.",
            registry=r,
        )
        self.queue_age = Histogram(
            "liverank_queue_age_seconds",
            "From a record's Kafka timestamp to its processing: how far behind the worker is.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.behind = Gauge(
            "liverank_behind_seconds",
            "Queue age of the oldest record in the latest micro-batch.",
            registry=r,
        )
        self.rules = Counter(
            "liverank_input_rules",
            "Events applied under a documented rule instead of dead-lettered: unknown_item, "
            "withdrawn_item, out_of_order (docs/guarantees.md).",
            ["rule"],
            registry=r,
        )
        self.forgotten = Counter(
            "liverank_users_forgotten",
            "forget_user events applied: the user's state deleted.",
            registry=r,
        )
        self.state_resets = Counter(
            "liverank_state_resets",
            "User states that could not be read and were started afresh.",
            registry=r,
        )
        self.model_info = Gauge(
            "liverank_model_info",
            "The loaded model; value 1 on the current version.",
            ["model_version"],
            registry=r,
        )
        self.shadow_info = Gauge(
            "liverank_shadow_model_info",
            "The shadow model (scored beside the serving one, never served); value 1 on the "
            "current shadow version, none while there is no shadow.",
            ["model_version"],
            registry=r,
        )
        self.shadow_events = Counter(
            "liverank_shadow_events",
            "Events the serving model ranked that the shadow model ranked too (ranked), or "
            "could not (skipped: its item vectors for the catalog were being built, or it "
            "failed).",
            ["outcome"],
            registry=r,
        )
        for outcome in ("ranked", "skipped"):
            self.shadow_events.labels(outcome)
        self.shadow_scoring = Histogram(
            "liverank_shadow_scoring_seconds",
            "Time of the shadow model's ranking of one micro-batch (its cost to the worker).",
            buckets=_SCORING_BUCKETS,
            registry=r,
        )
        self.catalog_items = Gauge(
            "liverank_catalog_items", "Active items in the in-memory catalog index.", registry=r
        )
        self.catalog_updates = Counter(
            "liverank_catalog_updates", "Catalog records applied, by kind.", ["kind"], registry=r
        )
        self.ready = Gauge("liverank_ready", "1 when the worker is ready for traffic.", registry=r)
        self.consumer_lag = Gauge(
            "liverank_consumer_lag_records",
            "Records in each events-topic partition assigned to this worker that its consumer "
            "group has not committed yet: high watermark minus committed offset (before the "
            "first commit, minus the read position). Updated every second.",
            ["topic", "partition"],
            registry=r,
        )
        self.records_refused = Counter(
            "liverank_records_refused",
            "Records the producer or the broker refused for their size (librdkafka's "
            "message.max.bytes, the topic's max.message.bytes), by topic: each was replaced by "
            "a dead letter that fits (a refused dead letter by a shorter copy of itself).",
            ["topic"],
            registry=r,
        )
        self.last_progress = Gauge(
            "liverank_last_progress_timestamp_seconds",
            "Unix time of the last micro-batch of events processed (or of the last moment "
            "nothing was waiting on an assigned partition): a stalled worker's stops moving.",
            registry=r,
        )
        self.timestamps_replaced = Counter(
            "liverank_record_timestamps_replaced",
            "Event records whose Kafka timestamp was further from the worker's clock than "
            "MAX_EVENT_AGE_S or MAX_EVENT_FUTURE_S (a producer's clock): the worker's clock "
            "judged their event_time instead.",
            registry=r,
        )
        self._lag_partitions: set[tuple[str, int]] = set()
        # Every known label value from the start, at 0: a counter's first increment then shows
        # in rate() and increase() (a series born at 1 has no earlier sample to differ from),
        # so the first dead letter of a kind after a restart counts on the dashboard and in
        # the alerts.
        for error in DeadLetterError:
            self.dead_letters.labels(error.value)
        for result in ("accepted", "rejected", "invalid"):
            self.model_reloads.labels(result)
        for kind in ("search", "next_items"):
            self.recommendations.labels(kind)
        for rule in INPUT_RULES:
            self.rules.labels(rule)

    def set_consumer_lag(self, lags: Mapping[tuple[str, int], int]) -> None:
        """One sample per partition in ``lags``; the samples of any other partition (revoked,
        or its lag not known now) are removed rather than left at their last value."""
        for topic, partition in self._lag_partitions - lags.keys():
            self.consumer_lag.remove(topic, str(partition))
        for (topic, partition), lag in lags.items():
            self.consumer_lag.labels(topic, str(partition)).set(lag)
        self._lag_partitions = set(lags)

    def attributed(self, positives: Iterable[Positive], closed: Iterable[Impression]) -> None:
        """Count what attribution emitted and feed the live quality windows."""
        for p in positives:
            self.positives.labels(p.impression.model_version, p.acted.action).inc()
        now_ms = time.time_ns() // 1_000_000
        for imp in closed:
            self.impressions_closed.labels(imp.model_version, imp.closed_reason or "window").inc()
            self.quality.add(Closed.of(imp), now_ms)

    def shadow_closed(self, closed: Iterable[ShadowClosed]) -> None:
        """Feed the shadow model's closed impressions to the live quality windows."""
        now_ms = time.time_ns() // 1_000_000
        for _, imp in closed:
            self.quality.add(Closed.of(imp, SHADOW), now_ms)
