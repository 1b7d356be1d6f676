"""Faults against a real broker: SIGKILL mid-stream, and a second worker joining and leaving;
no event lost, none applied twice, every trigger answered."""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from app.core.codec import encode_event, encode_item, format_time_ms
from app.core.records import NEXT_ITEM_TRIGGERS, Event, EventType
from app.core.settings import Settings
from app.core.state import StateLimits, UserState, apply_event, decode_state
from app.dev.localkafka import pick_free_ports
from app.dev.synthetic import Traffic, make_catalog
from app.kafka.kafka_config import keyed_by_user
from app.kafka.topic_reader import read_topic
from app.kafka.topics import changelog_topic, create_topics
from tests.integration.kafka_io import KafkaIO, Record
from tests.integration.worker_process import (
    WorkerProcess,
    isolated_settings,
    read_changelog_offsets,
    read_states,
)

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = 20_000
USERS = 300
KILLS = 3
CATALOG = make_catalog(300, seed=21)


def interleaved_events(n: int, seed: int) -> list[Event]:
    """Sessions of many users interleaved, as they arrive from a busy site (an hour ago)."""
    traffic = Traffic(CATALOG, n_users=USERS, seed=seed)
    start = int(time.time() * 1000) - 3_600_000
    return list(traffic.interleaved(n, concurrent=40, start_ms=start))


def reference_states(events: list[Event], limits: StateLimits) -> dict[bytes, UserState]:
    """Every user's state computed from the log alone, each event applied exactly once."""
    items = {item.item_id: item for item in CATALOG}
    states: dict[bytes, UserState] = {}
    for event in events:
        key = event.user_id.encode()
        if event.type is EventType.FORGET_USER:
            states.pop(key, None)
            continue
        item = items.get(event.item_id) if event.item_id else None
        states[key] = apply_event(states.get(key), event, item, limits)
    return states


def comparable(state: UserState) -> dict[str, object]:
    """The state minus what the user was shown (the last recommendation, the attribution
    impressions) and the last offset applied: which rankings a user saw depends on how replays
    fell into micro-batches, and the reference has no offsets; everything else must not
    differ."""
    kept = dataclasses.replace(
        state,
        last_recommendation=None,
        applied_offset=None,
        impressions=(),
        closed_impressions=(),
    )
    return {f.name: getattr(kept, f.name) for f in dataclasses.fields(kept)}


def prepare_topics(settings: Settings, kafka: KafkaIO) -> None:
    create_topics(settings)
    for item in CATALOG:
        kafka.produce(settings.topic_catalog, item.item_id.encode(), encode_item(item))


def produce(
    settings: Settings, events: list[Event], hostile: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """The events in order; the ``hostile`` (key, value) records scattered among them."""
    records = [(e.user_id.encode(), encode_event(e)) for e in events]
    rng = random.Random(len(records))
    for record in hostile:
        records.insert(rng.randrange(len(records) + 1), record)
    # The test's own plain connection (settings may describe a secured listener).
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "linger.ms": 20,
            **keyed_by_user(settings),
        }
    )
    for key, value in records:
        producer.produce(settings.topic_events, key=key, value=value)
        producer.poll(0)
    assert producer.flush(30) == 0


CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "events"


def hostile_records(copies: int) -> tuple[list[tuple[bytes, bytes]], Counter[str]]:
    """``copies`` of every corpus payload that must be dead-lettered, keyed by a user of their
    own (so no valid user's state is touched), and how many of each error to expect."""
    expected: dict[str, str] = orjson.loads((CORPUS / "expected.json").read_bytes())
    records: list[tuple[bytes, bytes]] = []
    errors: Counter[str] = Counter()
    for name, outcome in sorted(expected.items()):
        if outcome.startswith(("processed", "forgotten")):
            continue
        for _ in range(copies):
            records.append((b"u1", (CORPUS / name).read_bytes()))
            errors[outcome] += 1
    return records, errors


def dead_letters_by_error(kafka: KafkaIO, settings: Settings, count: int) -> Counter[str]:
    """Errors of the dead letters, one per offending record (redeliveries counted once)."""
    letters = kafka.read_until(
        settings.topic_dead_letters,
        lambda rs: len({orjson.loads(r.value or b"{}")["offset"] for r in rs}) >= count,
        timeout_s=120,
    )
    by_offset = {}
    for r in letters:
        doc = orjson.loads(r.value or b"{}")
        by_offset[doc["offset"]] = doc["error"]
    return Counter(by_offset.values())


def triggers_of(events: list[Event]) -> set[str]:
    return {
        e.event_id for e in events if e.type is EventType.SEARCH or e.type in NEXT_ITEM_TRIGGERS
    }


def answered(kafka: KafkaIO, settings: Settings, triggers: set[str]) -> list[Record]:
    """The recommendations topic (tombstones left out), read until every trigger has its
    record."""
    records = kafka.read_until(
        settings.topic_recommendations,
        lambda rs: triggers <= answered_ids(rs),
        timeout_s=180,
    )
    return [r for r in records if r.value is not None]


