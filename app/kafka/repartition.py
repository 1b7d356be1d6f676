"""Change the partition count without losing user state: ``python -m app partitions``.

Faust's table is co-partitioned with the events topic: user ``u``'s state lives in changelog
partition ``partition_for(u, N)``. Adding partitions to the topics alone re-maps about half the
users to new partitions, where their next events would find no state (and the old copy would
linger on a worker that no longer sees their events). The migration, with every worker stopped:

1. checks that the consumer group has no members (a running worker would write state meanwhile);
2. reads the changelog: the live state of every user and the partition it is on;
3. adds partitions to the events topic, the changelog and the other user-keyed topics (a topic
   already at the target count, say because Strimzi's topic operator grew it, is left alone);
4. writes each moved user's state to their new changelog partition and, once the broker has all
   of them, a tombstone on the old one (a worker's RocksDB replays it and drops the copy);
5. commits offset 0 for the events topic's new partitions, so the events producers write there
   before the workers start are processed, whatever ``auto.offset.reset`` says;
6. reads the changelog again and checks that every user is live on exactly their partition.

Every step converges instead of assuming where the last run stopped, so a failed or interrupted
run is finished by running it again. Events still arriving on a user's old partition (written
before the increase, or by producers that have not refreshed their metadata) are forwarded to the
new one by the workers (``app.core.partitioning.misplaced``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import (
    ConsumerGroupTopicPartitions,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewPartitions  # type: ignore[attr-defined]

from app.core.partitioning import Copy, Move, Partitioner, live_copies, plan_moves
from app.core.settings import Settings
from app.kafka.kafka_config import RecordRefused, admin_client, client_config, produce_waiting
from app.kafka.topic_reader import read_topic
from app.kafka.topics import changelog_topic, partition_counts

log = logging.getLogger(__name__)


class MigrationRefused(RuntimeError):
    """The migration cannot start (or finish) safely; the message says why and what to do."""


def user_keyed_topics(settings: Settings) -> list[str]:
    """Topics keyed by user_id that share ``PARTITIONS``: the events topic and the changelog
    (co-partitioned, required) and the outputs (so downstream finds a user where it did)."""
    return [
        settings.topic_events,
        changelog_topic(settings),
        settings.topic_recommendations,
        settings.topic_feedback,
        settings.topic_attribution,
    ]


@dataclass
class Report:
    partitions: int
    topics_before: dict[str, int] = field(default_factory=dict)
    expanded: dict[str, int] = field(default_factory=dict)
    users: int = 0
    moves: list[Move] = field(default_factory=list)
    offsets_set: list[int] = field(default_factory=list)
    dry_run: bool = False

    @property
    def moved(self) -> int:
        return sum(1 for m in self.moves if m.source is not None)

    @property
    def tombstones(self) -> int:
        return sum(len(m.tombstone) for m in self.moves)

    def lines(self) -> list[str]:
        out = [f"target: {self.partitions} partitions{' (dry run)' if self.dry_run else ''}"]
        for name, count in self.topics_before.items():
            grown = self.expanded.get(name)
            change = f" -> {grown}" if grown is not None else ""
            verb = "would grow" if self.dry_run and count < self.partitions else ""
            out.append(f"  {name}: {count}{change} {verb}".rstrip())
        out.append(
            f"users with state: {self.users}; moved to their new partition: {self.moved}; "
            f"stale copies tombstoned: {self.tombstones}"
        )
        if self.offsets_set:
            out.append(f"events partitions starting at offset 0: {self.offsets_set}")
        return out


def group_members(admin: AdminClient, group: str, timeout_s: float) -> int:
    """How many consumers are in ``group`` now (0 when it is empty or unknown)."""
    future = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group]
    return len(future.result(timeout=timeout_s).members)


def _wait_for_empty_group(admin: AdminClient, group: str, wait_s: float, timeout_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        members = group_members(admin, group, timeout_s)
        if members == 0:
            return
        if time.monotonic() >= deadline:
            raise MigrationRefused(
                f"consumer group {group!r} still has {members} member(s): stop every worker "
                "first (kubectl scale statefulset liverank --replicas=0; a killed worker leaves "
                "the group after SESSION_TIMEOUT_S, or use --wait-s)"
            )
        time.sleep(1.0)


def read_live(settings: Settings, timeout_s: float) -> dict[bytes, dict[int, Copy]]:
    """Every user's live state copies in the changelog, keys and offsets only (empty when the
    changelog does not exist yet)."""
    topic = changelog_topic(settings)
    try:
        return live_copies(
            (m.key(), m.partition() or 0, m.offset() or 0, m.value() is None)
            for m in read_topic(settings, topic, timeout_s=timeout_s)
        )
    except RuntimeError as exc:
        if "not found" in str(exc):
            return {}
        raise


def _copy_moves(
    settings: Settings, writer: _Writer, moves: Sequence[Move], timeout_s: float
) -> None:
    """Write each move's value to its new partition, reading the source partitions one at a
    time: memory holds one partition's moving values, not the changelog."""
    topic = changelog_topic(settings)
    by_source: dict[int, dict[bytes, Move]] = {}
    for move in moves:
        if move.source is not None:
            by_source.setdefault(move.source, {})[move.key] = move
    for source, wanted in sorted(by_source.items()):
        latest: dict[bytes, tuple[int, bytes | None]] = {}
        for m in read_topic(settings, topic, timeout_s=timeout_s, partitions=[source]):
            key = m.key()
            if key in wanted:
                offset = m.offset() or 0
                if key not in latest or offset > latest[key][0]:
                    latest[key] = (offset, m.value())
        for key, move in wanted.items():
            value = latest.get(key, (0, None))[1]
            if value is None:
                raise MigrationRefused(
                    f"the state of {key!r} left partition {source} while migrating: is a worker "
                    "running? Stop it and run the migration again"
                )
            writer.put(topic, key, value, move.to)
        writer.confirm(timeout_s)
        log.info("partition %d: %d states copied", source, len(wanted))


