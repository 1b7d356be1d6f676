"""Runs the benchmark: catalogs published, each system started, load levels driven and measured."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from app.core.codec import encode_item, parse_time_ms
from app.core.records import Item
from app.core.settings import Settings
from app.dev.bench import procstat
from app.dev.bench.kafka_io import Offsets, TopicCounter, delete_topics, read_range
from app.dev.bench.load import LoadGenerator, Template, make_templates, sequence_of
from app.dev.bench.naive import read_catalog
from app.dev.bench.report import evaluate_targets, system_label
from app.dev.bench.results import (
    FIXED,
    MAX,
    BenchResults,
    CatalogPrep,
    StepResult,
    SystemResult,
)
from app.dev.bench.shadow import announce_shadow, shadow_events
from app.dev.bench.stats import (
    CounterSample,
    LatencySummary,
    kept_up,
    rate_between,
    summarize,
)
from app.dev.bench.systems import (
    NAIVE,
    NAIVE_FULL,
    PIPE,
    QUIX,
    QUIX_PYTHON,
    SYSTEMS,
    WORKER,
    WORKER_2P,
    WORKER_SHADOW,
    WORKERS,
    AttachedProcess,
    ChildProcess,
    StartError,
    SystemProcess,
    naive_full_process,
    naive_process,
    pipe_process,
    quix_process,
    readyz,
    worker_process,
    worker_variant,
)
from app.dev.localkafka import pick_free_ports
from app.dev.synthetic import make_catalog
from app.kafka.kafka_config import keyed_by_user, produce_waiting
from app.kafka.topics import create_topics, topic_specs

MIB = 1024 * 1024
MAX_WARMUP_S = 6.0  # the saturation controller settles within this (see its tests)
# Fixed rates over this multiple of a system's measured max are not run (they would only queue).
SKIP_ABOVE = 1.5


def say(message: str) -> None:
    """Progress for the person running the benchmark (stderr; the report goes to stdout)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class BenchConfig:
    catalogs: tuple[int, ...]
    rates: tuple[float, ...]
    duration_s: float
    warmup_s: float
    max_duration_s: float
    systems: tuple[str, ...]
    pipe_rates: tuple[float, ...]
    naive_catalogs: tuple[int, ...] | None  # None: every catalog
    users: int
    templates: int
    naive_variant: str | None
    work_dir: Path
    quick: bool = False
    broker_pid: int | None = None
    broker_label: str = "given (KAFKA_BOOTSTRAP_SERVERS)"
    start_timeout_s: float = 900.0
    skip_above: float | None = SKIP_ABOVE  # None: every rate runs
    worker_env: dict[str, str] = field(default_factory=dict)
    proc_env: dict[str, str] = field(default_factory=dict)  # verbatim, worker and baseline
    attach_pid: int | None = None  # measure this running worker (topics from settings)
    # Each round runs every level on every system, one system at a time (interleaved, so a
    # busy moment of the machine hits all of them alike); the rounds are the repeats.
    repeats: int = 3
    max_warmup_s: float = MAX_WARMUP_S
    quix_python: Path = QUIX_PYTHON


@dataclass(frozen=True, slots=True)
class Sample:
    t: float
    sent: int
    processed: int
    procs: dict[str, procstat.ProcSample | None]

    def counters(self) -> CounterSample:
        return CounterSample(self.t, self.sent, self.processed)


