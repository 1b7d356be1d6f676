"""The Kafka surface: every topic liverank reads or writes, and the command that creates them."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from app.kafka_config import admin_client
from app.settings import Settings

log = logging.getLogger(__name__)

# The Faust table of per-user state (app.tables).
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
        TopicSpec(settings.topic_events, p, role="events in (key: user_id)"),
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
        # partition migration (app.repartition).
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
            "finish the partition migration (python -m app partitions migrate; README: "
            "Operating liverank)"
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


def create_topics(settings: Settings, timeout_s: float = 30.0) -> dict[str, str]:
    """Create missing topics; returns name -> 'created' | 'exists'. Raises on other errors.

    Existing topics are left as they are; a partition count that differs is reported, since
    changing it re-maps keys to partitions (see the scaling notes in README.md).
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
