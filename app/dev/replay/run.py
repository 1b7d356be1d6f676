"""Runs a replay against the real broker: topics, catalog, a live worker, the events published at
the chosen pace, and every answer (recommendation or dead letter) read back."""

from __future__ import annotations

import base64
import binascii
import math
import os
import queue
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from app.core.codec import decode_recommendation, encode_event, encode_item, format_time_ms
from app.core.exclusions import ExclusionPolicy
from app.core.records import Event, EventType, Item
from app.core.settings import ENV_PREFIX, Settings
from app.dev.bench.procstat import machine_info
from app.dev.bench.systems import ROOT, ChildProcess, apply_env, worker_process
from app.dev.localkafka import pick_free_ports
from app.dev.replay.data import DEFAULT_CACHE, Dataset, load_dataset, replay_stream, span_s
from app.dev.replay.pacing import MAX, RATE, ClosedLoop, Pace, due_open_loop
from app.dev.replay.scoring import (
    DEFAULT_SEEN,
    Answer,
    Interaction,
    K,
    ReplayScores,
    score_replay,
)
from app.kafka.kafka_config import (
    PRODUCER_QUEUE,
    admin_client,
    client_config,
    keyed_by_user,
    produce_waiting,
    reader_config,
)
from app.kafka.topics import create_topics

DAY_S = 86400.0
# Settings the replay gives every worker of its own (names, places, ports): not "changed".
RUN_FIELDS = frozenset(
    {
        "app_id",
        "bootstrap_servers",
        "data_dir",
        "http_port",
        "model_path",
        *(f.name for f in fields(Settings) if f.name.startswith("topic_")),
    }
)


def say(message: str) -> None:
    """Progress for the person running the replay (stderr; the report goes to stdout)."""
    print(f"[replay] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class ReplayConfig:
    data: str = "ml-100k"
    pace: Pace = field(default_factory=lambda: Pace(RATE, 300.0))
    limit_users: int | None = None
    last_events: int | None = None
    worker_env: dict[str, str] = field(default_factory=dict)
    work_dir: Path = ROOT / ".liverank-data" / "replay" / "work"
    cache: Path = DEFAULT_CACHE
    seed: int = 0
    idle_timeout_s: float = 120.0  # no new answer for this long ends the wait
    answer_timeout_s: float = 30.0  # closed loop: a user goes on without an answer after this
    start_timeout_s: float = 300.0
    keep_topics: bool = False
    broker_label: str = "given"
    command: str = "scripts/replay"


@dataclass
class ReplayResult:
    """Everything the report shows: scores, counts, timings, where and how it ran."""

    scores: ReplayScores
    started_at: str
    command: str
    broker: str
    data: dict[str, Any]
    pace: str
    worker_settings: dict[str, str]  # those that differ from the defaults
    notes: list[str]
    publish_s: float  # first event sent to last event sent
    stream_s: float  # first event sent to last answer read
    total_s: float  # the whole run, broker set-up and worker start included
    worker_ready_s: float
    events_per_s: float  # answers (records and dead letters) per second of stream_s
    latency_ms: dict[str, float]  # answer append time minus send time
    duplicates: int
    unattributed_dead_letters: int
    timed_out_waits: int
    machine: dict[str, Any]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    worker_log: str
    run_tag: str

    def as_dict(self) -> dict[str, Any]:
        doc = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "scores"}
        doc["scores"] = self.scores.as_dict()
        return doc


