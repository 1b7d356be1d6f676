"""From 4 to 8 partitions on a real broker: every user's state intact and on the right worker.

The runbook's steps (docs/operating.md, Migrate partitions), in order:
1. a worker on 4 partitions builds up every user's state;
2. it is stopped; producers go on writing (a backlog on the old partitions);
3. ``python -m app partitions migrate --to 8``;
4. two workers start on 8 partitions; a producer that still believes in 4 partitions (stale
   metadata) writes more, then an up-to-date one does.

Afterwards every user's state must equal the state computed from all their events, applied once
each in order, and be live on exactly one changelog partition: the one their events now go to.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from app.core.codec import encode_event
from app.core.partitioning import Partitioner, partition_for
from app.core.records import Event
from app.core.settings import Settings
from app.core.state import StateLimits, UserState, decode_state
from app.dev.localkafka import pick_free_ports
from app.kafka.kafka_config import client_config, keyed_by_user
from app.kafka.topic_reader import read_topic
from app.kafka.topics import changelog_topic
from tests.integration.kafka_io import KafkaIO
from tests.integration.test_faults import (
    comparable,
    interleaved_events,
    prepare_topics,
    reference_states,
)
from tests.integration.worker_process import ROOT, WorkerProcess, isolated_settings

pytestmark = [pytest.mark.integration, pytest.mark.faults]

USERS_EVENTS = 3_000  # over test_faults' 300 users
M = Partitioner.MURMUR2


def _producer(settings: Settings) -> Producer:
    # Metadata kept for the whole test: this producer goes on believing what it saw first.
    return Producer(
        client_config(
            settings,
            {
                "linger.ms": 5,
                "topic.metadata.refresh.interval.ms": 600_000,
                **keyed_by_user(settings),
            },
        )
    )


def _send(producer: Producer, settings: Settings, events: list[Event]) -> Counter[int]:
    """Produce ``events``; returns how many landed on each partition (delivery reports)."""
    landed: Counter[int] = Counter()

    def delivered(err: object, msg: Message) -> None:
        assert err is None, err
        landed[msg.partition() or 0] += 1

    for event in events:
        key = event.user_id.encode()
        producer.produce(
            settings.topic_events, key=key, value=encode_event(event), on_delivery=delivered
        )
        producer.poll(0)
    assert producer.flush(30) == 0
    assert sum(landed.values()) == len(events)
    return landed


def _migrate(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m app partitions migrate ...``, configured like a pod: LIVERANK_* only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LIVERANK_")}
    return subprocess.run(
        [sys.executable, "-m", "app", "partitions", "migrate", *args],
        cwd=ROOT,
        env={**env, **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _moves(user: str) -> bool:
    return partition_for(user.encode(), 4, M) != partition_for(user.encode(), 8, M)


def _differences(
    users: list[bytes], live: dict[bytes, dict[int, bytes]], want: dict[bytes, UserState]
) -> str:
    """Which fields of each mismatched user's state differ, and how (the failure message)."""
    lines = []
    for user in users:
        expected = comparable(want[user])
        for partition, value in live[user].items():
            got = comparable(decode_state(value))
            for name, wanted in expected.items():
                if got[name] != wanted:
                    lines.append(
                        f"{user!r} on {partition}: {name}\n  got  {got[name]}\n  want {wanted}"
                    )
    return "\n".join(lines)


