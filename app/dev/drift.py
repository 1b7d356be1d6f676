"""The drift experiment: users whose tastes shift mid-stream, live hit rate before and after the
shift, and after retraining on the stream and a hot reload. ``scripts/drift`` runs it.

Simulated users close the loop. Each visit, a user views and clicks an item of some genre X
(the click asks for next-item recommendations); what they want next is an item of genre f(X).
If the recommendation shows one in its top ten, they click it (a positive); if not, they go
and find one themselves (which the stream still records, so a retrained model can learn f).
The shift replaces f with another mapping. The packaged model knows nothing of f; retraining
on the stream teaches it, and the shift makes it stale again.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

from app.core.codec import encode_item, format_time_ms, parse_time_ms
from app.core.settings import Settings
from app.dev.localkafka import LocalKafka, pick_free_ports
from app.dev.synthetic import GENRES, make_catalog
from app.kafka.kafka_config import client_config, keyed_by_user, reader_config
from app.kafka.topic_reader import read_topic
from app.kafka.topics import create_topics
from app.training.exits import RetrainExit
from app.training.stream import next_version

ROOT = Path(__file__).resolve().parents[2]
GENRE_LIST = sorted(GENRES)


def mapping(shift: int) -> dict[str, str]:
    """f: the genre a user wants after genre X (a rotation of the genre list).

    >>> mapping(1)["blues"], mapping(3)["blues"]
    ('classical', 'folk')
    """
    n = len(GENRE_LIST)
    return {g: GENRE_LIST[(i + shift) % n] for i, g in enumerate(GENRE_LIST)}


@dataclass
class PhaseResult:
    name: str
    impressions: int
    hits: int
    shown: int
    clicked: int
    versions: dict[str, int]

    @property
    def hit_rate(self) -> float:
        return self.hits / self.impressions if self.impressions else float("nan")

    @property
    def ctr(self) -> float:
        return self.clicked / self.shown if self.shown else float("nan")


class Simulator:
    """Plays visits against a running worker, reading its recommendations back."""

    def __init__(self, settings: Settings, users: int, items: int, seed: int) -> None:
        self.settings = settings
        self.rng = random.Random(seed)  # noqa: S311 - a simulation, not security
        self.catalog = make_catalog(items, seed=seed)
        self.genre_of = {i.item_id: i.category for i in self.catalog}
        self.by_genre: dict[str, list[str]] = {}
        for item in self.catalog:
            self.by_genre.setdefault(item.category, []).append(item.item_id)
        self.users = [f"drift-{u:04d}" for u in range(users)]
        self.producer = Producer(
            client_config(settings, {"linger.ms": 2, "acks": "all", **keyed_by_user(settings)})
        )
        self.recs: dict[str, list[str]] = {}
        self.versions: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._seq = 0

    def publish_catalog(self) -> None:
        for item in self.catalog:
            self.producer.produce(
                self.settings.topic_catalog, key=item.item_id.encode(), value=encode_item(item)
            )
        self.producer.flush(30)

    def start(self) -> None:
        self._reader.start()

    def stop(self) -> None:
        self._stop.set()
        self._reader.join(timeout=10)
        self.producer.flush(10)

    def _read(self) -> None:
        topic = self.settings.topic_recommendations
        consumer = Consumer(reader_config(self.settings, "drift"))
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in parts])
        while not self._stop.is_set():
            for msg in consumer.consume(500, timeout=0.2):
                value = msg.value()
                if msg.error() is not None or value is None:
                    continue
                doc = orjson.loads(value)
                with self._lock:
                    self.recs[doc["event_id"]] = [i["item_id"] for i in doc["items"]]
                    self.versions[doc["event_id"]] = doc["model_version"]
        consumer.close()

    def _send(self, user: str, kind: str, item: str) -> str:
        self._seq += 1
        event_id = f"{user}-{self._seq}-{uuid.uuid4().hex[:6]}"
        now = time.time_ns() // 1_000_000
        doc = {
            "event_id": event_id,
            "user_id": user,
            "type": kind,
            "item_id": item,
            "event_time": format_time_ms(now),
        }
        self.producer.produce(
            self.settings.topic_events, key=user.encode(), value=orjson.dumps(doc)
        )
        return event_id

    def play(self, seconds: float, want: dict[str, str], batch: int = 40) -> None:
        """Visits for ``seconds``: ``batch`` users at a time click an anchor item, wait for
        their recommendations, then click what they want next (from them if shown)."""
        deadline = time.monotonic() + seconds
        rng = self.rng
        while time.monotonic() < deadline:
            visitors = rng.sample(self.users, k=min(batch, len(self.users)))
            anchors: dict[str, tuple[str, str]] = {}
            for user in visitors:
                genre = rng.choice(GENRE_LIST)
                item = rng.choice(self.by_genre[genre][:30])
                self._send(user, "view", item)
                anchors[self._send(user, "click", item)] = (user, genre)
            self.producer.flush(10)
            wait_until = time.monotonic() + 5
            while time.monotonic() < wait_until:
                with self._lock:
                    if all(e in self.recs for e in anchors):
                        break
                time.sleep(0.02)
            for event_id, (user, genre) in anchors.items():
                target = want[genre]
                with self._lock:
                    shown = self.recs.get(event_id, [])
                picked = next((i for i in shown if self.genre_of.get(i) == target), None)
                self._send(user, "click", picked or rng.choice(self.by_genre[target][:30]))
            self.producer.flush(10)


def phase_quality(settings: Settings, name: str, start_ms: int, end_ms: int) -> PhaseResult:
    """Impressions closed between ``start_ms`` and ``end_ms`` (their negative records)."""
    result = PhaseResult(name, 0, 0, 0, 0, {})
    for msg in read_topic(settings, settings.topic_attribution):
        doc = orjson.loads(msg.value() or b"{}")
        if doc.get("kind") != "negative":
            continue
        shown_ms = parse_time_ms(doc["shown_time"])
        if not start_ms <= shown_ms < end_ms:
            continue
        result.impressions += 1
        result.hits += any(a["rank"] < 10 for a in doc["acted"])
        result.shown += doc["shown"]
        result.clicked += len({a["rank"] for a in doc["acted"] if a["action"] == "click"})
        version = doc["model_version"]
        result.versions[version] = result.versions.get(version, 0) + 1
    return result


def wait_ready(port: int, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:  # noqa: S310
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("worker not ready")


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:  # noqa: S310
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def retrain(env: dict[str, str], out: Path, version: str, recent_s: float | None) -> bool:
    """Retrain on the stream; True when the new version was published (announced)."""
    argv = [
        sys.executable, "-m", "app.training", "retrain", "--out", str(out), "--version", version,
        "--epochs", "30", "--quiet", "--min-gain", "0.0",
    ]  # fmt: skip
    if recent_s is not None:
        argv += ["--recent-s", str(int(recent_s))]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, check=False)  # noqa: S603
    print(done.stdout.strip(), flush=True)
    if done.returncode != RetrainExit.BETTER:
        # The phase after runs on the serving model, and the table says which model ranked it.
        known = done.returncode in RetrainExit.__members__.values()
        why = RetrainExit(done.returncode).name.lower().replace("_", " ") if known else "failed"
        print(f"retrain of {version} exited {done.returncode} ({why}): not published", flush=True)
        if not known:  # not one of retrain's own outcomes
            print(done.stderr[-2000:], file=sys.stderr)
    return done.returncode == RetrainExit.BETTER


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/drift", description=__doc__)
    parser.add_argument("--users", type=int, default=120)
    parser.add_argument("--items", type=int, default=240)
    parser.add_argument("--phase-s", type=float, default=30.0, help="seconds of traffic per phase")
    parser.add_argument("--window-s", type=float, default=10.0, help="attribution window")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / ".liverank-data" / "drift")
    args = parser.parse_args(argv)

    work = args.out / time.strftime("%Y%m%d-%H%M%S")
    work.mkdir(parents=True)
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    kafka = None if external else LocalKafka(work / "kafka", startup_timeout=120.0)
    bootstrap = external or (kafka.start() if kafka else "")
    tag = f"drift-{uuid.uuid4().hex[:6]}"
    port = pick_free_ports(1)[0]
    settings = Settings(bootstrap_servers=bootstrap).namespaced(
        tag,
        partitions=2,
        data_dir=work / "data",
        http_port=port,
        attribution_window_s=args.window_s,
        model_path=ROOT / "models" / "seqrank-1",
    )
    env = settings.child_environ(os.environ)
    create_topics(settings)
    sim = Simulator(settings, args.users, args.items, args.seed)
    sim.publish_catalog()
    log = (work / "worker.log").open("wb")
    worker = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "app", "worker"], cwd=ROOT, env=env, stdout=log, stderr=log
    )
    results: list[PhaseResult] = []
    served = True  # every published model was served in time
    try:
        wait_ready(port)
        sim.start()
        before, after = mapping(1), mapping(3)

        def phase(name: str, want: dict[str, str]) -> None:
            start = time.time_ns() // 1_000_000
            sim.play(args.phase_s, want)
            end = time.time_ns() // 1_000_000
            time.sleep(args.window_s + 6)  # let the last windows close
            results.append(phase_quality(settings, name, start, end))
            r = results[-1]
            print(
                f"{name}: {r.impressions} impressions, hit rate@10 {r.hit_rate:.3f}, "
                f"CTR {r.ctr:.4f}, ranked by {r.versions}",
                flush=True,
            )

        # Each retrained model one minor version after the one before, whatever ships.
        shipped = orjson.loads((settings.model_path / "manifest.json").read_bytes())["version"]
        first = next_version(shipped)
        second = next_version(first)
        phase("1. packaged model, tastes A", before)
        if retrain(env, work / f"model-{first}", first, None):
            served &= wait_serving(port, first)
        phase("2. retrained on A", before)
        shifted = time.time_ns() // 1_000_000
        phase("3. tastes shift to B", after)
        recent_s = (time.time_ns() // 1_000_000 - shifted) / 1000
        if retrain(env, work / f"model-{second}", second, recent_s):
            served &= wait_serving(port, second)
        phase("4. retrained on B, hot-reloaded", after)
    finally:
        sim.stop()
        worker.terminate()
        worker.wait(60)
        log.close()
        if kafka is not None:
            kafka.stop()
    print("\n| phase | impressions | hit rate@10 | CTR | model |\n|---|---|---|---|---|")
    for r in results:
        model = ", ".join(f"{v} ({n})" for v, n in sorted(r.versions.items()))
        print(f"| {r.name} | {r.impressions} | {r.hit_rate:.3f} | {r.ctr:.4f} | {model} |")
    return 0 if served else 1


def wait_serving(port: int, version: str, timeout_s: float = 300.0) -> bool:
    """Whether the worker serves ``version`` (a published one) within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if metric(port, f'liverank_model_info{{model_version="{version}"}}') == 1.0:
            return True
        time.sleep(1)
    print(f"model {version} was published but did not start serving in {timeout_s:.0f} s")
    return False


if __name__ == "__main__":
    sys.exit(main())