class Collector:
    """Reads the recommendations and dead-letters topics from their start on a thread: one
    answer per published event id (later copies are counted as duplicates)."""

    def __init__(
        self,
        settings: Settings,
        ids: Mapping[str, int],
        on_answer: Callable[[str], None] | None = None,
    ) -> None:
        self._settings = settings
        self._ids = ids
        self._on_answer = on_answer
        self._lock = threading.Lock()
        self.answers: dict[str, Answer] = {}
        self.appended_ms: dict[str, int] = {}  # recommendation record's LogAppendTime
        self.dead: set[str] = set()
        self.duplicates = 0
        self.unattributed = 0  # dead letters whose event id is not one of ours
        self.last_progress = time.monotonic()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._consumer = Consumer(reader_config(settings, "replay"))
        assignment = []
        for topic in (settings.topic_recommendations, settings.topic_dead_letters):
            meta = self._consumer.list_topics(topic, timeout=30).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise RuntimeError(f"topic {topic} is not there")
            assignment += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
        self._consumer.assign(assignment)
        self._thread = threading.Thread(target=self._run, name="replay-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop reading (idempotent); raises if reading failed."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join(timeout=30)
            self._consumer.close()
        if self._error is not None:
            raise RuntimeError(f"reading the answers failed: {self._error!r}")

    def accounted(self) -> int:
        """Published events answered so far, by a recommendation or a dead letter."""
        with self._lock:
            return len(self.answers) + len(self.dead - self.answers.keys())

    def _run(self) -> None:
        recommendations = self._settings.topic_recommendations
        try:
            while not self._stop.is_set():
                for msg in self._consumer.consume(num_messages=1000, timeout=0.2):
                    if msg.error() is not None:
                        continue
                    value = msg.value()
                    if value is None:
                        continue  # a forgotten user's tombstone; none are sent here
                    if msg.topic() == recommendations:
                        self._recommendation(value, msg.timestamp()[1])
                    else:
                        self._dead_letter(value)
        except BaseException as exc:  # reported by stop(), on the main thread
            self._error = exc

    def _answered(self, event_id: str) -> None:
        self.last_progress = time.monotonic()
        if self._on_answer is not None:
            self._on_answer(event_id)

    def _recommendation(self, value: bytes, appended_ms: int) -> None:
        event_id, answer = parse_recommendation(value)
        if event_id not in self._ids:
            return
        with self._lock:
            if event_id in self.answers:
                self.duplicates += 1
                return
            self.answers[event_id] = answer
            self.appended_ms[event_id] = appended_ms
        self._answered(event_id)

    def _dead_letter(self, value: bytes) -> None:
        event_id = dead_letter_event_id(value)
        if event_id is None or event_id not in self._ids:
            with self._lock:
                self.unattributed += 1
            return
        with self._lock:
            if event_id in self.dead:
                self.duplicates += 1
                return
            self.dead.add(event_id)
        self._answered(event_id)


def parse_recommendation(value: bytes) -> tuple[str, Answer]:
    """The event id a recommendation record answers, and what scoring needs of it."""
    rec = decode_recommendation(value)
    return rec.event_id, Answer(
        items=tuple(i.item_id for i in rec.items),
        model_version=rec.model_version,
        degraded=rec.degraded,
        coalesced_into=rec.coalesced_into,
    )


def dead_letter_event_id(value: bytes) -> str | None:
    """The event id of the record a dead letter carries (None when it has none to read)."""
    try:
        original = base64.b64decode(orjson.loads(value)["value_b64"], validate=True)
        event_id = orjson.loads(original).get("event_id")
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, binascii.Error):
        return None
    return event_id if isinstance(event_id, str) else None


def worker_settings(
    base: Settings,
    tag: str,
    work_dir: Path,
    worker_env: Mapping[str, str],
    environ: Mapping[str, str],
    data_span_s: float,
) -> tuple[Settings, list[str]]:
    """The worker's settings: ``base`` (defaults plus the environment's LIVERANK_* variables)
    with ``worker_env`` applied, in a namespace of its own; and notes on what the replay changed.

    The one change the replay makes by itself: the age check (MAX_EVENT_AGE_S) is raised to
    cover the data's span, unless set explicitly. Event times keep the data's gaps, and the
    worker would otherwise dead-letter every event older than the limit (ML-100K spans seven
    months; with the default 30 days, 83% of its events)."""
    settings = apply_env(base, worker_env)
    notes = []
    explicit = {*environ, *worker_env}
    age_var = f"{ENV_PREFIX}MAX_EVENT_AGE_S"
    limit = settings.max_event_age_s
    if age_var not in explicit and limit and data_span_s > limit - DAY_S:
        raised = math.ceil(data_span_s / DAY_S + 1) * DAY_S
        settings = settings.replace(max_event_age_s=raised)
        notes.append(
            f"MAX_EVENT_AGE_S raised from {limit:.0f} to {raised:.0f} s: the replayed event "
            f"times span {data_span_s / DAY_S:.1f} days (gaps kept, last event now), and older "
            "events would be dead-lettered; set it with --worker-env to override"
        )
    model_path = settings.model_path
    if not model_path.is_absolute():
        model_path = ROOT / model_path
    settings = settings.namespaced(
        tag,
        data_dir=work_dir / "data",
        http_port=pick_free_ports(1)[0],
        model_path=model_path,
    )
    return settings, notes