class Sampler:
    """Every ``interval_s``: events sent, events processed (output record counts) and CPU and
    memory of the processes that matter, on a background thread."""

    def __init__(
        self,
        counter: TopicCounter,
        sent: Callable[[], int],
        pids: dict[str, int],
        interval_s: float = 0.2,
    ) -> None:
        self._counter = counter
        self._sent = sent
        self._pids = pids
        # A system's child processes (a supervisor's workers), looked up once: /proc is not
        # scanned every interval.
        self._below = {name: procstat.descendants(pid) for name, pid in pids.items()}
        self._interval = interval_s
        self._stop = threading.Event()
        self.samples: list[Sample] = []
        self.counters: list[CounterSample] = []  # the same readings, counters only
        self._thread = threading.Thread(target=self._run, name="bench-sampler", daemon=True)

    def take(self) -> Sample:
        sent = self._sent()
        processed = self._counter.total()
        procs = {
            name: procstat.sample_tree(pid, self._below[name]) for name, pid in self._pids.items()
        }
        sample = Sample(time.monotonic(), sent, processed, procs)
        self.samples.append(sample)
        self.counters.append(sample.counters())
        return sample

    def _run(self) -> None:
        while not self._stop.is_set():
            self.take()
            self._stop.wait(self._interval)

    def start(self) -> None:
        self.take()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def latest(self) -> Sample:
        return self.samples[-1]

    def fresh(self, after: float, timeout_s: float = 5.0) -> Sample:
        """The first sample taken after monotonic time ``after``."""
        deadline = time.monotonic() + timeout_s
        while self.samples[-1].t <= after and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.samples[-1]

    def window(self, start: float, end: float) -> tuple[Sample, Sample] | None:
        """The first sample at or after ``start`` and the last at or before ``end``; when a
        busy machine slowed the sampler so that fewer than two fall inside, the samples that
        bracket the window instead (the last before it, the first after it: rates are taken
        over the samples' own times, a little wider than the window). None without them."""
        return sample_window(self.samples, start, end)


# How long a level waits for the sampler's first reading after its window: on a starved machine
# a reading (the broker's offsets, /proc) can take seconds, and without one there is no figure.
WINDOW_END_WAIT_S = 30.0


def sample_window(
    samples: Sequence[Sample], start: float, end: float
) -> tuple[Sample, Sample] | None:
    """See :meth:`Sampler.window`; ``samples`` in time order."""
    inside = [s for s in samples if start <= s.t <= end]
    if len(inside) >= 2:
        return inside[0], inside[-1]
    before = [s for s in samples if s.t <= start]
    after = [s for s in samples if s.t >= end]
    if not before or not after or after[0].t <= before[-1].t:
        return None
    return before[-1], after[0]


class SaturationControl:
    """Steers a send rate just above a system's capacity, from the sampler's live readings.

    The backlog (sent minus processed) is held between two and six seconds of work: under
    that the rate probes upwards (x1.3 a tick), over it the rate follows the processing rate
    of the last few seconds down, in between it stays a little above it. Seconds of work,
    not a few events, because a system that flushes its output in bursts (a commit interval)
    looks idle between bursts and must still never find its queue empty. The rate never falls
    by more than 30% a tick, so a burst that has not shown yet does not stall the load.
    """

    def __init__(
        self,
        samples: Sequence[CounterSample],
        *,
        start_rate: float = 100.0,
        backlog_s: float = 2.0,
        horizon_s: float = 3.0,
    ) -> None:
        self.samples = samples
        self.rate = start_rate
        self.backlog_s = backlog_s
        self.horizon_s = horizon_s

    def __call__(self, now: float) -> float:
        samples = self.samples[-int(self.horizon_s * 10) - 5 :]
        if not samples:
            return self.rate
        latest = samples[-1]
        recent = [s for s in samples if s.t >= latest.t - self.horizon_s]
        if len(recent) < 2 or recent[-1].t - recent[0].t < 0.5:
            return self.rate
        processing = rate_between(recent[0], recent[-1])[1]
        backlog = latest.sent - latest.processed
        low = min(100_000.0, self.backlog_s * max(processing, 100.0))
        if backlog < low:
            wanted = max(self.rate, processing) * 1.3
        elif processing <= 0:
            wanted = self.rate  # no output yet: the first flush has not shown, wait for it
        elif backlog > 3 * low:
            wanted = processing * 0.8
        else:
            wanted = processing * 1.05
        self.rate = max(0.7 * self.rate, wanted, 10.0)
        return self.rate


