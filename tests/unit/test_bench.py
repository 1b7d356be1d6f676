"""The benchmark's own arithmetic and bookkeeping: percentiles, open-loop schedules, the
saturation controller, /proc readings, pre-encoded events, the naive baseline's ranking and
the report (markdown, JSON round trip, targets). No broker."""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.core.codec import decode_event, encode_event, format_time_ms
from app.core.records import Event
from app.core.settings import Settings, SettingsError
from app.core.state import StateLimits, apply_event
from app.dev.bench import procstat
from app.dev.bench.cli import _parser, build_config
from app.dev.bench.load import (
    Schedule,
    TimeText,
    event_id,
    make_templates,
    sequence_of,
    template_of,
)
from app.dev.bench.naive import NaiveRanker
from app.dev.bench.report import evaluate_targets, read_json, render_markdown, write_json
from app.dev.bench.results import FIXED, MAX, BenchResults, CatalogPrep, StepResult, SystemResult
from app.dev.bench.runner import (
    MAX_WARMUP_S,
    Bench,
    BenchConfig,
    Sample,
    SaturationControl,
    sample_window,
)
from app.dev.bench.stats import (
    CounterSample,
    LatencySummary,
    Spread,
    kept_up,
    rate_between,
    spread,
    summarize,
)
from app.dev.bench.systems import apply_env, parse_env_pairs, worker_variant
from app.dev.synthetic import make_catalog

EventFactory = Callable[..., Event]
MODEL = Path(__file__).resolve().parents[2] / "models" / "seqrank-1"


# ---------------------------------------------------------------- percentiles


def test_percentiles_interpolate_between_ranks() -> None:
    s = summarize([float(v) for v in range(1, 101)])  # 1..100 ms
    assert s.n == 100
    assert s.p50 == pytest.approx(50.5)
    assert s.p95 == pytest.approx(95.05)
    assert s.p99 == pytest.approx(99.01)
    assert s.max == 100.0
    assert s.mean == pytest.approx(50.5)


def test_percentiles_see_the_tail_not_the_mean() -> None:
    latencies = [5.0] * 980 + [500.0] * 20  # 2% slow
    s = summarize(latencies)
    assert s.p50 == 5.0 and s.p95 == 5.0
    assert s.p99 == 500.0
    assert s.max == 500.0


def test_percentiles_of_nothing_are_none() -> None:
    assert summarize([]) == LatencySummary(0, None, None, None, None, None)


# ---------------------------------------------------------------- open-loop schedule


def test_schedule_stamps_events_with_their_due_time_even_when_sent_late() -> None:
    schedule = Schedule(rate=1000.0, duration_s=1.0, window=(0.2, 0.8))
    start_wall = 1_790_000_000_000.0
    # A sender that stalls for half a second, then catches up: the events it sends late carry
    # the times they were due, so the stall shows up as their latency.
    sent: list[int] = []
    for elapsed in (0.0, 0.5, 1.0):
        sent += [schedule.stamp_ms(start_wall, i) for i in range(len(sent), schedule.due(elapsed))]
    assert len(sent) == schedule.total == 1000
    assert sent == [int(start_wall) + i for i in range(1000)]
    assert sum(schedule.in_window(i) for i in range(schedule.total)) == 600


def test_schedule_due_counts() -> None:
    schedule = Schedule(rate=500.0, duration_s=2.0)
    assert schedule.due(-1.0) == 0
    assert schedule.due(0.0) == 1  # the first event is due at once
    assert schedule.due(0.0039) == 2
    assert schedule.due(0.004) == 3
    assert schedule.due(99.0) == 1000  # never more than the run holds


def test_rate_between_and_kept_up() -> None:
    first, last = CounterSample(10.0, 1000, 990), CounterSample(20.0, 11_000, 10_900)
    assert rate_between(first, last) == (1000.0, 991.0)
    assert kept_up(1000.0, 991.0, first.sent - first.processed, last.sent - last.processed, 10.0)
    # Processing 90% of the offered load, backlog growing by 1,000: not sustained.
    assert not kept_up(1000.0, 900.0, 10, 1010, 10.0)
    with pytest.raises(ValueError):
        rate_between(last, first)