def answered_ids(records: list[Record]) -> set[str]:
    return {orjson.loads(r.value)["event_id"] for r in records if r.value is not None}


def check_states(settings: Settings, events: list[Event]) -> tuple[int, int, int]:
    """(state mismatches, events lost, events applied twice) in the stopped worker's RocksDB."""
    got = {key: decode_state(value) for key, value in read_states(settings).items()}
    want = reference_states(events, StateLimits(history_size=settings.history_size))
    applied = {k: sum(n for _, n in s.counters) for k, s in got.items()}
    expected = {k: sum(n for _, n in s.counters) for k, s in want.items()}
    lost = sum(max(0, expected[k] - applied.get(k, 0)) for k in expected)
    doubled = sum(max(0, applied.get(k, 0) - expected[k]) for k in expected)
    mismatched = [k for k in want if k not in got or comparable(got[k]) != comparable(want[k])]
    return len(mismatched), lost, doubled


@pytest.fixture
def settings(bootstrap: str, tmp_path: Path) -> Settings:
    # Short commit interval: kills land between commits as well as just after them.
    return isolated_settings(bootstrap, tmp_path, partitions=4, commit_interval_s=0.5)


def test_sigkill_mid_stream_loses_nothing_and_doubles_nothing(
    settings: Settings, kafka: KafkaIO, tmp_path: Path
) -> None:
    prepare_topics(settings, kafka)
    events = interleaved_events(EVENTS, seed=3)
    hostile, expected_errors = hostile_records(copies=5)
    produce(settings, events, hostile)

    rng = random.Random(11)
    worker = WorkerProcess(settings, tmp_path / "worker.log")
    kills = []
    for _ in range(KILLS):
        worker.start()
        # Let it get some way into the stream (a random number of events), then kill it.
        target = rng.randrange(1_500, 5_000)
        deadline = time.monotonic() + 60
        while worker.metric("liverank_events_total") < target and time.monotonic() < deadline:
            time.sleep(0.05)
        processed = worker.metric("liverank_events_total")
        worker.kill()
        kills.append(int(processed))
    worker.start()

    triggers = triggers_of(events)
    recs = answered(kafka, settings, triggers)
    assert worker.stop() == 0
    mismatched, lost, doubled = check_states(settings, events)
    seen = answered_ids(recs)
    duplicates = len(recs) - len(seen)
    dead = dead_letters_by_error(kafka, settings, len(hostile))
    positives, negatives = attribution_sent(kafka, settings)
    print(
        f"\ncrash test: {len(events)} events over {USERS} users, {len(triggers)} triggers; "
        f"killed (SIGKILL) {KILLS} times after {kills} events; "
        f"state mismatches {mismatched}, lost {lost}, applied twice {doubled}, "
        f"triggers without a recommendation {len(triggers - seen)}, "
        f"recommendations redelivered {duplicates}; {len(hostile)} hostile records among "
        f"them, dead-lettered by reason: {dict(sorted(dead.items()))}; attribution: "
        f"{positives} positives and {negatives} closed impressions in the states, every one "
        f"of them on the attribution topic"
    )
    assert lost == 0 and doubled == 0
    assert mismatched == 0
    assert triggers <= seen
    assert dead == expected_errors