def _lag(settings: Settings) -> int:
    """Records of the events topic the group has not committed yet (the broker's view)."""
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    topic = settings.topic_events
    partitions = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)
    asked = ConsumerGroupTopicPartitions(
        settings.app_id, [TopicPartition(topic, p) for p in range(partitions)]
    )
    found = admin.list_consumer_group_offsets([asked])[settings.app_id].result(timeout=10)
    committed = {tp.partition: tp.offset for tp in found.topic_partitions}
    reader = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "lag-probe"})
    try:
        ends = {
            p: reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        reader.close()
    return sum(max(0, end - max(0, committed.get(p, 0))) for p, end in ends.items())


def _wait_processed(
    workers: list[WorkerProcess], count: int, settings: Settings, timeout_s: float = 120.0
) -> None:
    """At least ``count`` events processed and every record committed: a count alone can be
    reached early by records processed twice (at-least-once, across a rebalance)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = sum(w.metric("liverank_events_total") for w in workers)
        if done >= count and _lag(settings) == 0:
            return
        time.sleep(0.3)
    done = sum(w.metric("liverank_events_total") for w in workers)
    raise AssertionError(
        f"{done} of {count} events processed, lag {_lag(settings)}:\n{workers[0].log_tail()}"
    )


def test_four_to_eight_partitions_keeps_every_users_state_on_its_new_partition(
    bootstrap: str, kafka: KafkaIO, tmp_path: Path
) -> None:
    old = isolated_settings(bootstrap, tmp_path, partitions=4, commit_interval_s=0.5)
    new = old.replace(partitions=8)
    prepare_topics(old, kafka)
    events = interleaved_events(USERS_EVENTS, seed=17)
    before, backlog, stale, fresh = (
        events[:1500],
        events[1500:2100],
        events[2100:2500],
        events[2500:],
    )

    # 1. One worker on 4 partitions.
    first = WorkerProcess(old, tmp_path / "first.log")
    first.start()
    producer = _producer(old)
    _send(producer, old, before)
    _wait_processed([first], len(before), old)
    # 2. Stopped (SIGTERM: it commits and flushes); producers go on.
    assert first.stop() == 0
    _send(producer, old, backlog)

    # A worker told about 8 partitions before the topics have them refuses to start.
    early = WorkerProcess(new, tmp_path / "early.log")
    with pytest.raises(AssertionError, match="exited with 5"):
        early.start(ready_timeout_s=60)

    # 3. The migration, as an SRE runs it.
    limits = StateLimits(history_size=new.history_size)
    users = {k.decode() for k in reference_states(before, limits)}
    moving = {u for u in users if _moves(u)}
    dry = _migrate(new, "--to", "8", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"moved to their new partition: {len(moving)}" in dry.stdout, dry.stdout
    run = _migrate(new, "--to", "8")
    assert run.returncode == 0, run.stdout + run.stderr
    print(f"\n{run.stdout.strip()}")
    assert f"users with state: {len(users)}; moved to their new partition: {len(moving)}" in (
        run.stdout
    )
    assert f"stale copies tombstoned: {len(moving)}" in run.stdout
    assert "events partitions starting at offset 0: [4, 5, 6, 7]" in run.stdout
    # Running it again finds nothing to do.
    again = _migrate(new, "--to", "8")
    assert again.returncode == 0, again.stderr
    assert "moved to their new partition: 0" in again.stdout, again.stdout

    # 4. Two workers on 8 partitions (one on the first worker's disk, one on a new one).
    a = WorkerProcess(new, tmp_path / "a.log")
    b = WorkerProcess(
        new.replace(data_dir=tmp_path / "data-b", http_port=pick_free_ports(1)[0]),
        tmp_path / "b.log",
    )
    a.start()
    b.start()
    try:
        _wait_processed([a, b], len(backlog), new)
        # Still on 4 partitions: forwarded by the workers.
        stale_landed = _send(producer, old, stale)
        _wait_processed([a, b], len(backlog) + len(stale), new)
        fresh_landed = _send(_producer(new), new, fresh)
        _wait_processed([a, b], len(backlog) + len(stale) + len(fresh), new)
        rerouted = sum(w.metric("liverank_events_rerouted_total") for w in (a, b))
        shares = [int(w.metric("liverank_events_total")) for w in (a, b)]
    finally:
        assert a.stop() == 0
        assert b.stop() == 0

    # The stale producer wrote to the old 4 partitions only, the fresh one used all 8.
    assert set(stale_landed) <= {0, 1, 2, 3}
    assert set(fresh_landed) == set(range(8))
    misplaced = sum(1 for e in backlog + stale if _moves(e.user_id))
    assert rerouted >= misplaced > 0

    # Every user's state: live on exactly their partition under 8, equal to the reference.
    # The changelog as a compacted topic will read: the last record per key and partition.
    last: dict[tuple[bytes, int], tuple[int, bytes | None]] = {}
    for m in read_topic(new, changelog_topic(new)):
        key, at = m.key() or b"", (m.offset() or 0)
        if last.get((key, m.partition() or 0), (-1, None))[0] < at:
            last[(key, m.partition() or 0)] = (at, m.value())
    live: dict[bytes, dict[int, bytes]] = {}
    for (key, partition), (_, value) in last.items():
        if value is not None:
            live.setdefault(key, {})[partition] = value
    want = reference_states(events, limits)
    assert set(live) == set(want)
    wrong_partition = [k for k, copies in live.items() if list(copies) != [partition_for(k, 8, M)]]
    mismatched = [
        k
        for k, copies in live.items()
        if any(comparable(decode_state(v)) != comparable(want[k]) for v in copies.values())
    ]
    print(
        f"4 -> 8 partitions: {len(want)} users, {len(moving)} moved; events: {len(before)} "
        f"before, {len(backlog)} backlog, {len(stale)} from a stale producer, {len(fresh)} "
        f"after; {int(rerouted)} forwarded to their new partition (>= {misplaced} misplaced); "
        f"workers processed {shares}; users on the wrong partition {len(wrong_partition)}, "
        f"state mismatches {len(mismatched)}"
    )
    assert all(shares), shares  # both workers served users
    assert wrong_partition == []
    assert mismatched == [], _differences(mismatched, live, want)