def _simulate(capacity: float, seconds: float, burst_s: float = 0.0) -> tuple[float, float]:
    """A system that processes up to ``capacity`` events/s (its output showing only every
    ``burst_s`` seconds, like a commit interval), fed by the controller. Returns the final
    send rate and the largest backlog after warm-up."""
    samples: list[CounterSample] = []
    control = SaturationControl(samples)
    sent = done = visible = 0.0
    t, dt = 0.0, 0.1
    rate = control(t)
    backlogs = []
    while t < seconds:
        sent += rate * dt
        done = min(sent, done + capacity * dt)
        if burst_s == 0 or int((t + dt) / burst_s) > int(t / burst_s):
            visible = done
        t += dt
        samples.append(CounterSample(t, int(sent), int(visible)))
        rate = control(t)
        if t > MAX_WARMUP_S:
            backlogs.append(sent - done)
    assert min(backlogs) > 0, "after warm-up the system must never wait for input"
    return rate, max(backlogs)


@pytest.mark.parametrize(
    ("capacity", "burst_s"),
    [(30.0, 0.0), (50.0, 1.0), (300.0, 0.0), (1_500.0, 1.3), (5_000.0, 1.0), (80_000.0, 0.0)],
)
def test_saturation_control_keeps_the_system_busy_without_flooding_it(
    capacity: float, burst_s: float
) -> None:
    rate, worst_backlog = _simulate(capacity, seconds=25.0, burst_s=burst_s)
    assert rate == pytest.approx(capacity, rel=0.3)
    # The drain after the level stays short: a few seconds of work (a few hundred events
    # for the slowest systems).
    assert worst_backlog < max(10.0 * capacity, 500.0)


# ---------------------------------------------------------------- pre-encoded events


def test_templates_render_exactly_what_the_codec_encodes() -> None:
    catalog = make_catalog(200)
    templates = make_templates(catalog, events=300, users=50)
    assert len(templates) == 300
    assert any(t.trigger for t in templates) and not all(t.trigger for t in templates)
    raw = templates[0].render(b"run-0000000007", format_time_ms(1_790_000_000_123).encode())
    event = decode_event(raw, max_bytes=16_384)
    assert event.event_id == "run-0000000007"
    assert event.event_time_ms == 1_790_000_000_123
    assert templates[0].key == event.user_id.encode()
    # The same event through the codec gives the same bytes.
    assert encode_event(event) == raw


def test_template_knows_which_events_ask_for_a_recommendation(event_factory: EventFactory) -> None:
    assert template_of(event_factory("search", query="jazz")).trigger
    assert template_of(event_factory("click")).trigger
    assert not template_of(event_factory("view")).trigger


def test_time_text_matches_the_codec_across_seconds() -> None:
    text = TimeText()
    for ms in (1_790_000_000_998, 1_790_000_000_999, 1_790_000_001_000, 1_790_000_001_001, 0, 5):
        assert text(ms) == format_time_ms(ms).encode()


def test_event_ids_carry_their_sequence() -> None:
    assert sequence_of("run", event_id("run", 123)) == 123
    assert sequence_of("run", event_id("other", 123)) is None
    assert sequence_of("run", "run-12x") is None


# ---------------------------------------------------------------- /proc


def test_proc_sample_of_this_process() -> None:
    before = procstat.sample(os.getpid())
    assert before is not None
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn 0.3 s of CPU
        pass
    after = procstat.sample(os.getpid())
    assert after is not None
    assert 0.2 <= after.cpu_s - before.cpu_s <= 1.0
    assert abs(after.cpu_s - time.process_time()) < 0.5
    assert 0 < after.rss_bytes <= after.peak_rss_bytes
    # getrusage reports the peak in KiB on Linux; /proc's VmHWM is the same figure.
    assert after.peak_rss_bytes == pytest.approx(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, rel=0.1
    )


