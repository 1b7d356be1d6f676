"""The Kafka surface: every topic liverank reads or writes, and the command that creates them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    ConfigResource,
    NewTopic,
)

from app.core.settings import RECORD_OVERHEAD_BYTES, Settings, dead_letter_bound
from app.kafka.kafka_config import admin_client

log = logging.getLogger(__name__)

# The Faust table of per-user state (app.streams.tables).
USER_STATE_TABLE = "user-state"


def changelog_topic(settings: Settings) -> str:
    """The state table's changelog, named as Faust names it: ``<app id>-<table>-changelog``."""
    return f"{settings.app_id}-{USER_STATE_TABLE}-changelog"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    role: str = ""


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Events, recommendations and feedback share a partition count: all are keyed by user_id."""
    p = settings.partitions
    return [
        TopicSpec(
            settings.topic_events,
            p,
            # The broker's clock stamps each record: an event's event_time is judged against
            # it, never against a timestamp its producer chose (the worker also checks any
            # timestamp against its own clock; app.streams.agents.events.plausible_timestamp).
            {"message.timestamp.type": "LogAppendTime"},
            role="events in (key: user_id)",
        ),
        TopicSpec(
            settings.topic_catalog,
            settings.catalog_partitions,
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
            role="item catalog in, compacted (key: item_id)",
        ),
        TopicSpec(
            settings.topic_recommendations,
            p,
            # The broker stamps each record when it appends it: downstream (and the benchmark)
            # read end-to-end freshness as record timestamp minus event_time.
            {"message.timestamp.type": "LogAppendTime"},
            role="recommendations out (key: user_id)",
        ),
        TopicSpec(settings.topic_feedback, p, role="feedback out (key: user_id)"),
        # Faust would create it on first start; declaring it here lets SREs create it (with the
        # events topic's partitions, compacted) before the first worker and keep it in the
        # partition migration (app.kafka.repartition).
        TopicSpec(
            changelog_topic(settings),
            p,
            {"cleanup.policy": "compact"},
            role="per-user state changelog, Faust's table (key: user_id)",
        ),
        TopicSpec(
            settings.topic_attribution,
            p,
            role="attributed positives and negatives out (key: user_id)",
        ),
        TopicSpec(settings.topic_dead_letters, 1, role="dead letters out"),
        TopicSpec(
            settings.topic_model_updates,
            1,
            {"cleanup.policy": "compact", "min.compaction.lag.ms": "0"},
            role="model versions in, compacted (key: model name)",
        ),
    ]


class PartitionMismatch(RuntimeError):
    """The events topic or the state changelog does not have ``PARTITIONS`` partitions."""


def partition_problems(settings: Settings, existing: Mapping[str, int]) -> list[str]:
    """What is wrong with the partition counts of existing topics (name -> partitions).

    The events topic and the state changelog must have exactly ``PARTITIONS``: a worker
    configured for another count would look for users' state on the wrong partition. Topics
    that do not exist yet are fine (they are created with the right count).
    """
    problems = []
    for name in (settings.topic_events, changelog_topic(settings)):
        have = existing.get(name)
        if have is not None and have != settings.partitions:
            problems.append(f"{name} has {have} partitions")
    if problems:
        problems.append(
            f"LIVERANK_PARTITIONS is {settings.partitions}: set it to the topics' count, or "
            "finish the partition migration (python -m app partitions migrate; "
            "docs/operating.md#migrate-partitions-n-to-m)"
        )
    return problems


def partition_counts(admin: AdminClient, names: Sequence[str], timeout_s: float) -> dict[str, int]:
    """name -> partition count, for the topics of ``names`` that exist."""
    topics = admin.list_topics(timeout=timeout_s).topics
    return {n: len(topics[n].partitions) for n in names if n in topics}


def check_partitions(settings: Settings, timeout_s: float = 30.0) -> None:
    """Raise :class:`PartitionMismatch` when :func:`partition_problems` finds any."""
    names = [settings.topic_events, changelog_topic(settings)]
    existing = partition_counts(admin_client(settings), names, timeout_s)
    problems = partition_problems(settings, existing)
    if problems:
        raise PartitionMismatch("; ".join(problems))


class TopicTooSmall(RuntimeError):
    """A topic's max.message.bytes is below the largest record liverank may write to it."""


