"""Hot model reload against a real worker: a new version announced on the model-updates topic
is used for later events without a restart and without losing any; a broken one is rejected
and the serving model stays."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from app.core.codec import ModelUpdate, encode_model_update
from app.core.settings import Settings
from app.training.stream import next_version
from tests.integration.kafka_io import KafkaIO
from tests.integration.test_faults import (
    answered_ids,
    interleaved_events,
    prepare_topics,
    produce,
    triggers_of,
    wait_for,
)
from tests.integration.worker_process import WorkerProcess, isolated_settings
from tests.model_packages import SHIPPED, nan_scores, versioned_copy

pytestmark = pytest.mark.integration

FIRST = SHIPPED
NEXT = next_version(SHIPPED)
BROKEN = next_version(NEXT)


@pytest.fixture(scope="module")
def settings(bootstrap: str, module_tmp: Path) -> Settings:
    return isolated_settings(bootstrap, module_tmp, partitions=2)


@pytest.fixture(scope="module")
def worker(settings: Settings, kafka: KafkaIO, module_tmp: Path) -> Iterator[WorkerProcess]:
    prepare_topics(settings, kafka)
    proc = WorkerProcess(settings, module_tmp / "worker.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def announce(kafka: KafkaIO, settings: Settings, version: str, path: Path) -> None:
    update = ModelUpdate("seqrank", version, str(path), time.time_ns() // 1_000_000)
    kafka.produce(settings.topic_model_updates, b"seqrank", encode_model_update(update))


def versions_by_event(kafka: KafkaIO, settings: Settings, wanted: set[str]) -> dict[str, str]:
    records = kafka.read_until(
        settings.topic_recommendations, lambda rs: wanted <= answered_ids(rs), timeout_s=120
    )
    docs = [orjson.loads(r.value) for r in records if r.value is not None]
    return {d["event_id"]: d["model_version"] for d in docs}


def serving(worker: WorkerProcess, version: str) -> bool:
    return worker.metric(f'liverank_model_info{{model_version="{version}"}}') == 1.0


def test_a_new_version_is_used_without_a_restart_and_a_broken_one_is_rejected(
    worker: WorkerProcess, kafka: KafkaIO, settings: Settings, module_tmp: Path
) -> None:
    assert worker.proc is not None
    pid = worker.proc.pid
    events = interleaved_events(3_000, seed=23)
    before, during, after = events[:1_000], events[1_000:2_000], events[2_000:]
    produce(settings, before)
    versions = versions_by_event(kafka, settings, triggers_of(before))
    assert set(versions.values()) == {FIRST}

    # A new version, announced while events keep coming.
    announce(kafka, settings, NEXT, versioned_copy(module_tmp / "next", NEXT))
    produce(settings, during)
    wait_for(lambda: serving(worker, NEXT), timeout_s=120)
    produce(settings, after)
    versions = versions_by_event(kafka, settings, triggers_of(events))
    assert set(versions[e] for e in triggers_of(after)) == {NEXT}
    assert set(versions[e] for e in triggers_of(during)) <= {FIRST, NEXT}
    switched = sum(1 for e in triggers_of(during) if versions[e] == NEXT)

    # A package that loads but scores NaN: rejected, and NEXT keeps serving.
    broken = versioned_copy(module_tmp / "broken", BROKEN)
    nan_scores(broken)
    announce(kafka, settings, BROKEN, broken)
    wait_for(lambda: worker.metric('liverank_model_reloads_total{result="rejected"}') >= 1)
    later = interleaved_events(300, seed=29)
    produce(settings, later)
    versions = versions_by_event(kafka, settings, triggers_of(later))
    assert {versions[e] for e in triggers_of(later)} == {NEXT}
    assert serving(worker, NEXT) and not serving(worker, BROKEN)
    assert f"model rejected, still serving {NEXT}" in worker.log_tail(400)

    # No restart, and every trigger answered.
    assert worker.proc.pid == pid and worker.proc.poll() is None
    everything = triggers_of(events + later)
    assert everything <= set(versions_by_event(kafka, settings, everything))
    print(
        f"\nhot reload: {len(events) + len(later)} events, no restart; {FIRST} -> {NEXT} while "
        f"events flowed ({switched} of {len(triggers_of(during))} triggers sent during the "
        f"switch were ranked by {NEXT}); {BROKEN} (NaN scores) rejected, {NEXT} kept serving"
    )


def test_the_stream_reads_back_as_training_sequences(
    worker: WorkerProcess, kafka: KafkaIO, settings: Settings
) -> None:
    """What retraining learns from: every interaction applied so far, per user in event-time
    order, over the catalog's items (redeliveries, marked duplicate, are skipped)."""
    from app.dev.synthetic import make_catalog
    from app.training.stream import read_stream_data

    events = interleaved_events(400, seed=31)
    produce(settings, events)
    wanted = {e.event_id for e in events}
    kafka.read_until(
        settings.topic_feedback,
        lambda rs: wanted <= {orjson.loads(r.value or b"{}")["event_id"] for r in rs},
        timeout_s=120,
    )
    data = read_stream_data(settings)
    assert set(data.item_tokens[1:]) == {i.item_id for i in make_catalog(300, seed=21)}
    # Each user's interactions from this test, in time order, are in their sequence in that
    # order (the module's earlier events are there too, interleaved by time).
    checked = 0
    for user in sorted({e.user_id for e in events}):
        mine = sorted(
            (e for e in events if e.user_id == user and e.item_id is not None),
            key=lambda e: e.event_time_ms,
        )
        if not mine or user not in data.user_tokens:
            continue
        sequence = iter(data.item_tokens[i] for i in data.sequences[data.user_tokens.index(user)])
        assert all(any(item == e.item_id for item in sequence) for e in mine), user
        checked += 1
    assert checked > 20
    print(
        f"\nstream data: {data.n_users} users, {data.n_items} items, "
        f"{data.n_interactions} interactions; {checked} users' latest sessions found in order"
    )