@dataclass
class Running:
    """One system under test, started once and kept running through every round."""

    system: str
    items: int
    tag: str
    workdir: Path
    settings: Settings
    process: SystemProcess
    rates: tuple[float, ...]
    generator: LoadGenerator | None = None
    counted: list[str] = field(default_factory=list)  # topics with one record per event
    output_counter: TopicCounter | None = None
    variant: str | None = None
    ready_s: float = 0.0
    rss_ready_mib: float | None = None
    best_eps: float = 0.0  # its latest max: fixed rates far above it are skipped
    steps: list[StepResult] = field(default_factory=list)
    skipped: set[float] = field(default_factory=set)
    error: str | None = None

    @property
    def label(self) -> str:
        return system_label(self.system, self.items)

    def result(self) -> SystemResult:
        alive = self.process.alive()
        final = procstat.sample_tree(self.process.pid) if alive else None
        peaks = [s.peak_rss_mib for s in self.steps if s.peak_rss_mib is not None]
        peak = final.peak_rss_bytes / MIB if final else max(peaks, default=None)
        return SystemResult(
            system=self.system,
            catalog_items=self.items,
            ready_s=self.ready_s,
            rss_ready_mib=self.rss_ready_mib,
            peak_rss_mib=peak,
            variant=self.variant,
            steps=list(self.steps),
            skipped_rates=sorted(self.skipped),
            log_path=str(self.process.log_path),
            error=self.error,
            shadow_events=(
                shadow_events(self.settings) if alive and self.system == WORKER_SHADOW else None
            ),
        )


@dataclass
class Context:
    """One system under test during one load level."""

    system: str
    items: int
    settings: Settings
    process: SystemProcess
    generator: LoadGenerator
    sampler: Sampler
    output_counter: TopicCounter  # the topic whose records carry latency
    output_topic: str
    repeat: int = 0


def publish_items(settings: Settings, items: Sequence[Item]) -> None:
    """Produce items to the compacted catalog topic (waits out a full local queue)."""
    producer = Producer(
        {
            "bootstrap.servers": settings.bootstrap_servers,
            "linger.ms": 20,
            "acks": "all",
            "compression.type": "lz4",
        }
    )
    next_note = time.monotonic() + 10.0
    for n, item in enumerate(items):
        produce_waiting(
            producer,
            settings.topic_catalog,
            0.01,
            key=item.item_id.encode(),
            value=encode_item(item),
        )
        if n % 1000 == 0:
            producer.poll(0)
            if time.monotonic() > next_note:
                say(f"  published {n:,} of {len(items):,} items")
                next_note = time.monotonic() + 10.0
    remaining = producer.flush(120)
    if remaining:
        raise RuntimeError(f"{remaining} catalog records were not delivered")


def create_catalog_topic(settings: Settings) -> None:
    spec = next(s for s in topic_specs(settings) if s.name == settings.topic_catalog)
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    topic = NewTopic(
        spec.name,
        num_partitions=spec.partitions,
        replication_factor=settings.replication_factor,
        config=spec.config,
    )
    for future in admin.create_topics([topic], operation_timeout=30).values():
        future.result(timeout=30)


def read_latencies(
    bootstrap: str, start: Offsets, end: Offsets, prefix: str, window_seq: tuple[int, int]
) -> tuple[list[float], int, int]:
    """Latencies (record append time minus event_time, ms) of the output records for the
    events sent in the window (by sequence number), once per event; plus how many were
    degraded and how many coalesced."""
    latencies: list[float] = []
    seen: set[int] = set()
    degraded = coalesced = 0
    lo, hi = window_seq
    for timestamp, value in read_range(bootstrap, start, end):
        doc = orjson.loads(value)
        seq = sequence_of(prefix, doc["event_id"])
        if seq is None or not lo <= seq < hi or seq in seen:
            continue
        seen.add(seq)
        latencies.append(float(timestamp - parse_time_ms(doc["event_time"])))
        degraded += doc.get("degraded") is True
        coalesced += "coalesced_into" in doc
    return latencies, degraded, coalesced


def _per_event_ms(first: Sample, last: Sample, name: str, events: int) -> float | None:
    a, b = first.procs.get(name), last.procs.get(name)
    if a is None or b is None or events <= 0:
        return None
    return (b.cpu_s - a.cpu_s) * 1000.0 / events