def test_a_second_worker_joins_and_leaves_and_state_stays_right(
    settings: Settings, kafka: KafkaIO, tmp_path: Path
) -> None:
    prepare_topics(settings, kafka)
    events = interleaved_events(EVENTS, seed=5)
    first, second = events[: EVENTS // 2], events[EVENTS // 2 :]
    produce(settings, first)
    a = WorkerProcess(settings, tmp_path / "a.log")
    b_settings = settings.replace(data_dir=tmp_path / "b-data", http_port=pick_free_ports(1)[0])
    b = WorkerProcess(b_settings, tmp_path / "b.log")
    a.start()
    try:
        wait_for(lambda: a.metric("liverank_events_total") >= 3_000)
        b.start()  # ready once the group rebalanced and its partitions' state is recovered
        produce(settings, second)
        wait_for(lambda: b.metric("liverank_events_total") >= 1_000)
        processed_by_b = int(b.metric("liverank_events_total"))
        assert b.stop() == 0  # partitions move back to the first worker
        triggers = triggers_of(events)
        recs = answered(kafka, settings, triggers)
        assert a.stop() == 0
    finally:
        b.stop()
        a.stop()
    mismatched, lost, doubled = check_states(settings, events)
    seen = answered_ids(recs)
    print(
        f"\nrebalance test: {len(events)} events over {USERS} users; a second worker joined, "
        f"processed {processed_by_b} events and left; state mismatches {mismatched}, "
        f"lost {lost}, applied twice {doubled}, "
        f"triggers without a recommendation {len(triggers - seen)}"
    )
    assert (mismatched, lost, doubled) == (0, 0, 0)
    assert triggers <= seen


def attribution_sent(kafka: KafkaIO, settings: Settings) -> tuple[int, int]:
    """Every positive and every closed impression the stored states remember is on the
    attribution topic, however the crashes fell (replays re-emit them). Returns the counts."""
    want_pos: set[tuple[str, int, str]] = set()
    want_neg: set[str] = set()
    for raw in read_states(settings).values():
        state = decode_state(raw)
        for imp in (*state.impressions, *state.closed_impressions):
            want_pos |= {(imp.request_id, a.rank, a.action) for a in imp.acted}
        want_neg |= {imp.request_id for imp in state.closed_impressions}

    def got(records: list[Record]) -> tuple[set[tuple[str, int, str]], set[str]]:
        docs = [orjson.loads(r.value or b"{}") for r in records]
        pos = {(d["request_id"], d["rank"], d["action"]) for d in docs if d["kind"] == "positive"}
        neg = {d["request_id"] for d in docs if d["kind"] == "negative"}
        return pos, neg

    def complete(records: list[Record]) -> bool:
        pos, neg = got(records)
        return want_pos <= pos and want_neg <= neg

    kafka.read_until(settings.topic_attribution, complete, timeout_s=60)
    return len(want_pos), len(want_neg)


def wait_for(condition: Callable[[], bool], timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_forgotten_users_stay_forgotten_after_restarts_and_a_rebuild_from_the_changelog(
    settings: Settings, kafka: KafkaIO, tmp_path: Path
) -> None:
    prepare_topics(settings, kafka)
    events = interleaved_events(3_000, seed=9)
    users = sorted({e.user_id for e in events})
    forgotten = users[:12]
    returning = forgotten[:3]  # they come back after being forgotten: a new, empty state
    end = max(e.event_time_ms for e in events)
    forgets = [
        Event(f"forget-{u}", u, EventType.FORGET_USER, end + 1, format_time_ms(end + 1))
        for u in forgotten
    ]
    after = [
        Event(
            f"back-{u}",
            u,
            EventType.VIEW,
            end + 2,
            format_time_ms(end + 2),
            item_id=CATALOG[0].item_id,
        )
        for u in returning
    ]
    log = events + forgets + after
    produce(settings, log)

    worker = WorkerProcess(settings, tmp_path / "worker.log")
    worker.start()
    answered(kafka, settings, triggers_of(events))
    wait_for(lambda: worker.metric("liverank_events_total") >= len(log))
    assert worker.stop() == 0

    def check(when: str, state_settings: Settings) -> None:
        stored = read_states(state_settings)
        gone = [u for u in forgotten if u not in returning]
        assert not {u.encode() for u in gone} & stored.keys(), when
        mismatched, lost, doubled = check_states(state_settings, log)
        print(
            f"\nforget_user, {when}: {len(gone)} users forgotten and absent, {len(returning)} "
            f"came back with a fresh state; {len(stored)} states stored, mismatches "
            f"{mismatched}, lost {lost}, applied twice {doubled}"
        )
        assert (mismatched, lost, doubled) == (0, 0, 0)

    check("after processing", settings)
    # The changelog goes through librdkafka; each RocksDB partition still records the newest
    # changelog offset it holds, so a restart reads only what came after (faust's restore).
    newest = {m.partition(): m.offset() for m in read_topic(settings, changelog_topic(settings))}
    assert read_changelog_offsets(settings) == newest
    # Each partition's database is opened within STATE_MEMORY_MB (faust's defaults would be
    # three 64 MiB write buffers): RocksDB writes the options it runs with next to the data.
    options = sorted((settings.data_dir / "v1" / "tables").glob("user-state-*.db/OPTIONS-*"))
    assert options
    for path in options:
        text = path.read_text()
        assert f"write_buffer_size={settings.state_memory_mb * 1024 * 1024 // 4}" in text
        assert "max_write_buffer_number=2" in text
    worker.start()  # a restart on the same disk
    assert worker.stop() == 0
    check("after a restart", settings)
    # A pod that lost its disk rebuilds the state from the changelog: tombstones included.
    rebuilt = settings.replace(data_dir=tmp_path / "rebuilt")
    fresh = WorkerProcess(rebuilt, tmp_path / "rebuilt.log")
    fresh.start()
    assert fresh.stop() == 0
    check("after a rebuild from the changelog", rebuilt)

    # Their keys end in tombstones in the changelog (when the user came back in the same
    # micro-batch, the new state is written instead: no tombstone is needed).
    gone = {u.encode() for u in forgotten if u not in returning}
    changelog = kafka.read_until(
        changelog_topic(settings),
        lambda rs: gone <= {r.key for r in rs if r.value is None},
    )
    last = {r.key: r.value for r in sorted(changelog, key=lambda r: (r.partition, r.offset))}
    assert all(last[key] is None for key in gone)
    recs = kafka.read_until(
        settings.topic_recommendations,
        lambda rs: {u.encode() for u in forgotten} <= {r.key for r in rs if r.value is None},
    )
    assert {r.key for r in recs if r.value is None} == {u.encode() for u in forgotten}