class _Writer:
    """Changelog writes at a chosen partition, idempotent, every one confirmed."""

    def __init__(self, settings: Settings) -> None:
        self._errors: list[str] = []
        self._producer = Producer(
            client_config(
                settings,
                {
                    "acks": "all",
                    "enable.idempotence": True,
                    "linger.ms": 5,
                    "message.max.bytes": settings.producer_max_message_bytes,
                },
            )
        )

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    def put(self, topic: str, key: bytes, value: bytes | None, partition: int) -> None:
        try:
            produce_waiting(
                self._producer,
                topic,
                key=key,
                value=value,
                partition=partition,
                on_delivery=self._on_delivery,
            )
        except RecordRefused as exc:
            # A refusal stops the migration with the reason, never a traceback; it converges,
            # so once the cause is fixed a re-run picks up where this one stopped.
            raise MigrationRefused(
                f"the state of {key!r} ({len(value or b'')} bytes) could not be written to "
                f"{topic}[{partition}]: {exc.error.str()}; nothing is lost (old copies stay "
                "until their tombstone): fix it and run the migration again"
            ) from None
        self._producer.poll(0)

    def confirm(self, timeout_s: float) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining or self._errors:
            raise MigrationRefused(
                f"{remaining} changelog writes unconfirmed, errors: {self._errors[:5]}; nothing "
                "is lost (old copies stay until their tombstone): run the migration again"
            )


def _grow(admin: AdminClient, counts: dict[str, int], to: int, timeout_s: float) -> dict[str, int]:
    grow = [NewPartitions(name, to) for name, count in counts.items() if count < to]
    if not grow:
        return {}
    for name, future in admin.create_partitions(grow, operation_timeout=timeout_s).items():
        future.result(timeout=timeout_s)
        log.info("%s: now %d partitions", name, to)
    # Metadata reaches every broker shortly after; the writes below need the new partitions.
    deadline = time.monotonic() + timeout_s
    while any(c < to for c in partition_counts(admin, list(counts), timeout_s).values()):
        if time.monotonic() > deadline:
            raise MigrationRefused("the new partitions did not appear in the metadata in time")
        time.sleep(0.2)
    return {p.topic: to for p in grow}


