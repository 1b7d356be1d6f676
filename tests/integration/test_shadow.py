"""Shadow scoring against a real worker and broker: a model announced as shadow ranks the same
events as the serving model, its would-be lists are attributed to what users really do, the
live metrics and the ``quality`` command tell the two apart; a restarted worker loads it again,
and it is retired or promoted through the model-updates topic."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.core.codec import format_time_ms
from app.core.settings import Settings
from app.dev.synthetic import make_catalog
from tests.integration.kafka_io import KafkaIO
from tests.integration.test_attribution import attribution
from tests.integration.worker_process import ROOT, WorkerProcess, isolated_settings, running_worker
from tests.model_packages import SHIPPED, negated_scores, versioned_copy

pytestmark = pytest.mark.integration

WINDOW_S = 2.0
CATALOG = make_catalog(150, seed=5)
SERVING = SHIPPED
WORSE = f"{SHIPPED}-upside-down"
_MAJOR, _MINOR, _PATCH = SHIPPED.split(".")
TWIN = f"{_MAJOR}.{_MINOR}.{int(_PATCH) + 1}-twin"  # one patch on: promotable
USERS = 10
ROUNDS = 4


@pytest.fixture(scope="module")
def settings(bootstrap: str, module_tmp: Path) -> Settings:
    return isolated_settings(bootstrap, module_tmp, attribution_window_s=WINDOW_S)


@pytest.fixture(scope="module")
def worker(settings: Settings, kafka: KafkaIO, module_tmp: Path) -> Iterator[WorkerProcess]:
    with running_worker(settings, kafka, CATALOG, module_tmp / "worker.log") as proc:
        yield proc


def run_cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = settings.child_environ(os.environ)
    return subprocess.run(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "app", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def cli(settings: Settings, *args: str) -> str:
    done = run_cli(settings, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def wait_for(
    what: str, check: Callable[[], bool], worker: WorkerProcess, timeout_s: float = 90
) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen in {timeout_s:g} s; worker log:\n{worker.log_tail()}")
        time.sleep(0.3)


class ClosedLoop:
    """Users who click the first item of whatever they were shown last: the serving model's
    lists decide what they do, so its hit rate is high and an upside-down shadow's is low."""

    def __init__(self, kafka: KafkaIO, settings: Settings, tag: str) -> None:
        self.kafka = kafka
        self.settings = settings
        self.users = [f"shadow-{tag}-{i}" for i in range(USERS)]
        self.shown: dict[str, list[str]] = {}
        self.request_ids: list[str] = []

    def send(self, user: str, item_id: str) -> str:
        event_id = f"{user}-{uuid.uuid4().hex[:8]}"
        doc = {
            "event_id": event_id,
            "user_id": user,
            "type": "click",
            "event_time": format_time_ms(time.time_ns() // 1_000_000),
            "item_id": item_id,
        }
        self.kafka.produce(self.settings.topic_events, user.encode(), orjson.dumps(doc))
        return event_id

    def answers(self, sent: dict[str, str]) -> dict[str, dict[str, Any]]:
        wanted = set(sent.values())

        def docs(records: list[Any]) -> dict[str, dict[str, Any]]:
            found = (orjson.loads(r.value) for r in records if r.value is not None)
            return {d["event_id"]: d for d in found if d["event_id"] in wanted}

        records = self.kafka.read_until(
            self.settings.topic_recommendations, lambda rs: wanted <= docs(rs).keys()
        )
        return docs(records)

    def run(self) -> None:
        sent = {u: self.send(u, CATALOG[i * 7].item_id) for i, u in enumerate(self.users)}
        for round_ in range(ROUNDS + 1):
            got = self.answers(sent)
            self.request_ids += sent.values()
            for user, event_id in sent.items():
                self.shown[user] = [i["item_id"] for i in got[event_id]["items"]]
            if round_ < ROUNDS:
                sent = {u: self.send(u, self.shown[u][0]) for u in self.users}

    def closed(self, kafka: KafkaIO) -> list[dict[str, Any]]:
        """Every attribution record of these users' impressions, once all have closed (served
        and shadow alike: the window is short and the sweeper closes them)."""
        wanted = set(self.request_ids)

        def done(docs: list[dict[str, Any]]) -> bool:
            negatives = {d["request_id"] for d in docs if d["kind"] == "negative"}
            shadows = {d["request_id"] for d in docs if d["kind"] == "shadow"}
            return wanted <= negatives and wanted <= shadows

        return [d for d in attribution(kafka, self.settings, done, 90) if d["request_id"] in wanted]


def live(worker: WorkerProcess, name: str, version: str, role: str) -> float:
    return worker.metric(f'{name}{{model_version="{version}",role="{role}",window="300s"}}')


def test_a_worse_shadow_is_measured_worse_and_a_twin_exactly_alike_then_promoted(
    worker: WorkerProcess, kafka: KafkaIO, settings: Settings, module_tmp: Path
) -> None:
    worse = versioned_copy(module_tmp / "worse", WORSE)
    negated_scores(worse)
    twin = versioned_copy(module_tmp / "twin", TWIN)

    # 1. A shadow known to be worse: the serving model's ranking turned upside down.
    served, shadow = shadow_run(worker, kafka, settings, worse, WORSE, "known worse")
    assert {d["model_version"] for d in served.values()} == {SERVING}
    assert {d["model_version"] for d in shadow.values()} == {WORSE}
    served_hits = sum(any(a["rank"] < 10 for a in d["acted"]) for d in served.values())
    shadow_hits = sum(any(a["rank"] < 10 for a in d["acted"]) for d in shadow.values())
    # Every list but each user's last was clicked at rank 0; the shadow's lists are the
    # serving model's candidates from the bottom, so the clicked item is rarely in its top 10.
    assert served_hits == USERS * ROUNDS
    assert shadow_hits < served_hits / 2
    wait_for(
        "the live metrics of both",
        lambda: live(worker, "liverank_live_impressions", WORSE, "shadow") >= len(shadow),
        worker,
    )
    serving_rate = live(worker, "liverank_live_hit_rate", SERVING, "serving")
    shadow_rate = live(worker, "liverank_live_hit_rate", WORSE, "shadow")
    serving_ndcg = live(worker, "liverank_live_ndcg", SERVING, "serving")
    shadow_ndcg = live(worker, "liverank_live_ndcg", WORSE, "shadow")
    print(
        f"\nshadow known worse: serving hit rate@10 {serving_rate:.3f} NDCG@10 "
        f"{serving_ndcg:.3f}, shadow {shadow_rate:.3f} / {shadow_ndcg:.3f} "
        f"({len(served)} impressions each)"
    )
    assert serving_rate > 0.6 and shadow_rate < serving_rate / 2
    assert shadow_ndcg < serving_ndcg / 2
    assert worker.metric('liverank_shadow_events_total{outcome="ranked"}') >= len(shadow)
    # The quality command reads the same verdict from the attribution topic.
    table = cli(settings, "quality", "--windows", "300")
    print(table)
    rates = {
        (cells[0], cells[1]): float(cells[4])
        for cells in (
            [c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()
        )
        if len(cells) == 7 and cells[2] == "300 s"
    }
    assert rates[(WORSE, "shadow")] < rates[(SERVING, "serving")] / 2
    # Promotion on live evidence refuses it, and says why.
    refused = run_cli(settings, "model", "promote", "seqrank", "--min-impressions", "20")
    assert refused.returncode == 4, refused.stdout + refused.stderr
    assert "not promoted" in refused.stderr and "below the required gain" in refused.stderr

    # A restarted worker finds the shadow on the compacted topic (its own key) and loads it
    # again, after the serving model; a tombstone on that key retires it.
    assert worker.stop() == 0
    worker.start()
    wait_for(
        "the shadow after a restart",
        lambda: worker.metric(f'liverank_shadow_model_info{{model_version="{WORSE}"}}') == 1,
        worker,
    )
    assert worker.metric(f'liverank_model_info{{model_version="{SERVING}"}}') == 1
    assert "retired the shadow of seqrank" in cli(settings, "model", "retire-shadow", "seqrank")
    wait_for(
        "the shadow retired",
        lambda: worker.metric(f'liverank_shadow_model_info{{model_version="{WORSE}"}}') == 0,
        worker,
    )

    # 2. A twin (the same model under another version) becomes the shadow: its lists are the
    # served lists, credited with the same actions.
    served, shadow = shadow_run(worker, kafka, settings, twin, TWIN, "a twin")
    assert served.keys() == shadow.keys()
    for request_id, negative in served.items():
        twin_doc = shadow[request_id]
        assert twin_doc["model_version"] == TWIN
        would_show = {i["rank"]: i["item_id"] for i in twin_doc["items"]}
        acted_ranks = {a["rank"] for a in negative["acted"]}
        assert len(would_show) == len(negative["items"]) + len(acted_ranks)
        assert all(would_show[i["rank"]] == i["item_id"] for i in negative["items"])
        assert twin_doc["acted"] == negative["acted"]

    # 3. Promotion on live evidence: the twin is not worse (by more than chance allows on this
    # little traffic), so it is announced as serving, serves, and the shadow ends.
    promoted = cli(
        settings, "model", "promote", "seqrank", "--min-impressions", "20", "--min-gain", "-0.5"
    )
    assert f"promoted seqrank {TWIN}" in promoted, promoted
    wait_for(
        "the promotion",
        lambda: (
            worker.metric(f'liverank_model_info{{model_version="{TWIN}"}}') == 1
            and worker.metric(f'liverank_shadow_model_info{{model_version="{TWIN}"}}') == 0
        ),
        worker,
    )
    sent = ClosedLoop(kafka, settings, "after")
    event_id = sent.send(sent.users[0], CATALOG[3].item_id)
    assert sent.answers({sent.users[0]: event_id})[event_id]["model_version"] == TWIN


def shadow_run(
    worker: WorkerProcess,
    kafka: KafkaIO,
    settings: Settings,
    package: Path,
    version: str,
    note: str,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Announce ``package`` as the shadow, wait until it ranks, run the closed loop; returns
    the served (negative) and shadow attribution records of its impressions by request id."""
    out = cli(settings, "model", "publish", "--shadow", str(package), "--note", note)
    assert f"{version} ({package}) as shadow" in out
    wait_for(
        f"the shadow {version} loaded",
        lambda: worker.metric(f'liverank_shadow_model_info{{model_version="{version}"}}') == 1,
        worker,
    )
    # Its catalog vectors are built in the catalog thread: a batch before that is skipped.
    wait_for("the shadow ranking", lambda: _ranks_with_shadow(kafka, settings, worker), worker)
    loop = ClosedLoop(kafka, settings, version)
    loop.run()
    docs = loop.closed(kafka)
    served = {d["request_id"]: d for d in docs if d["kind"] == "negative"}
    shadow = {d["request_id"]: d for d in docs if d["kind"] == "shadow"}
    return served, shadow


def _ranks_with_shadow(kafka: KafkaIO, settings: Settings, worker: WorkerProcess) -> bool:
    before = worker.metric('liverank_shadow_events_total{outcome="ranked"}')
    probe = ClosedLoop(kafka, settings, f"probe-{uuid.uuid4().hex[:4]}")
    event_id = probe.send(probe.users[0], CATALOG[1].item_id)
    probe.answers({probe.users[0]: event_id})
    return worker.metric('liverank_shadow_events_total{outcome="ranked"}') > before