def test_a_window_takes_its_own_samples_or_else_those_around_it() -> None:
    samples = [Sample(t, int(t * 100), int(t * 90), {}) for t in (0.0, 0.5, 1.2, 1.4, 3.0)]
    # Two or more inside: the first and the last of them.
    assert [s.t for s in sample_window(samples, 1.0, 1.5) or ()] == [1.2, 1.4]
    # A sampler slowed by a busy machine left fewer than two inside: the samples around it.
    assert [s.t for s in sample_window(samples, 1.5, 2.5) or ()] == [1.4, 3.0]
    assert [s.t for s in sample_window(samples, 0.6, 1.3) or ()] == [0.5, 1.4]
    # Nothing after the window yet (or nothing at all): no measurement.
    assert sample_window(samples, 2.5, 3.5) is None
    assert sample_window([], 0.0, 1.0) is None


def test_proc_sample_of_a_missing_process() -> None:
    assert procstat.sample(2**22 + 12345) is None


def test_a_process_tree_counts_its_children(tmp_path: Path) -> None:
    # A parent whose child holds 64 MiB: the tree's RSS has it, the parent's own does not
    # (how a PROCESSES=2 worker, a supervisor over two workers, is measured).
    ready = tmp_path / "ready"
    child = (
        "import pathlib, sys, time; block = bytearray(64 << 20); "
        f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)"
    )
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])",
        ]
    )
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists()
        below = procstat.descendants(parent.pid)
        assert len(below) == 1
        own, tree = procstat.sample(parent.pid), procstat.sample_tree(parent.pid)
        assert own is not None and tree is not None
        assert tree.rss_bytes - own.rss_bytes >= 64 << 20
        assert tree.cpu_s >= own.cpu_s and tree.peak_rss_bytes >= tree.rss_bytes
        assert procstat.sample_tree(parent.pid, below) == procstat.sample_tree(parent.pid, below)
    finally:
        for pid in procstat.descendants(parent.pid):
            os.kill(pid, signal.SIGKILL)
        parent.wait(timeout=30)
    assert procstat.sample_tree(parent.pid) is None


def test_stat_parsing_survives_odd_command_names() -> None:
    line = "7 (my (odd) name) R 1 7 7 0 -1 4194304 100 0 0 0 250 75 0 0 20 0 1 0 99 0 0"
    assert procstat.parse_stat_cpu_ticks(line) == (250, 75)
    status = "Name:\tx\nVmPeak:\t 9 kB\nVmHWM:\t   300 kB\nVmRSS:\t   200 kB\n"
    assert procstat.parse_status_memory(status) == (200 * 1024, 300 * 1024)


def test_machine_info() -> None:
    info = procstat.machine_info()
    assert info["cpus_usable"] >= 1
    assert info["memory_bytes"] > 0


# ---------------------------------------------------------------- worker configuration


def test_worker_env_pairs_and_validation() -> None:
    env = parse_env_pairs(["batch_max_events=64", "LIVERANK_TOP_K=5"])
    assert env == {"LIVERANK_BATCH_MAX_EVENTS": "64", "LIVERANK_TOP_K": "5"}
    settings = apply_env(Settings(), env)
    assert settings.batch_max_events == 64 and settings.top_k == 5
    with pytest.raises(SettingsError):
        apply_env(Settings(), {"LIVERANK_NO_SUCH_THING": "1"})
    with pytest.raises(ValueError):
        parse_env_pairs(["novalue"])


def test_worker_variant_from_its_log() -> None:
    assert (
        worker_variant("x INFO app.streams.worker: model seqrank 1.0.0 (fp32) loaded from m")
        == "fp32"
    )
    assert worker_variant("nothing here") is None


# ---------------------------------------------------------------- naive baseline


@pytest.fixture(scope="module")
def naive() -> NaiveRanker:
    items = make_catalog(300)
    items.append(dataclasses.replace(items[0], item_id="gone", withdrawn=True))
    return NaiveRanker(MODEL, "int8", items)


def test_naive_ranker_follows_the_contract(naive: NaiveRanker, event_factory: EventFactory) -> None:
    assert naive.vectors.shape == (300, naive.spec.dim)
    assert "gone" not in naive.row_of and "gone" in naive.known
    limits = StateLimits()
    state = None
    clicked = naive.ids[:5]
    for item_id in clicked:
        state = apply_event(
            state, event_factory("click", item_id=item_id), naive.known[item_id], limits
        )
    assert state is not None
    click = event_factory("click", item_id=clicked[-1])
    rec = naive.recommend(state, click)
    assert rec.kind == "next_items" and len(rec.items) == 10
    assert clicked[-1] not in {i.item_id for i in rec.items}  # never the item just clicked
    scores = [i.score for i in rec.items]
    assert scores == sorted(scores, reverse=True)
    assert all(np.isfinite(scores))

    search = event_factory("search", query="jazz")
    found = naive.recommend(apply_event(state, search, None, limits), search)
    assert found.kind == "search" and found.query == "jazz"
    assert found.items[0].source == "query"
    assert all(naive.known[i.item_id].category == "jazz" for i in found.items)


