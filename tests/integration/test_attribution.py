"""Attribution against a real worker: positives with their rank and delay within the window,
negatives when the window closes (timers), nothing for actions after it, and live quality."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from app.core.codec import format_time_ms, load_schema
from app.core.settings import Settings
from app.dev.synthetic import make_catalog
from tests.integration.kafka_io import KafkaIO, Record
from tests.integration.worker_process import (
    ROOT,
    WorkerProcess,
    isolated_settings,
    running_worker,
)

pytestmark = pytest.mark.integration

WINDOW_S = 4.0
CATALOG = make_catalog(120, seed=8)


@pytest.fixture(scope="module")
def settings(bootstrap: str, module_tmp: Path) -> Settings:
    return isolated_settings(bootstrap, module_tmp, attribution_window_s=WINDOW_S)


@pytest.fixture(scope="module")
def worker(settings: Settings, kafka: KafkaIO, module_tmp: Path) -> Iterator[WorkerProcess]:
    with running_worker(settings, kafka, CATALOG, module_tmp / "worker.log") as proc:
        yield proc


def send(kafka: KafkaIO, settings: Settings, user: str, kind: str, at_ms: int, **f: Any) -> str:
    doc = {
        "event_id": f"{user}-{kind}-{uuid.uuid4().hex[:8]}",
        "user_id": user,
        "type": kind,
        "event_time": format_time_ms(at_ms),
        **f,
    }
    kafka.produce(settings.topic_events, user.encode(), orjson.dumps(doc))
    return str(doc["event_id"])


def recommendation(kafka: KafkaIO, settings: Settings, event_id: str) -> dict[str, Any]:
    def docs(records: list[Record]) -> list[dict[str, Any]]:
        return [orjson.loads(r.value) for r in records if r.value is not None]

    records = kafka.read_until(
        settings.topic_recommendations, lambda rs: event_id in {d["event_id"] for d in docs(rs)}
    )
    return next(d for d in docs(records) if d["event_id"] == event_id)


def attribution(
    kafka: KafkaIO, settings: Settings, done: Any, timeout_s: float = 60.0
) -> list[dict[str, Any]]:
    records = kafka.read_until(
        settings.topic_attribution,
        lambda rs: done([orjson.loads(r.value or b"{}") for r in rs]),
        timeout_s=timeout_s,
    )
    docs = [orjson.loads(r.value or b"{}") for r in records]
    schema = load_schema("attribution")
    for doc in docs:
        jsonschema.validate(doc, schema)
    return docs


def test_positives_negatives_windows_and_live_quality(
    worker: WorkerProcess, kafka: KafkaIO, settings: Settings
) -> None:
    now = time.time_ns() // 1_000_000
    # A: shown ten items, clicks the third, then buys it: two positives for rank 2.
    a_shown = send(kafka, settings, "att-a", "click", now, item_id=CATALOG[0].item_id)
    a_items = [i["item_id"] for i in recommendation(kafka, settings, a_shown)["items"]]
    a_click = send(kafka, settings, "att-a", "click", now + 1_500, item_id=a_items[2])
    a_buy = send(kafka, settings, "att-a", "purchase", now + 2_000, item_id=a_items[2])
    # B: shown ten items, does nothing: one negative with all ten when the window closes.
    b_shown = send(kafka, settings, "att-b", "click", now, item_id=CATALOG[1].item_id)
    # C: acts on a shown item only after the window: no positive; the window closes first.
    c_shown = send(kafka, settings, "att-c", "click", now, item_id=CATALOG[2].item_id)
    c_items = [i["item_id"] for i in recommendation(kafka, settings, c_shown)["items"]]
    time.sleep(WINDOW_S + 1.0)
    c_late = send(
        kafka, settings, "att-c", "click", now + int(WINDOW_S * 1000) + 1_000, item_id=c_items[0]
    )

    def closed(docs: list[dict[str, Any]]) -> set[str]:
        return {d["request_id"] for d in docs if d["kind"] == "negative"}

    docs = attribution(kafka, settings, lambda ds: {a_shown, b_shown, c_shown} <= closed(ds))
    positives = [d for d in docs if d["kind"] == "positive"]
    negatives = {d["request_id"]: d for d in docs if d["kind"] == "negative"}

    a_pos = sorted(
        (p for p in positives if p["request_id"] == a_shown), key=lambda p: p["delay_ms"]
    )
    assert [(p["item_id"], p["rank"], p["action"], p["event_id"]) for p in a_pos] == [
        (a_items[2], 2, "click", a_click),
        (a_items[2], 2, "purchase", a_buy),
    ]
    assert [p["delay_ms"] for p in a_pos] == [1_500, 2_000]
    assert a_pos[0]["serving"]["topic"] == settings.topic_events
    a_neg = negatives[a_shown]
    assert [i["rank"] for i in a_neg["items"]] == [0, 1, 3, 4, 5, 6, 7, 8, 9]
    assert a_neg["acted"] == [{"rank": 2, "action": "click"}, {"rank": 2, "action": "purchase"}]
    b_neg = negatives[b_shown]
    assert (len(b_neg["items"]), b_neg["close_reason"], b_neg["acted"]) == (10, "window", [])
    c_neg = negatives[c_shown]
    assert len(c_neg["items"]) == 10 and c_neg["acted"] == []
    assert not any(p["event_id"] == c_late for p in positives)
    model_version = a_neg["model_version"]

    # Live quality over the impressions closed so far (c's late click opened another one).
    def live(name: str) -> float:
        return worker.metric(
            f'{name}{{model_version="{model_version}",role="serving",window="300s"}}'
        )

    deadline = time.monotonic() + 30
    while live("liverank_live_impressions") < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    impressions = live("liverank_live_impressions")
    hit_rate = live("liverank_live_hit_rate")
    ctr = live("liverank_live_ctr")
    print(
        f"\nattribution: {len(positives)} positives, {len(negatives)} impressions closed; live "
        f"(5 min): {impressions:.0f} impressions, hit rate@10 {hit_rate:.3f}, CTR {ctr:.4f}"
    )
    assert impressions >= 3
    hits = sum(1 for n in negatives.values() if n["acted"])
    assert hit_rate == pytest.approx(hits / impressions)
    assert worker.metric("liverank_attribution_positives_total") >= 2

    # The quality command reads the same from the attribution topic (all workers' impressions).
    # Impressions keep closing (c's late click opened one): compare while the worker's figures
    # hold still from before the command to after it.
    env = settings.child_environ(os.environ)
    for _ in range(5):
        before = (live("liverank_live_impressions"), live("liverank_live_hit_rate"))
        shown = subprocess.run(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "app", "quality", "--windows", "300"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        impressions, hit_rate = live("liverank_live_impressions"), live("liverank_live_hit_rate")
        ctr, ndcg = live("liverank_live_ctr"), live("liverank_live_ndcg")
        if (impressions, hit_rate) == before:
            break
    print(shown)
    row = next(line for line in shown.splitlines() if line.startswith(f"| {model_version} |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:] == [
        "serving",
        "300 s",
        f"{impressions:.0f}",
        f"{hit_rate:.3f}",
        f"{ndcg:.3f}",
        f"{ctr:.4f}",
    ]


def test_a_window_that_ends_while_the_worker_is_down_closes_after_the_restart(
    worker: WorkerProcess, kafka: KafkaIO, settings: Settings
) -> None:
    """The impression is in the stored state only: the restarted worker finds it there (no
    event of the user comes after), and closes it once the window has passed."""
    now = time.time_ns() // 1_000_000
    shown = send(kafka, settings, "att-d", "click", now, item_id=CATALOG[3].item_id)
    recommendation(kafka, settings, shown)
    assert worker.stop() == 0
    time.sleep(WINDOW_S)
    started = time.monotonic()
    worker.start()
    (negative,) = [
        d
        for d in attribution(kafka, settings, lambda ds: any(d["request_id"] == shown for d in ds))
        if d["request_id"] == shown
    ]
    assert negative["kind"] == "negative" and len(negative["items"]) == 10
    print(
        f"\nrestart: the impression shown before the stop closed "
        f"{time.monotonic() - started:.1f} s after the restart began"
    )
