"""Where a user's records belong, and the plan that moves state to a new partition count."""

from __future__ import annotations

import ctypes
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.partitioning import (
    Copy,
    Move,
    Partitioner,
    live_copies,
    misplaced,
    partition_for,
    plan_moves,
)
from app.core.settings import Settings, SettingsError
from app.kafka.topics import partition_problems

M, C = Partitioner.MURMUR2, Partitioner.CRC32

# Kafka's own vectors for Utils.murmur2 (clients/src/test/.../UtilsTest.java, testMurmur2).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize("key", sorted(JAVA_MURMUR2))
def test_murmur2_places_keys_as_the_java_client_does(key: bytes) -> None:
    positive = JAVA_MURMUR2[key] & 0x7FFFFFFF
    for n in (1, 3, 4, 8, 12, 100):
        assert partition_for(key, n, M) == positive % n
    from aiokafka.partitioner import murmur2

    assert ctypes.c_int32(murmur2(key)).value == JAVA_MURMUR2[key]


def test_crc32_is_librdkafkas_consistent_partitioner() -> None:
    # rd_crc32 is the zlib CRC-32; "123456789" is its check value 0xCBF43926.
    assert partition_for(b"123456789", 1000, C) == 0xCBF43926 % 1000
    assert M.librdkafka == "murmur2_random" and C.librdkafka == "consistent_random"


def test_doubling_keeps_a_key_or_moves_it_n_up_and_moves_about_half() -> None:
    moved: Counter[Partitioner] = Counter()
    for i in range(4000):
        key = f"user-{i}".encode()
        for p in (M, C):
            before, after = partition_for(key, 4, p), partition_for(key, 8, p)
            assert after in (before, before + 4)
            moved[p] += after != before
    for p in (M, C):
        assert 1700 < moved[p] < 2300, moved


def test_misplaced_names_the_home_partition_or_none() -> None:
    home = partition_for(b"u1", 8, M)
    assert misplaced(b"u1", home, 8, M) is None
    assert misplaced(b"u1", (home + 1) % 8, 8, M) == home
    assert misplaced(None, 3, 8, M) is None


def test_live_copies_take_the_last_record_per_key_and_partition() -> None:
    records = [
        (b"a", 0, 5, False),
        (b"a", 0, 9, False),
        (b"b", 1, 3, False),
        (b"b", 1, 4, True),  # forgotten on partition 1
        (b"b", 2, 7, False),
        (None, 0, 10, False),  # keyless: not a state
        (b"a", 0, 7, True),  # out of order: the highest offset wins, not the last seen
        (b"c", 3, 2, True),
    ]
    assert live_copies(records) == {b"a": {0: Copy(0, 9)}, b"b": {2: Copy(2, 7)}}


def _key_moving(frm: int, n: int, to_n: int) -> bytes:
    for i in range(10_000):
        key = f"k{i}".encode()
        if partition_for(key, n, M) == frm and partition_for(key, to_n, M) != frm:
            return key
    raise AssertionError("no such key")


def test_plan_moves_each_user_once_and_converges() -> None:
    stay = next(
        f"s{i}".encode()
        for i in range(1000)
        if partition_for(f"s{i}".encode(), 4, M) == partition_for(f"s{i}".encode(), 8, M)
    )
    move = _key_moving(1, 4, 8)
    home = partition_for(stay, 4, M)
    live = {stay: {home: Copy(home, 3)}, move: {1: Copy(1, 8)}}
    plan = plan_moves(live, 8, M)
    target = partition_for(move, 8, M)
    assert plan == [Move(move, target, 1, (1,))]
    # After the copy and before the tombstone (a crash): the copy on the target stays, the
    # stray goes, nothing is copied twice.
    half_done = {**live, move: {1: Copy(1, 8), target: Copy(target, 0)}}
    assert plan_moves(half_done, 8, M) == [Move(move, target, None, (1,))]
    # Done: nothing left.
    assert plan_moves({**live, move: {target: Copy(target, 0)}}, 8, M) == []


@given(st.sets(st.text(min_size=1, max_size=12), min_size=1, max_size=60))
def test_applying_a_plan_leaves_every_key_alone_on_its_partition(users: set[str]) -> None:
    # Partition -> key -> value, as the changelog holds it.
    log: dict[int, dict[bytes, bytes]] = {}
    for u in users:
        key = u.encode()
        log.setdefault(partition_for(key, 4, M), {})[key] = b"state of " + key
    live = {k: {p: Copy(p, 0)} for p, keys in log.items() for k in keys}
    for move in plan_moves(live, 8, M):
        if move.source is not None:
            log.setdefault(move.to, {})[move.key] = log[move.source][move.key]
        for stale in move.tombstone:
            del log[stale][move.key]
    placed = [(k, p) for p, keys in log.items() for k in keys]
    assert sorted(k for k, _ in placed) == sorted(u.encode() for u in users)  # each once
    where = dict(placed)
    for key, p in where.items():
        assert p == partition_for(key, 8, M)
        assert log[p][key] == b"state of " + key  # the value itself moved
    assert plan_moves({k: {p: Copy(p, 1)} for k, p in where.items()}, 8, M) == []


def test_partitioner_setting_is_checked() -> None:
    assert Settings(partitioner="crc32").partitioner == "crc32"
    with pytest.raises(SettingsError, match="partitioner"):
        Settings(partitioner="random")


def test_a_worker_refuses_topics_with_another_partition_count() -> None:
    settings = Settings(partitions=8)
    changelog = f"{settings.app_id}-user-state-changelog"
    assert partition_problems(settings, {settings.topic_events: 8, changelog: 8}) == []
    assert partition_problems(settings, {}) == []  # created with the right count later
    problems = partition_problems(settings, {settings.topic_events: 8, changelog: 4})
    assert problems[0] == f"{changelog} has 4 partitions"
    assert "partition migration" in problems[-1]
    assert partition_problems(Settings(partitions=4), {settings.topic_events: 8})