def test_naive_ranker_answers_a_new_user(naive: NaiveRanker, event_factory: EventFactory) -> None:
    event = event_factory("search", query="no such words")
    rec = naive.recommend(apply_event(None, event, None, StateLimits()), event)
    assert len(rec.items) == 10 and {i.source for i in rec.items} == {"popular"}


# ---------------------------------------------------------------- report


def _step(
    system: str, items: int, step: str, achieved: float, p99: float | None, **kw: Any
) -> StepResult:
    kind = MAX if step == MAX else FIXED
    latency = (
        LatencySummary(100, p99 / 2, p99 * 0.8, p99, p99 * 1.5, p99 / 2)
        if p99 is not None
        else LatencySummary.empty()
    )
    fields = dict(
        system=system,
        catalog_items=items,
        step=step,
        kind=kind,
        offered_eps=kw.pop("offered", achieved),
        achieved_eps=achieved,
        kept_up=None if kind == MAX else kw.pop("kept_up", True),
        window_s=10.0,
        events_in_window=int(achieved * 10),
        expected_records=kw.pop("expected", 600),
        records=600,
        degraded=0,
        coalesced=0,
        latency_ms=latency,
        cpu_ms_per_event=0.12,
        broker_cpu_ms_per_event=None,
        loadgen_cpu_ms_per_event=0.01,
        rss_mib=400.0,
        peak_rss_mib=420.0,
        generator_behind_ms=1.0,
        drained=True,
    )
    fields.update(kw)
    return StepResult(**fields)


def _results() -> BenchResults:
    worker_10k = SystemResult(
        "liverank",
        10_000,
        4.2,
        300.0,
        420.0,
        "int8",
        [
            # Three rounds of max and of 300; two of 1000 and 5000.
            _step("liverank", 10_000, MAX, 6000.0, None),
            _step("liverank", 10_000, MAX, 5000.0, None, repeat=1),
            _step("liverank", 10_000, MAX, 6500.0, None, repeat=2),
            _step("liverank", 10_000, "300", 300.0, 8.0),
            _step("liverank", 10_000, "300", 300.0, 9.0, repeat=1),
            _step("liverank", 10_000, "300", 300.0, 30.0, repeat=2),
            _step("liverank", 10_000, "1000", 1000.0, 12.5),
            _step("liverank", 10_000, "1000", 1000.0, 14.5, repeat=1),
            _step("liverank", 10_000, "5000", 4100.0, 900.0, offered=5000.0, kept_up=False),
            _step("liverank", 10_000, "5000", 4100.0, 950.0, offered=5000.0, kept_up=False),
        ],
        skipped_rates=[],
    )
    worker_1m = SystemResult(
        "liverank",
        1_000_000,
        80.0,
        2100.0,
        2300.0,
        "int8",
        [_step("liverank", 1_000_000, MAX, 3000.0, None)],
    )
    naive = SystemResult(
        "naive",
        10_000,
        1.0,
        100.0,
        150.0,
        "int8",
        [_step("naive", 10_000, MAX, 1000.0, None), _step("naive", 10_000, "300", 300.0, 5.0)],
        [5000.0],
    )
    naive_full = SystemResult(
        "naive-full",
        10_000,
        1.0,
        100.0,
        150.0,
        "fp32",
        [
            _step("naive-full", 10_000, MAX, 1500.0, None),
            _step("naive-full", 10_000, MAX, 1900.0, None, repeat=1),
            _step("naive-full", 10_000, "300", 300.0, 10.0),
        ],
    )
    quix = SystemResult(
        "quix", 10_000, 1.0, 100.0, 150.0, "fp32", [_step("quix", 10_000, MAX, 2500.0, None)]
    )
    return BenchResults(
        started_at="2026-11-29T05:00:00+00:00",
        wall_s=180.0,
        machine={"cpu_model": "Test CPU", "cpus_usable": 2, "memory_bytes": 2**34},
        config={
            "quick": True,
            "duration_s": 6.0,
            "warmup_s": 2.0,
            "broker": "local",
            "repeats": 3,
        },
        catalogs=[CatalogPrep(10_000, 0.1, 0.2, "t")],
        systems=[worker_10k, worker_1m, naive_full, quix, naive],
        notes=["a note"],
    )