def changed_settings(settings: Settings) -> dict[str, str]:
    """``LIVERANK_*`` variable -> value for every setting that is not the default (the run's own
    names, places and ports aside)."""
    defaults = {var: value for var, _t, value, _d in Settings().as_table()}
    names = {ENV_PREFIX + f.name.upper(): f.name for f in fields(Settings)}
    return {
        var: value
        for var, _t, value, _d in settings.as_table()
        if value != defaults[var] and names[var] not in RUN_FIELDS
    }


def publish_catalog(settings: Settings, items: Sequence[Item]) -> None:
    producer = Producer(client_config(settings, {"linger.ms": 20, "acks": "all", **PRODUCER_QUEUE}))
    for n, item in enumerate(items):
        produce_waiting(
            producer, settings.topic_catalog, key=item.item_id.encode(), value=encode_item(item)
        )
        if n % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(120)
    if remaining:
        raise RuntimeError(f"{remaining} catalog records were not delivered")


def encode_stream(stream: Sequence[Interaction]) -> list[tuple[bytes, bytes]]:
    """(key, value) of every event: clicks as schemas/event.v1.json says, keyed by user id."""
    out = []
    for e in stream:
        event = Event(
            event_id=e.event_id,
            user_id=e.user,
            type=EventType.CLICK,
            event_time_ms=e.time_ms,
            event_time=format_time_ms(e.time_ms),
            item_id=e.item,
        )
        out.append((e.user.encode(), encode_event(event)))
    return out


def delete_run_topics(settings: Settings, prefix: str, timeout_s: float = 30.0) -> None:
    """Delete every topic whose name starts with ``prefix`` (the run's namespace)."""
    admin = admin_client(settings)
    names = [t for t in admin.list_topics(timeout=timeout_s).topics if t.startswith(prefix)]
    if not names:
        return
    for future in admin.delete_topics(names, operation_timeout=timeout_s).values():
        try:
            future.result(timeout=timeout_s)
        except KafkaException:
            pass  # already gone or going: either way not ours to keep