class Bench:
    """One benchmark run against one broker."""

    def __init__(self, base: Settings, config: BenchConfig) -> None:
        self.base = base
        self.config = config
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        self.run_tag = f"bench-{stamp}-{uuid.uuid4().hex[:4]}"
        self.variant: str | None = config.naive_variant

    # ------------------------------------------------------------------ run

    def run(self) -> BenchResults:
        started = time.monotonic()
        results = BenchResults(
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            wall_s=0.0,
            machine=procstat.machine_info(),
            config=self._config_doc(),
        )
        interrupted = False
        try:
            self._run_catalogs(results)
        except KeyboardInterrupt:
            # Ctrl-C: what was measured so far is still reported.
            interrupted = True
            say("interrupted; reporting what was measured")
        results.wall_s = time.monotonic() - started
        results.targets = evaluate_targets(results)
        results.notes = self._notes(results)
        if interrupted:
            results.notes.append("the run was interrupted: some levels or systems are missing")
        return results

    def _run_catalogs(self, results: BenchResults) -> None:
        cfg = self.config
        if cfg.attach_pid is not None:
            self._run_attached(results, cfg.attach_pid)
            return
        for n, items in enumerate(cfg.catalogs):
            catalog_topic = f"{self.run_tag}-catalog-{items}"
            try:
                prep, templates = self._prepare_catalog(items, catalog_topic)
                results.catalogs.append(prep)
                # The pipe does not depend on the catalog: measured with the first one only.
                systems = [
                    s
                    for s in cfg.systems
                    if (s != PIPE or n == 0)
                    and (s != NAIVE or cfg.naive_catalogs is None or items in cfg.naive_catalogs)
                ]
                self._run_set(results, systems, items, catalog_topic, templates)
            finally:
                delete_topics(self.base.bootstrap_servers, catalog_topic)

    def _run_set(
        self,
        results: BenchResults,
        systems: Sequence[str],
        items: int,
        catalog_topic: str,
        templates: list[Template],
        attach_pid: int | None = None,
    ) -> None:
        """Start ``systems`` side by side, run the interleaved rounds, stop them."""
        running: list[Running] = []
        try:
            running = self._start_all(systems, items, catalog_topic, templates, attach_pid)
            self._rounds(running)
        finally:
            for run in running:
                results.systems.append(run.result())
            self._stop_all(running, attach_pid)

    def _config_doc(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "quick": cfg.quick,
            "catalogs": list(cfg.catalogs),
            "rates": list(cfg.rates),
            "pipe_rates": list(cfg.pipe_rates),
            "duration_s": cfg.duration_s,
            "warmup_s": cfg.warmup_s,
            "max_duration_s": cfg.max_duration_s,
            "max_warmup_s": cfg.max_warmup_s,
            "repeats": cfg.repeats,
            "systems": list(cfg.systems),
            "users": cfg.users,
            "templates": cfg.templates,
            "skip_above": cfg.skip_above,
            "worker_env": dict(cfg.worker_env),
            "proc_env": dict(cfg.proc_env),
            "broker": cfg.broker_label,
            "run_tag": self.run_tag,
            "settings": {var: value for var, _t, value, _d in self.base.as_table()},
        }

    def _notes(self, results: BenchResults) -> list[str]:
        notes = [
            "CPU ms/event: the system's CPU time (user + system, all threads, /proc) over the "
            "measured window divided by the events it processed; broker likewise. RSS: VmRSS at "
            "the end of the level; peak: VmHWM.",
        ]
        for system in results.systems:
            label = system_label(system.system, system.catalog_items)
            if system.error:
                reason = system.error.splitlines()[0]
                notes.append(f"{label} failed: {reason} (log: {system.log_path})")
            if system.shadow_events is not None:
                ranked = system.shadow_events.get("ranked", 0.0)
                skipped = system.shadow_events.get("skipped", 0.0)
                notes.append(
                    f"{label}: the shadow model ranked {ranked:,.0f} events and skipped "
                    f"{skipped:,.0f} over the run (liverank_shadow_events_total)"
                )
            for step in system.steps:
                where = f"{label}, {step.step} (round {step.repeat + 1})"
                if not step.drained:
                    notes.append(f"{where}: the backlog was not worked off before the next level")
                if step.note:
                    notes.append(f"{where}: {step.note}")
                if step.generator_behind_ms > 50:
                    notes.append(
                        f"{where}: the load generator fell up to "
                        f"{step.generator_behind_ms:.0f} ms behind schedule (counted in latency)"
                    )
        return notes

    def _run_attached(self, results: BenchResults, pid: int) -> None:
        """A worker that is running already: its catalog is read from its catalog topic (the
        traffic must name items it knows), its topics come from settings, nothing of it is
        created or deleted. The other systems still get topics of their own."""
        cfg = self.config
        topic = self.base.topic_catalog
        say(f"attached to pid {pid}: reading its catalog from {topic}")
        started = time.monotonic()
        catalog = read_catalog(self.base.bootstrap_servers, topic)
        if not catalog:
            raise RuntimeError(f"the catalog topic {topic} is empty")
        read_s = time.monotonic() - started
        results.catalogs.append(CatalogPrep(len(catalog), read_s, 0.0, topic))
        templates = make_templates(catalog, events=cfg.templates, users=cfg.users)
        self._run_set(results, cfg.systems, len(catalog), topic, templates, pid)

    # ------------------------------------------------------------------ catalogs

    def _prepare_catalog(self, items: int, topic: str) -> tuple[CatalogPrep, list[Template]]:
        cfg = self.config
        say(f"catalog of {items:,} items: generating")
        t0 = time.monotonic()
        catalog = make_catalog(items)
        generate_s = time.monotonic() - t0
        settings = self.base.replace(topic_catalog=topic)
        create_catalog_topic(settings)
        say(f"catalog of {items:,} items: generated in {generate_s:.1f} s; publishing to {topic}")
        t1 = time.monotonic()
        publish_items(settings, catalog)
        publish_s = time.monotonic() - t1
        say(f"catalog of {items:,} items: published in {publish_s:.1f} s")
        t2 = time.monotonic()
        templates = make_templates(catalog, events=cfg.templates, users=cfg.users)
        say(
            f"{len(templates):,} events pre-encoded from sessions of {cfg.users:,} users in "
            f"{time.monotonic() - t2:.1f} s"
        )
        return CatalogPrep(items, generate_s, publish_s, topic), templates

    # ------------------------------------------------------------------ systems

    def _system_settings(self, tag: str, catalog_topic: str, workdir: Path) -> Settings:
        # namespaced() names every topic itself; the catalog topic is then swapped for the one
        # shared by the systems compared on one catalog (passing it to namespaced() as well
        # would name the field twice).
        return self.base.namespaced(
            tag,
            data_dir=workdir / "data",
            http_port=pick_free_ports(1)[0],
            catalog_preload_timeout_s=max(self.base.catalog_preload_timeout_s, 1800.0),
        ).replace(topic_catalog=catalog_topic)

    def _configured_variant(self) -> str:
        """The ranker the settings ask for; ``auto`` is FP32 on a CPU (see Settings)."""
        chosen = self.base.model_variant
        return chosen if chosen != "auto" else "fp32"

    def _process(self, system: str, settings: Settings, workdir: Path) -> SystemProcess:
        env = self.config.proc_env
        if system in WORKERS:
            return worker_process(settings, workdir / "worker.log", env)
        if system == NAIVE_FULL:
            return naive_full_process(settings, workdir, env)
        if system == QUIX:
            if not self.config.quix_python.exists():
                raise StartError(
                    f"{self.config.quix_python} not found: scripts/bench creates .venv-quix "
                    "(liverank plus quixstreams) on demand"
                )
            return quix_process(settings, workdir, self.config.quix_python, env)
        if system == NAIVE:
            variant = self.variant or self._configured_variant()
            return naive_process(settings, variant, workdir, env)
        return pipe_process(settings, workdir)

    def _start_all(
        self,
        systems: Sequence[str],
        items: int,
        catalog_topic: str,
        templates: list[Template],
        attach_pid: int | None,
    ) -> list[Running]:
        """Every system launched side by side (start-up is not measured), then each waited for
        and given its load generator; a system that fails to start is reported, not fatal."""
        cfg = self.config
        running: list[Running] = []
        for system in sorted(systems, key=SYSTEMS.index):
            sys_items = 0 if system == PIPE else items
            tag = f"{self.run_tag}-{system}-{sys_items}"
            workdir = cfg.work_dir / f"{system}-{sys_items}"
            workdir.mkdir(parents=True, exist_ok=True)
            rates = cfg.pipe_rates if system == PIPE else cfg.rates
            process: SystemProcess
            if system == WORKER and attach_pid is not None:
                settings = self.base
                process = AttachedProcess(system, attach_pid, readyz(settings))
                say(f"{system}: attached to pid {attach_pid} (topic {settings.topic_events})")
            else:
                settings = self._system_settings(tag, catalog_topic, workdir)
                if system == WORKER_2P:
                    settings = settings.replace(processes=2)
                create_topics(settings)
                try:
                    process = self._process(system, settings, workdir)
                except StartError as exc:
                    process = AttachedProcess(system, -1, lambda: False, workdir / "none.log")
                    run = Running(system, sys_items, tag, workdir, settings, process, rates)
                    run.error = str(exc)
                    say(f"{run.label}: FAILED: {exc}")
                    running.append(run)
                    continue
                if isinstance(process, ChildProcess):
                    process.launch()
                say(f"{system_label(system, sys_items)}: starting (log: {process.log_path})")
            running.append(Running(system, sys_items, tag, workdir, settings, process, rates))
        for run in running:
            if run.error is None:
                self._ready(run, templates)
        return running

    def _ready(self, run: Running, templates: list[Template]) -> None:
        cfg = self.config
        process, settings = run.process, run.settings
        try:
            if isinstance(process, ChildProcess):
                run.ready_s = process.wait_ready(cfg.start_timeout_s, say)
            else:
                run.ready_s = process.start(cfg.start_timeout_s, say)
            if run.system == WORKER_SHADOW:
                version = announce_shadow(settings, run.workdir)
                say(f"{run.label}: shadow model {version} loaded")
            at_ready = procstat.sample_tree(process.pid)
            run.rss_ready_mib = at_ready.rss_bytes / MIB if at_ready else None
            if run.system in WORKERS:
                run.variant = worker_variant(process.log_tail(400))
            elif run.system in (NAIVE, NAIVE_FULL, QUIX):
                # The like-for-like systems load the model as the worker does, from settings.
                run.variant = (
                    self.variant or self._configured_variant()
                    if run.system == NAIVE
                    else self._configured_variant()
                )
            say(
                f"{run.label}: ready in {run.ready_s:.1f} s, RSS {run.rss_ready_mib or 0:.0f} MiB"
                + (f", ranker {run.variant}" if run.variant else "")
            )
            bootstrap = settings.bootstrap_servers
            run.counted = (
                [settings.topic_recommendations]
                if run.system == PIPE
                else [settings.topic_feedback, settings.topic_dead_letters]
            )
            run.output_counter = TopicCounter(bootstrap, [settings.topic_recommendations])
            run.generator = LoadGenerator(
                {"bootstrap.servers": bootstrap, **keyed_by_user(settings)},
                settings.topic_events,
                templates,
                run.tag,
            )
        except (StartError, RuntimeError) as exc:
            run.error = str(exc)
            say(f"{run.label}: FAILED: {exc}")

    def _stop_all(self, running: list[Running], attach_pid: int | None) -> None:
        for run in running:
            run.process.stop()
        for run in running:
            if run.system == WORKER and attach_pid is not None:
                continue
            bootstrap = run.settings.bootstrap_servers
            shutil.rmtree(run.workdir / "data", ignore_errors=True)
            try:
                delete_topics(bootstrap, run.tag)
                # Quix names its changelog topics changelog__<group>--<topic>--<store>.
                delete_topics(bootstrap, f"changelog__{run.settings.app_id}")
            except KafkaException as exc:  # a lost broker must not lose the report
                say(f"{run.label}: topics not deleted: {exc}")

    # ------------------------------------------------------------------ rounds

    def _rounds(self, running: list[Running]) -> None:
        """Each round: ``max`` on every system in turn, then each fixed rate, slowest first, on
        every system in turn; the next system is driven only once the last one's backlog is
        worked off, so one system runs at a time while the others idle."""
        cfg = self.config
        rates = sorted({r for run in running for r in run.rates})
        for repeat in range(cfg.repeats):
            say(f"round {repeat + 1} of {cfg.repeats}")
            for run in running:
                self._level(run, MAX, None, repeat)
            behind: set[str] = set()
            for rate in rates:
                for run in running:
                    if rate not in run.rates or run.error:
                        continue
                    if run.system in behind or (
                        cfg.skip_above is not None
                        and run.best_eps > 0
                        and rate > cfg.skip_above * run.best_eps
                    ):
                        run.skipped.add(rate)
                        continue
                    step = self._level(run, f"{rate:g}", rate, repeat)
                    if step is not None and not step.drained:
                        behind.add(run.system)  # still backlogged: higher rates would be too

    def _level(
        self, run: Running, label: str, rate: float | None, repeat: int
    ) -> StepResult | None:
        if run.error is not None or run.generator is None or run.output_counter is None:
            return None
        pids = {"system": run.process.pid, "bench": os.getpid()}
        if self.config.broker_pid is not None:
            pids["broker"] = self.config.broker_pid
        bootstrap = run.settings.bootstrap_servers
        generator = run.generator
        sampler = Sampler(TopicCounter(bootstrap, run.counted), lambda: generator.sent, pids)
        sampler.start()
        ctx = Context(
            run.system,
            run.items,
            run.settings,
            run.process,
            generator,
            sampler,
            run.output_counter,
            run.settings.topic_recommendations,
            repeat,
        )
        try:
            if rate is None:
                step = self._max_step(ctx, start_rate=max(100.0, 0.8 * run.best_eps))
                run.best_eps = step.achieved_eps
            else:
                step = self._fixed_step(ctx, label, rate)
        except (StartError, RuntimeError) as exc:
            run.error = str(exc)
            say(f"{run.label}: FAILED: {exc}")
            return None
        finally:
            sampler.stop()
        run.steps.append(step)
        self._report(run.label, step)
        return step

    def _report(self, label: str, step: StepResult) -> None:
        lat = step.latency_ms
        text = (
            f"{label}: {step.step}: offered {step.offered_eps:,.0f}/s, processed "
            f"{step.achieved_eps:,.0f}/s"
        )
        if step.kind == FIXED:
            text += f", {'sustained' if step.kept_up else 'NOT sustained'}"
            if lat.p99 is not None:
                text += f", p50 {lat.p50:.1f} ms, p99 {lat.p99:.1f} ms, max {lat.max:.0f} ms"
        if step.cpu_ms_per_event is not None:
            text += f", {step.cpu_ms_per_event:.3f} CPU ms/event"
        say(text)

    # ------------------------------------------------------------------ load levels

    def _drain(self, ctx: Context, stall_s: float = 15.0, limit_s: float = 300.0) -> bool:
        """Wait until every event sent has been processed, so that the next level starts from
        an empty queue; False when nothing was processed for ``stall_s`` or after ``limit_s``."""
        ctx.generator.flush()
        started = time.monotonic()
        progress_at, processed = started, -1
        while (now := time.monotonic()) - started < limit_s and now - progress_at < stall_s:
            sample = ctx.sampler.fresh(now)
            if sample.processed >= ctx.generator.sent:
                return True
            if sample.processed > processed:
                progress_at, processed = now, sample.processed
            if not ctx.process.alive():
                raise RuntimeError(f"{ctx.system} exited:\n{ctx.process.log_tail()}")
            time.sleep(0.1)
        return False

    def _max_step(self, ctx: Context, start_rate: float = 100.0) -> StepResult:
        """The most the system sustains: the send rate is steered so that a small standing
        backlog never runs dry, sent smoothly like open-loop traffic; the processing rate over
        the window is the system's ceiling. A later round starts near the last one's max."""
        cfg = self.config
        control = SaturationControl(ctx.sampler.counters, start_rate=start_rate)
        process = ctx.process

        def steer(now: float) -> float:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited:\n{process.log_tail()}")
            return control(now)

        warmup = max(cfg.warmup_s, cfg.max_warmup_s)
        start = time.monotonic()
        ctx.generator.paced(warmup + cfg.max_duration_s, steer)
        w0, w1 = start + warmup, start + warmup + cfg.max_duration_s
        ctx.sampler.fresh(w1, timeout_s=WINDOW_END_WAIT_S)
        idle = any(s.sent <= s.processed for s in ctx.sampler.counters if w0 <= s.t <= w1)
        drained = self._drain(ctx)
        # An empty queue in the window: the load generator, not the system, set the pace.
        note = "queue ran empty: a lower bound (the load generator was the limit)" if idle else ""
        return self._result(ctx, MAX, MAX, (w0, w1), drained=drained, note=note)

    def _fixed_step(self, ctx: Context, label: str, rate: float) -> StepResult:
        """Open loop at ``rate`` for warm-up plus duration; the duration is measured."""
        cfg = self.config
        start_offsets = ctx.output_counter.end_offsets()
        total_s = cfg.warmup_s + cfg.duration_s
        run = ctx.generator.open_loop(rate, total_s, window=(cfg.warmup_s, total_s))
        window = (run.start_mono + cfg.warmup_s, run.start_mono + total_s)
        ctx.sampler.fresh(window[1], timeout_s=WINDOW_END_WAIT_S)
        drained = self._drain(ctx)
        end_offsets = ctx.output_counter.end_offsets()
        latencies, degraded, coalesced = read_latencies(
            ctx.settings.bootstrap_servers,
            start_offsets,
            end_offsets,
            ctx.generator.prefix,
            run.window_seq,
        )
        return self._result(
            ctx,
            FIXED,
            label,
            window,
            drained=drained,
            latencies=latencies,
            degraded=degraded,
            coalesced=coalesced,
            expected=run.sent_in_window if ctx.system == PIPE else run.triggers_in_window,
            in_window=run.sent_in_window,
            behind_ms=run.max_behind_ms,
        )

    def _result(
        self,
        ctx: Context,
        kind: str,
        label: str,
        window: tuple[float, float],
        *,
        drained: bool,
        latencies: list[float] | None = None,
        degraded: int = 0,
        coalesced: int = 0,
        expected: int = 0,
        in_window: int = 0,
        behind_ms: float = 0.0,
        note: str = "",
    ) -> StepResult:
        pair = ctx.sampler.window(*window)
        if pair is None:
            raise RuntimeError(f"no samples in the measured window of {label}")
        first, last = pair
        offered, achieved = rate_between(first.counters(), last.counters())
        processed = last.processed - first.processed
        proc = last.procs.get("system")
        sustained = (
            kept_up(
                offered,
                achieved,
                first.sent - first.processed,
                last.sent - last.processed,
                last.t - first.t,
            )
            if kind == FIXED
            else None
        )
        return StepResult(
            system=ctx.system,
            catalog_items=ctx.items,
            step=label,
            kind=kind,
            offered_eps=offered,
            achieved_eps=achieved,
            kept_up=sustained,
            window_s=last.t - first.t,
            events_in_window=in_window or (last.sent - first.sent),
            expected_records=expected,
            records=len(latencies or ()),
            degraded=degraded,
            coalesced=coalesced,
            latency_ms=summarize(latencies) if latencies else LatencySummary.empty(),
            cpu_ms_per_event=_per_event_ms(first, last, "system", processed),
            broker_cpu_ms_per_event=_per_event_ms(first, last, "broker", processed),
            loadgen_cpu_ms_per_event=_per_event_ms(first, last, "bench", processed),
            rss_mib=proc.rss_bytes / MIB if proc else None,
            peak_rss_mib=proc.peak_rss_bytes / MIB if proc else None,
            generator_behind_ms=behind_ms,
            drained=drained,
            note=note,
            repeat=ctx.repeat,
        )