def test_spread_is_median_and_range_of_what_was_measured() -> None:
    assert spread([5.0, 1.0, 3.0]) == Spread(3, 3.0, 1.0, 5.0)
    assert spread([2.0, 4.0]).median == 3.0
    assert spread([None, None]) == Spread(0, None, None, None)


def test_levels_summarize_the_rounds() -> None:
    worker = _results().system("liverank", 10_000)
    assert worker is not None
    assert worker.max_eps == 6000.0  # the median of 6000, 5000, 6500
    levels = {lv.step: lv for lv in worker.levels()}
    assert [lv.step for lv in worker.levels()] == ["max", "300", "1000", "5000"]
    at_300 = levels["300"]
    assert at_300.runs == 3 and at_300.sustained == 3 and at_300.kept_up
    assert at_300.p99_ms == Spread(3, 9.0, 8.0, 30.0)
    assert not levels["5000"].kept_up


def test_targets_are_checked_against_the_medians() -> None:
    targets = {t.name: t for t in evaluate_targets(_results())}
    assert targets[">= 5,000 events/s per worker process (10,000 items)"].passed is True
    assert targets[">= 5,000 events/s per worker process (1,000,000 items)"].passed is False
    like = targets["max >= 3x the like-for-like naive loop's (10,000 items)"]
    # 6000 against the median of 1500 and 1900: 3.53x.
    assert like.passed is True and like.measured.startswith("3.53x")
    quix = targets["max >= 3x Quix Streams's (10,000 items)"]
    assert quix.passed is False and quix.measured.startswith("2.40x")
    # p50 at 300 (half the p99 in the fixture): the worker 4.5 ms, naive-full 5, naive 2.5.
    assert targets["p50 at 300 events/s <= naive-full (like-for-like)'s (10,000 items)"].passed
    assert not targets["p50 at 300 events/s <= naive (plain)'s (10,000 items)"].passed
    at_1000 = targets["p99 < 25 ms at 1,000 events/s (10,000 items)"]
    assert at_1000.passed is True and at_1000.measured.startswith("13.5 (12.5–14.5)")
    scale = targets["throughput at 1,000,000 items >= 70% of that at 10,000"]
    assert scale.passed is False and scale.measured.startswith("50%")
    assert targets["worker RSS (10,000 items)"].passed is None
    # 2,300 MiB at the peak, 2,100 when ready.
    rss = targets["worker RSS < 1 GiB at its peak (1,000,000 items)"]
    assert rss.passed is False and rss.measured == "2,100 MiB when ready, 2,300 MiB peak"
    results = _results()
    results.systems[:] = [
        dataclasses.replace(s, peak_rss_mib=1000.0) if s.catalog_items == 1_000_000 else s
        for s in results.systems
    ]
    targets = {t.name: t for t in evaluate_targets(results)}
    assert targets["worker RSS < 1 GiB at its peak (1,000,000 items)"].passed is True


def test_two_processes_are_compared_with_one() -> None:
    results = _results()
    results.systems.append(
        SystemResult(
            "liverank-2p",
            10_000,
            6.0,
            500.0,
            700.0,
            "int8",
            [
                _step("liverank-2p", 10_000, MAX, 9000.0, None),
                _step("liverank-2p", 10_000, MAX, 7000.0, None, repeat=1),
            ],
        )
    )
    targets = {t.name: t for t in evaluate_targets(results)}
    two = targets["two worker processes against one, max events/s (10,000 items)"]
    # The medians: 8000 against 6000.
    assert two.passed is None and two.measured.startswith("1.33x")
    assert "two worker processes against one, max events/s (1,000,000 items)" not in targets