def needed_message_bytes(settings: Settings) -> dict[str, int]:
    """The largest record liverank may write to each topic with a size that settings decide:
    dead letters copy up to ``DEAD_LETTER_MAX_BYTES`` of a record's key and value; forwarded
    events and feedback records carry up to ``MAX_EVENT_BYTES``."""
    carrying_event = settings.max_event_bytes + RECORD_OVERHEAD_BYTES
    return {
        settings.topic_dead_letters: dead_letter_bound(settings.dead_letter_max_bytes),
        settings.topic_events: carrying_event,
        settings.topic_feedback: carrying_event,
    }


def size_problems(settings: Settings, limits: Mapping[str, int]) -> list[str]:
    """Topics (name -> max.message.bytes) whose limit is below :func:`needed_message_bytes`."""
    return [
        f"{name} takes records of at most {limits[name]} bytes (max.message.bytes), but "
        f"liverank may write {need} bytes to it: raise the topic's max.message.bytes or lower "
        f"LIVERANK_DEAD_LETTER_MAX_BYTES / LIVERANK_MAX_EVENT_BYTES"
        for name, need in needed_message_bytes(settings).items()
        if name in limits and limits[name] < need
    ]


def message_limits(admin: AdminClient, names: Sequence[str], timeout_s: float) -> dict[str, int]:
    """name -> max.message.bytes, for the topics of ``names`` whose configuration can be read
    (one missing or not readable, for lack of a DescribeConfigs ACL say, is left out)."""
    existing = admin.list_topics(timeout=timeout_s).topics
    resources = [ConfigResource("topic", name) for name in names if name in existing]
    limits: dict[str, int] = {}
    if not resources:
        return limits
    for resource, future in admin.describe_configs(resources).items():
        try:
            entry = future.result(timeout=timeout_s).get("max.message.bytes")
        except Exception as exc:
            log.warning("cannot read %s's max.message.bytes: %s", resource.name, exc)
            continue
        if entry is not None and entry.value is not None:
            limits[resource.name] = int(entry.value)
    return limits


def check_message_sizes(settings: Settings, timeout_s: float = 30.0) -> None:
    """Raise :class:`TopicTooSmall` when a topic cannot take the records settings allow
    (the settings themselves are checked against the producer's limit when they are read)."""
    names = list(needed_message_bytes(settings))
    problems = size_problems(settings, message_limits(admin_client(settings), names, timeout_s))
    if problems:
        raise TopicTooSmall("; ".join(problems))


def create_topics(settings: Settings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create missing topics; returns name -> 'created' | 'exists'. Raises on other errors.

    Existing topics are left as they are; a partition count that differs is reported, since
    changing it re-maps keys to partitions (see docs/operating.md, Migrate partitions).
    """
    admin = admin_client(settings)
    specs = topic_specs(settings)
    existing = admin.list_topics(timeout=timeout_s).topics
    result: dict[str, str] = {}
    new = []
    for spec in specs:
        if spec.name in existing:
            have = len(existing[spec.name].partitions)
            if have != spec.partitions:
                log.warning(
                    "topic %s has %d partitions, settings say %d", spec.name, have, spec.partitions
                )
            result[spec.name] = "exists"
        else:
            new.append(
                NewTopic(
                    spec.name,
                    num_partitions=spec.partitions,
                    replication_factor=settings.replication_factor,
                    config=spec.config,
                )
            )
    if new:
        for name, future in admin.create_topics(new, operation_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
                result[name] = "created"
            except Exception as exc:
                # Another process may have created it between list and create.
                if "TOPIC_ALREADY_EXISTS" in str(exc):
                    result[name] = "exists"
                else:
                    raise
    return result