class Publisher:
    """Sends the encoded events at the chosen pace; the send time of each is kept (wall ms)."""

    def __init__(self, settings: Settings, records: Sequence[tuple[bytes, bytes]]) -> None:
        self.settings = settings
        self.records = records
        self.sent_ms = np.zeros(len(records), dtype=np.int64)
        self.sent = 0
        self.max_behind_s = 0.0
        self._producer = Producer(
            client_config(
                settings,
                {"linger.ms": 1, "acks": "all", **keyed_by_user(settings), **PRODUCER_QUEUE},
            )
        )

    def send(self, n: int) -> None:
        key, value = self.records[n]
        self.sent_ms[n] = time.time_ns() // 1_000_000
        # The record's timestamp is the producer's (CreateTime): when it is sent.
        produce_waiting(self._producer, self.settings.topic_events, key=key, value=value)
        self.sent += 1

    def flush(self, timeout_s: float = 60.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise RuntimeError(f"{remaining} events were not delivered")

    def open_loop(self, rate: float | None, tick: Callable[[], None]) -> None:
        """Event n at n / rate seconds (all at once when ``rate`` is None), in stream order;
        ``tick`` about once a second (it checks the worker and reports progress)."""
        total = len(self.records)
        start = time.monotonic()
        next_check = start + 1.0
        while self.sent < total:
            now = time.monotonic()
            due = due_open_loop(total, now - start, rate)
            if rate is not None and due - self.sent > 1:
                self.max_behind_s = max(self.max_behind_s, (due - 1 - self.sent) / rate)
            while self.sent < due:
                self.send(self.sent)
                if self.sent % 1000 == 0:
                    self._producer.poll(0)
            self._producer.poll(0)
            if now > next_check:
                tick()
                next_check = now + 1.0
            if rate is not None and self.sent < total:
                wait = start + self.sent / rate - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
        self.flush()

    def closed_loop(
        self,
        loop: ClosedLoop,
        answers: queue.Queue[str],
        tick: Callable[[], None],
    ) -> None:
        """Send what ``loop`` says is due; every answer read may release a user's next event."""
        start = time.monotonic()
        next_check = start + 1.0
        while not loop.finished():
            now = time.monotonic() - start
            for n in loop.due(now):
                self.send(n)
            self._producer.poll(0)
            if loop.finished():
                break
            wake = loop.next_wake(now)
            wait = 1.0 if wake is None else min(1.0, max(0.0, wake - now))
            try:
                event_id = answers.get(timeout=wait)
            except queue.Empty:
                event_id = None
            at = time.monotonic() - start
            while event_id is not None:
                loop.answered(event_id, at)
                try:
                    event_id = answers.get_nowait()
                except queue.Empty:
                    event_id = None
            if time.monotonic() > next_check:
                tick()
                next_check = time.monotonic() + 1.0
        self.flush()


def _percentiles(values: Sequence[float]) -> dict[str, float]:
    if not values:
        return {}
    arr = np.asarray(values, dtype=np.float64)
    return {
        "n": float(arr.size),
        "p50": float(np.percentile(arr, 50)),
        "p95": float(np.percentile(arr, 95)),
        "p99": float(np.percentile(arr, 99)),
        "max": float(arr.max()),
    }


def _load() -> tuple[float, float, float]:
    return os.getloadavg()


def run_replay(
    config: ReplayConfig,
    base: Settings,
    environ: Mapping[str, str] | None = None,
    dataset: Dataset | None = None,
) -> ReplayResult:
    """One replay, start to end; the worker and the run's topics are gone when it returns."""
    started = time.monotonic()
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_before = _load()
    environ = dict(os.environ) if environ is None else dict(environ)
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    tag = f"replay-{stamp}-{uuid.uuid4().hex[:4]}"
    if dataset is None:
        say(f"loading {config.data}")
        dataset = load_dataset(config.data, config.cache, config.seed)
    now_ms = time.time_ns() // 1_000_000
    stream = replay_stream(
        dataset,
        prefix=f"{tag}-",
        now_ms=now_ms,
        limit_users=config.limit_users,
        last_events=config.last_events,
    )
    if not stream:
        raise RuntimeError("nothing to replay: the selection has no events")
    users = len({e.user for e in stream})
    say(
        f"{len(stream):,} events from {users:,} users over {len(dataset.catalog):,} items "
        f"({config.pace.describe()})"
    )
    work_dir = config.work_dir
    work_dir.mkdir(parents=True, exist_ok=True)
    settings, notes = worker_settings(
        base, tag, work_dir, config.worker_env, environ, span_s(stream)
    )
    for note in notes:
        say(note)
    ids = {e.event_id: n for n, e in enumerate(stream)}
    records = encode_stream(stream)
    worker: ChildProcess | None = None
    collector: Collector | None = None
    answered_q: queue.Queue[str] = queue.Queue()
    try:
        create_topics(settings)
        publish_catalog(settings, dataset.catalog)
        say(f"catalog of {len(dataset.catalog):,} items published; starting a worker")
        worker = worker_process(settings, work_dir / "worker.log")
        ready_s = worker.start(config.start_timeout_s, say)
        say(f"worker ready in {ready_s:.1f} s (log: {worker.log_path})")
        closed = config.pace.kind not in (MAX, RATE)
        collector = Collector(settings, ids, answered_q.put if closed else None)
        collector.start()
        running = worker

        def alive() -> None:
            if not running.alive():
                raise RuntimeError(f"the worker exited:\n{running.log_tail()}")

        publisher = Publisher(settings, records)
        reading = collector
        next_note = [time.monotonic() + 10.0]

        def tick() -> None:
            alive()
            if time.monotonic() > next_note[0]:
                say(f"  {publisher.sent:,} sent, {reading.accounted():,} answered")
                next_note[0] = time.monotonic() + 10.0

        t0 = time.monotonic()
        if closed:
            loop = ClosedLoop(stream, config.pace.value, config.answer_timeout_s)
            publisher.closed_loop(loop, answered_q, tick)
            timed_out = loop.timed_out
        else:
            rate = config.pace.value if config.pace.kind == RATE else None
            publisher.open_loop(rate, tick)
            timed_out = 0
        publish_s = time.monotonic() - t0
        say(f"{len(stream):,} events published in {publish_s:.1f} s; waiting for the answers")
        if not _wait_for_answers(collector, len(stream), config.idle_timeout_s, alive):
            notes.append(
                f"stopped waiting after {config.idle_timeout_s:g} s without a new answer "
                "(--timeout)"
            )
        stream_end = max(collector.last_progress, t0 + publish_s)
        load_after = _load()
        collector.stop()
        if publisher.max_behind_s > 0.5:
            notes.append(
                f"the publisher fell up to {publisher.max_behind_s:.1f} s behind its schedule"
            )
    finally:
        if collector is not None:
            with _quietly():
                collector.stop()
        if worker is not None:
            worker.stop()
        if not config.keep_topics:
            with _quietly():
                delete_run_topics(settings, tag)
        shutil.rmtree(work_dir / "data", ignore_errors=True)
    stream_s = max(1e-9, stream_end - t0)
    accounted = len(collector.answers) + len(collector.dead - collector.answers.keys())
    latencies = [
        float(appended - publisher.sent_ms[ids[event_id]])
        for event_id, appended in collector.appended_ms.items()
    ]
    say("scoring")
    scores = score_replay(
        stream,
        collector.answers,
        collector.dead,
        history_size=settings.history_size,
        seen_size=getattr(settings, "seen_size", DEFAULT_SEEN),
        k=K,
        policy=ExclusionPolicy(getattr(settings, "exclude", ExclusionPolicy.SEEN.value)),
    )
    if timed_out:
        notes.append(
            f"{timed_out} users went on without an answer after {config.answer_timeout_s:g} s"
        )
    return ReplayResult(
        scores=scores,
        started_at=started_at,
        command=config.command,
        broker=config.broker_label,
        data={
            "name": dataset.name,
            "users": users,
            "items": len(dataset.catalog),
            "events": len(stream),
            "limit_users": config.limit_users,
            "last_events": config.last_events,
            "span_days": span_s(stream) / DAY_S,
            "first_event_time": format_time_ms(stream[0].time_ms),
            "last_event_time": format_time_ms(stream[-1].time_ms),
        },
        pace=config.pace.describe(),
        worker_settings=changed_settings(settings),
        notes=notes,
        publish_s=publish_s,
        stream_s=stream_s,
        total_s=time.monotonic() - started,
        worker_ready_s=ready_s,
        events_per_s=accounted / stream_s,
        latency_ms=_percentiles(latencies),
        duplicates=collector.duplicates,
        unattributed_dead_letters=collector.unattributed,
        timed_out_waits=timed_out,
        machine={**machine_info(), "nproc": os.cpu_count()},
        load_before=load_before,
        load_after=load_after,
        worker_log=str(work_dir / "worker.log"),
        run_tag=tag,
    )


def _wait_for_answers(
    collector: Collector, total: int, idle_timeout_s: float, alive: Callable[[], None]
) -> bool:
    """Until every event is answered (True), or nothing new arrived for ``idle_timeout_s``."""
    waiting_since = time.monotonic()
    next_note = waiting_since + 10.0
    while (done := collector.accounted()) < total:
        idle_since = max(collector.last_progress, waiting_since)
        if time.monotonic() - idle_since > idle_timeout_s:
            say(f"no new answer for {idle_timeout_s:g} s: {total - done:,} events unanswered")
            return False
        alive()
        if time.monotonic() > next_note:
            say(f"  {done:,} of {total:,} events answered")
            next_note = time.monotonic() + 10.0
        time.sleep(0.1)
    return True


class _quietly:
    """Clean-up that must not hide the error being raised (it is reported instead)."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, Exception):
            say(f"clean-up: {exc!r}")
            return True
        return False