def test_a_worker_with_a_shadow_is_compared_with_one_without() -> None:
    results = _results()
    results.systems.append(
        SystemResult(
            "liverank-shadow",
            10_000,
            6.0,
            300.0,
            400.0,
            "fp32",
            [
                _step("liverank-shadow", 10_000, MAX, 4000.0, None),
                _step("liverank-shadow", 10_000, MAX, 3000.0, None, repeat=1),
            ],
            shadow_events={"loaded": 1.0, "ranked": 123.0, "skipped": 4.0},
        )
    )
    targets = {t.name: t for t in evaluate_targets(results)}
    cost = targets["a worker with a shadow model against one without, max events/s (10,000 items)"]
    # The medians: 3500 against 6000.
    assert cost.passed is None and cost.measured.startswith("0.58x")
    text = render_markdown(results)
    assert "liverank (with a shadow)" in text


def test_markdown_has_a_row_per_level_and_marks_misses() -> None:
    results = _results()
    results.targets = evaluate_targets(results)
    text = render_markdown(results)
    rows = [line for line in text.splitlines() if line.startswith("| liverank | 10,000 |")]
    assert len(rows) == 5  # four levels and the start-up row
    miss = next(r for r in rows if "| 5000 |" in r)
    assert "**0/2**" in miss
    at_300 = next(r for r in rows if "| 300 |" in r)
    assert "| 3 |" in at_300 and "9.0 (8.0–30.0)" in at_300
    assert "| naive (plain) | 10,000 | max |" in text
    assert "| naive-full (like-for-like) | 10,000 | max |" in text
    assert "5,000" in text  # the naive baseline's skipped rate
    assert "Every run" in text and "| 3 | liverank | 10,000 | max |" in text
    assert "- a note" in text


def test_json_round_trip(tmp_path: Path) -> None:
    results = _results()
    results.targets = evaluate_targets(results)
    write_json(results, tmp_path / "results.json")
    again = read_json(tmp_path / "results.json")
    assert again == results
    assert again.system("liverank", 10_000).max_eps == 6000.0  # type: ignore[union-attr]
    assert again.system("naive", 10_000).steps[0].latency_ms.p99 is None  # type: ignore[union-attr]


def test_system_settings_share_the_catalog_topic_and_namespace_the_rest(tmp_path: Path) -> None:
    # Issue 14: namespaced(tag, topic_catalog=...) named the field twice (TypeError).
    config = BenchConfig(
        catalogs=(100,),
        rates=(10.0,),
        duration_s=1.0,
        warmup_s=0.0,
        max_duration_s=1.0,
        systems=("worker",),
        pipe_rates=(10.0,),
        naive_catalogs=None,
        users=10,
        templates=10,
        naive_variant=None,
        work_dir=tmp_path,
    )
    settings = Bench(Settings(), config)._system_settings("t9", "shared.catalog", tmp_path)
    assert settings.topic_catalog == "shared.catalog"
    assert settings.topic_events == "t9.events" and settings.app_id == "t9"
    assert settings.data_dir == tmp_path / "data"


def test_quick_runs_every_system_at_the_targets_rates_twice(tmp_path: Path) -> None:
    config = build_config(_parser().parse_args(["--quick"]), tmp_path)
    assert config.systems == ("liverank", "naive-full", "quix", "naive", "pipe")
    assert config.rates == (300.0, 1000.0) and config.repeats == 2
    skipped = build_config(_parser().parse_args(["--skip-quix", "--repeats", "4"]), tmp_path)
    assert "quix" not in skipped.systems and skipped.repeats == 4
    two = build_config(_parser().parse_args(["--quick", "--two-processes"]), tmp_path)
    assert two.systems[:2] == ("liverank", "liverank-2p")
    shadowed = build_config(_parser().parse_args(["--quick", "--shadow"]), tmp_path)
    assert shadowed.systems[:2] == ("liverank", "liverank-shadow")
    # Measuring runs skip a rate far over a system's maximum; the smoke run never skips one,
    # so that a busy machine cannot leave a system's level unchecked.
    assert config.skip_above == 1.5
    smoke = build_config(_parser().parse_args(["--smoke"]), tmp_path)
    assert smoke.skip_above is None and smoke.rates == (50.0,)