def _start_new_partitions(
    admin: AdminClient, settings: Settings, before: int, to: int, timeout_s: float
) -> list[int]:
    """Commit offset 0 for the group on the events topic's partitions that have none."""
    group, topic = settings.app_id, settings.topic_events
    asked = [TopicPartition(topic, p) for p in range(before, to)]
    if not asked:
        return []
    request = ConsumerGroupTopicPartitions(group, asked)
    found = admin.list_consumer_group_offsets([request], request_timeout=timeout_s)[group]
    missing = [
        tp.partition for tp in found.result(timeout=timeout_s).topic_partitions if tp.offset < 0
    ]
    if not missing:
        return []
    start = ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p, 0) for p in missing])
    admin.alter_consumer_group_offsets([start], request_timeout=timeout_s)[group].result(
        timeout=timeout_s
    )
    return missing


def migrate(
    settings: Settings,
    to: int,
    *,
    dry_run: bool = False,
    wait_s: float = 0.0,
    timeout_s: float = 60.0,
    progress: Callable[[str], None] = log.info,
) -> Report:
    """Bring every user-keyed topic to ``to`` partitions and every user's state onto their
    partition under it (see the module's docstring); returns what it found and did."""
    admin = admin_client(settings)
    partitioner = Partitioner(settings.partitioner)
    names = user_keyed_topics(settings)
    counts = partition_counts(admin, names, timeout_s)
    report = Report(to, topics_before=counts, dry_run=dry_run)
    if settings.topic_events not in counts:
        raise MigrationRefused(f"topic {settings.topic_events!r} does not exist")
    shrink = {n: c for n, c in counts.items() if c > to}
    if shrink:
        raise MigrationRefused(
            f"Kafka cannot remove partitions: {shrink} already have more than {to}"
        )
    _wait_for_empty_group(admin, settings.app_id, wait_s, timeout_s)

    live = read_live(settings, timeout_s)
    report.users = len(live)
    report.moves = plan_moves(live, to, partitioner)
    progress(
        f"{report.users} users with state; {report.moved} to move, "
        f"{report.tombstones} stale copies to tombstone"
    )
    if dry_run:
        return report

    report.expanded = _grow(admin, counts, to, timeout_s)
    changelog = changelog_topic(settings)
    writer = _Writer(settings)
    # Copies first, confirmed; only then the tombstones: a crash in between leaves two equal
    # copies, and the next run keeps the one on the right partition.
    _copy_moves(settings, writer, report.moves, timeout_s)
    for move in report.moves:
        for stale in move.tombstone:
            writer.put(changelog, move.key, None, stale)
    writer.confirm(timeout_s)
    report.offsets_set = _start_new_partitions(
        admin, settings, counts[settings.topic_events], to, timeout_s
    )

    left = plan_moves(read_live(settings, timeout_s), to, partitioner)
    if left:
        raise MigrationRefused(
            f"after the migration {len(left)} users are still off their partition "
            f"(first: {left[0].key!r}); was a worker running? Run the migration again"
        )
    return report


def status(settings: Settings, timeout_s: float = 60.0) -> list[str]:
    """Partition counts, group members and how many users live off their partition now."""
    admin = admin_client(settings)
    partitioner = Partitioner(settings.partitioner)
    counts = partition_counts(admin, user_keyed_topics(settings), timeout_s)
    lines = [f"{name}: {count} partitions" for name, count in counts.items()]
    lines.append(f"LIVERANK_PARTITIONS: {settings.partitions}; PARTITIONER: {partitioner.value}")
    lines.append(
        f"consumer group {settings.app_id}: "
        f"{group_members(admin, settings.app_id, timeout_s)} member(s)"
    )
    live = read_live(settings, timeout_s)
    off = plan_moves(live, settings.partitions, partitioner)
    lines.append(f"users with state: {len(live)}; off their partition: {len(off)}")
    return lines
