"""The replay's data selection, pacing, worker settings and report (scoring: elsewhere)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import numpy as np
import orjson
import pytest

from app.core.codec import encode_dead_letter, encode_recommendation, format_time_ms, validator
from app.core.records import DeadLetterError, RankedItem, Recommendation, Source
from app.core.settings import Settings
from app.dev.replay.data import (
    Dataset,
    load_dataset,
    ml100k_times,
    parse_spec,
    replay_stream,
    span_s,
    synthetic_times,
)
from app.dev.replay.pacing import MAX, RATE, THINK, ClosedLoop, Pace, due_open_loop
from app.dev.replay.report import counts_line, quality_table, render_markdown
from app.dev.replay.run import (
    DAY_S,
    ReplayResult,
    changed_settings,
    dead_letter_event_id,
    encode_stream,
    parse_recommendation,
    worker_settings,
)
from app.dev.replay.scoring import Answer, Interaction, score_replay
from app.training.movielens import load_ml100k
from app.training.sequences import SequenceData, synthetic_sequences
from tests.unit.training.test_movielens import write_dataset


@pytest.mark.parametrize(
    "module",
    [
        "app.dev.replay.scoring",
        "app.dev.replay.data",
        "app.dev.replay.pacing",
        "app.dev.replay.report",
    ],
)
def test_doctests(module: str) -> None:
    result = doctest.testmod(importlib.import_module(module))
    assert result.failed == 0 and result.attempted > 0


# ------------------------------------------------------------------ data


def tiny(times: tuple[list[int], ...], items: tuple[list[int], ...]) -> Dataset:
    n_items = max(max(s) for s in items)
    data = SequenceData(
        n_items,
        ("", *(f"i{i}" for i in range(1, n_items + 1))),
        ("",) * (n_items + 1),
        ((),) * (n_items + 1),
        tuple(f"u{u}" for u in range(len(items))),
        tuple(np.array(s, dtype=np.int64) for s in items),
    )
    return Dataset("tiny", data, tuple(np.array(t, dtype=np.int64) for t in times), [])


def test_parse_spec() -> None:
    assert parse_spec("synthetic:20:30") == ("synthetic", 20, 30)
    for bad in ("ml-1m", "synthetic:x", "synthetic:1:2:3", "synthetic:0:5"):
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_stream_is_in_global_time_order_with_users_in_their_own_order() -> None:
    # u0 has two events at the same time: they keep the data's order.
    ds = tiny(([10, 20, 20, 40], [15, 20, 50]), ([1, 2, 3, 4], [5, 6, 7]))
    events = replay_stream(ds, prefix="r-", now_ms=1_000_000)
    assert [(e.user, e.item) for e in events] == [
        ("u0", "i1"),
        ("u1", "i5"),
        ("u0", "i2"),  # 20: u0 before u1 on a tie
        ("u0", "i3"),
        ("u1", "i6"),
        ("u0", "i4"),
        ("u1", "i7"),
    ]
    assert [e.event_id for e in events] == [f"r-{n}" for n in range(7)]
    # gaps kept, the last at now
    assert [e.time_ms for e in events] == [1_000_000 - 50 + t for t in (10, 15, 20, 20, 20, 40, 50)]
    assert span_s(events) == pytest.approx(0.04)


def test_stream_limits_users_and_keeps_their_last_events() -> None:
    ds = tiny(([1, 2, 3], [4, 5, 6], [7, 8]), ([1, 2, 3], [4, 5, 6], [7, 8]))
    events = replay_stream(ds, prefix="", now_ms=100, limit_users=2, last_events=2)
    assert [(e.user, e.item) for e in events] == [
        ("u0", "i2"),
        ("u0", "i3"),
        ("u1", "i5"),
        ("u1", "i6"),
    ]
    assert events[-1].time_ms == 100
    assert replay_stream(ds, prefix="", now_ms=0, last_events=0) == []


def test_stream_rejects_misaligned_times() -> None:
    with pytest.raises(ValueError, match="2 items, 1 times"):
        replay_stream(tiny(([1],), ([1, 2],)), prefix="", now_ms=0)


def test_ml100k_times_follow_the_loaders_order(tmp_path: Path) -> None:
    directory = write_dataset(tmp_path / "ml-100k")
    data = load_ml100k(directory)
    times = ml100k_times(directory / "ml-100k.inter", data)
    # user 9: 33@100, 2@200, then 10 and 7 both at 300 (file order); user 10: 7@40, 33@50
    assert [t.tolist() for t in times] == [[100_000, 200_000, 300_000, 300_000], [40_000, 50_000]]
    dataset = load_dataset("ml-100k", cache=tmp_path)  # already there: nothing is fetched
    assert [t.tolist() for t in dataset.times] == [t.tolist() for t in times]
    assert [i.item_id for i in dataset.catalog] == ["2", "7", "10", "33"]
    events = replay_stream(dataset, prefix="", now_ms=300_000)
    assert [(e.user, e.item, e.time_ms) for e in events][:3] == [
        ("10", "7", 40_000),
        ("10", "33", 50_000),
        ("9", "33", 100_000),
    ]


def test_ml100k_times_refuse_a_different_order(tmp_path: Path) -> None:
    directory = write_dataset(tmp_path / "ml-100k")
    data = load_ml100k(directory)
    swapped = SequenceData(
        data.n_items,
        data.item_tokens,
        data.item_titles,
        data.item_genres,
        data.user_tokens,
        (data.sequences[0][::-1].copy(), data.sequences[1]),
    )
    with pytest.raises(ValueError, match="not in load order"):
        ml100k_times(directory / "ml-100k.inter", swapped)


def test_synthetic_times_are_seeded_and_increasing() -> None:
    data = synthetic_sequences(20, 40, seed=1)
    a, b = synthetic_times(data, seed=1), synthetic_times(data, seed=1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert all(len(t) == len(s) for t, s in zip(a, data.sequences, strict=True))
    assert all(np.all(np.diff(t) >= 5000) for t in a)
    dataset = load_dataset("synthetic:20:40", seed=1)
    assert len(dataset.catalog) == 40 and dataset.catalog[0].item_id == "item-000001"


def test_events_are_clicks_keyed_by_user() -> None:
    key, value = encode_stream([Interaction("e1", "u7", "i3", 1_790_000_000_000)])[0]
    assert key == b"u7"
    doc = orjson.loads(value)
    assert doc == {
        "schema_version": 1,
        "event_id": "e1",
        "user_id": "u7",
        "type": "click",
        "event_time": format_time_ms(1_790_000_000_000),
        "item_id": "i3",
    }
    validator("event")(doc)


def test_recommendation_records_are_read_as_answers() -> None:
    rec = Recommendation(
        event_id="r-7",
        user_id="u1",
        kind="next_items",
        items=(RankedItem("i2", 3.5, "similar"), RankedItem("i9", 1.0, "popular")),
        model_version="1.0.0",
        event_time=format_time_ms(0),
        event_time_ms=0,
        degraded=True,
        coalesced_into="r-8",
    )
    event_id, answer = parse_recommendation(encode_recommendation(rec, emit_time_ms=5))
    assert event_id == "r-7"
    assert answer == Answer(("i2", "i9"), "1.0.0", degraded=True, coalesced_into="r-8")
    plain = Recommendation("r-1", "u1", "next_items", (), "1.0.0", format_time_ms(0), 0)
    assert parse_recommendation(encode_recommendation(plain, emit_time_ms=5))[1] == Answer(
        (), "1.0.0"
    )


def test_dead_letters_name_the_event_they_carry() -> None:
    source = Source("t.events", 0, 12, b"u7")
    (_key, event) = encode_stream([Interaction("r-3", "u7", "i3", 0)])[0]
    letter = encode_dead_letter(
        DeadLetterError.TIME_OUT_OF_RANGE, "old", source, event, received_time_ms=1
    )
    assert dead_letter_event_id(letter) == "r-3"
    garbled = encode_dead_letter(
        DeadLetterError.MALFORMED_JSON, "bad", source, b"{not json", received_time_ms=1
    )
    assert dead_letter_event_id(garbled) is None
    assert dead_letter_event_id(b"not a dead letter") is None


# ------------------------------------------------------------------ pacing


def test_pace_checks_its_value() -> None:
    assert Pace(RATE, 300).describe() == "--rate 300"
    with pytest.raises(ValueError):
        Pace(RATE, 0)
    with pytest.raises(ValueError):
        Pace(THINK, -1)
    with pytest.raises(ValueError):
        Pace("slow")
    assert Pace(MAX).describe() == "--pace max"


def test_open_loop_schedule() -> None:
    assert [due_open_loop(5, t, 2.0) for t in (0.0, 0.49, 0.5, 1.0, 10.0)] == [1, 1, 2, 3, 5]


def events_of(*pairs: str) -> list[Interaction]:
    out = []
    for n, pair in enumerate(pairs):
        user, item = pair.split(":")
        out.append(Interaction(f"e{n}", user, item))
    return out


def test_closed_loop_waits_for_each_answer_plus_think_time() -> None:
    events = events_of("u:a", "v:b", "u:c", "u:d", "v:e")
    loop = ClosedLoop(events, think_s=2.0, timeout_s=100.0)
    assert loop.due(0.0) == [0, 1]
    assert loop.next_wake(0.0) == 100.0  # only answers (or the timeout) release anything
    assert loop.answered("e1", 1.0) and not loop.answered("e1", 1.0)  # a duplicate
    assert loop.next_wake(1.0) == 3.0
    assert loop.due(2.9) == []
    assert loop.due(3.0) == [4]  # v's next, 2 s after its answer
    assert loop.answered("e0", 3.5)
    assert loop.due(5.5) == [2]
    assert not loop.finished()
    assert loop.answered("e2", 6.0) and loop.due(8.0) == [3]
    assert loop.finished() and loop.timed_out == 0


def test_closed_loop_serves_users_ready_together_in_stream_order() -> None:
    events = events_of("a:1", "b:2", "c:3", "c:4", "b:5", "a:6")
    loop = ClosedLoop(events, think_s=0.0, timeout_s=10.0)
    assert loop.due(0.0) == [0, 1, 2]
    for event_id in ("e2", "e1", "e0"):  # answered in reverse, at one moment
        loop.answered(event_id, 1.0)
    assert loop.due(1.0) == [3, 4, 5]


def test_closed_loop_goes_on_after_the_answer_timeout() -> None:
    loop = ClosedLoop(events_of("u:a", "u:b"), think_s=1.0, timeout_s=5.0)
    assert loop.due(0.0) == [0]
    assert loop.next_wake(1.0) == 5.0
    assert loop.due(4.9) == []
    assert loop.due(5.0) == [1]  # released at the timeout, without think time
    assert loop.timed_out == 1
    assert not loop.answered("e0", 6.0)  # too late: already given up on


# ------------------------------------------------------------------ worker settings


def test_worker_settings_raise_the_age_limit_to_cover_the_data(tmp_path: Path) -> None:
    base = Settings()
    settings, notes = worker_settings(base, "replay-x", tmp_path, {}, {}, 200 * DAY_S)
    assert settings.max_event_age_s == 201 * DAY_S  # the span plus a day, whole days
    assert "MAX_EVENT_AGE_S raised" in notes[0]
    assert settings.topic_events == "replay-x.events" and settings.app_id == "replay-x"
    assert settings.data_dir == tmp_path / "data" and settings.model_path.is_absolute()
    assert changed_settings(settings) == {"LIVERANK_MAX_EVENT_AGE_S": str(201 * DAY_S)}


def test_worker_settings_keep_what_the_user_set(tmp_path: Path) -> None:
    env = {"LIVERANK_MAX_EVENT_AGE_S": "0", "LIVERANK_DEADLINE_MS": "0"}
    settings, notes = worker_settings(Settings(), "t", tmp_path, env, {}, 200 * DAY_S)
    assert settings.max_event_age_s == 0 and settings.deadline_ms == 0 and not notes
    assert changed_settings(settings) == {
        "LIVERANK_MAX_EVENT_AGE_S": "0.0",
        "LIVERANK_DEADLINE_MS": "0.0",
    }
    # a short span needs nothing
    settings, notes = worker_settings(Settings(), "t", tmp_path, {}, {}, 3600.0)
    assert not notes and changed_settings(settings) == {}


# ------------------------------------------------------------------ report


def result_for(scores_events: list[Interaction], answers: dict[str, Answer]) -> ReplayResult:
    return ReplayResult(
        scores=score_replay(scores_events, answers, history_size=50),
        started_at="2026-11-29T10:00:00+00:00",
        command="scripts/replay --limit-users 2",
        broker="local",
        data={
            "name": "ml-100k",
            "users": 2,
            "items": 5,
            "events": len(scores_events),
            "limit_users": 2,
            "last_events": None,
            "span_days": 1.5,
            "first_event_time": "2026-11-28T00:00:00.000Z",
            "last_event_time": "2026-11-29T10:00:00.000Z",
        },
        pace="--rate 300",
        worker_settings={"LIVERANK_MAX_EVENT_AGE_S": "0.0"},
        notes=["a note"],
        publish_s=1.0,
        stream_s=2.0,
        total_s=30.0,
        worker_ready_s=9.0,
        events_per_s=2.0,
        latency_ms={"n": 3.0, "p50": 7.0, "p95": 9.0, "p99": 9.5, "max": 10.0},
        duplicates=1,
        unattributed_dead_letters=0,
        timed_out_waits=0,
        machine={"nproc": 2, "cpu_model": "Test CPU"},
        load_before=(0.5, 0.4, 0.3),
        load_after=(1.5, 1.0, 0.5),
        worker_log="/tmp/w.log",  # noqa: S108 - a string in a report, never opened
        run_tag="replay-t",
    )


def test_report_has_the_table_counts_and_how_it_ran() -> None:
    events = events_of("u:a", "v:b", "u:c", "v:d")
    result = result_for(events, {"e0": Answer(("c",), "1.0.0"), "e1": Answer(("x",), "1.0.0")})
    text = render_markdown(result)
    assert quality_table(result.scores) in text
    assert "| live worker (model 1.0.0) | 2 | 0.5000 | 0.5000 | 0.5000 | 0.5000 | – | – |" in text
    assert counts_line(result) in text
    assert counts_line(result).startswith(
        "events 4 · answered 2 · missing 2 · degraded 0 · coalesced 0 · dead letters 0 · "
        "wall time 2.0 s · 2.0 events/s"
    )
    assert "`scripts/replay --limit-users 2`" in text
    assert "2 CPUs (Test CPU), load average (1/5/15 min) 0.50 / 0.40 / 0.30 before" in text
    assert "`LIVERANK_MAX_EVENT_AGE_S=0.0`" in text and "- note: a note" in text
    assert "1 duplicate answers" in text
