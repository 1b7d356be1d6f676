"""The replay's report: the quality table, the counts line and how it ran, as Markdown and JSON."""

from __future__ import annotations

import math
from pathlib import Path

import orjson

from app.dev.replay.run import ReplayResult
from app.dev.replay.scoring import ReplayScores, SliceScore

HEADER = (
    "| system | events | HR@{k} all | NDCG@{k} all | HR@{k} last | NDCG@{k} last "
    "| HR@{k} 2nd-last | NDCG@{k} 2nd-last |"
)


def _metric(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.4f}"


def _pair(s: SliceScore) -> str:
    return f"{_metric(s.hr)} | {_metric(s.ndcg)}"


def quality_table(scores: ReplayScores) -> str:
    """The table: one row per system, judged events and HR/NDCG@k on each slice.

    >>> from app.dev.replay.scoring import Answer, Interaction, score_replay
    >>> evs = [Interaction("a", "u", "x"), Interaction("b", "u", "y")]
    >>> print(quality_table(score_replay(evs, {"a": Answer(("y",), "1.0.0")}, history_size=50)))
    | system | events | HR@10 all | NDCG@10 all | HR@10 last | NDCG@10 last | HR@10 2nd-last | NDCG@10 2nd-last |
    |---|---:|---:|---:|---:|---:|---:|---:|
    | live worker (model 1.0.0) | 1 | 1.0000 | 1.0000 | 1.0000 | 1.0000 | – | – |
    | streaming co-occurrence | 1 | 0.0000 | 0.0000 | 0.0000 | 0.0000 | – | – |
    | running popularity | 1 | 0.0000 | 0.0000 | 0.0000 | 0.0000 | – | – |
    """  # noqa: E501 - a table row is one line
    lines = [HEADER.format(k=scores.k), "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for system in scores.systems:
        lines.append(
            f"| {system.name} | {system.all.events:,} | {_pair(system.all)} | "
            f"{_pair(system.last)} | {_pair(system.second_last)} |"
        )
    return "\n".join(lines)


def counts_line(result: ReplayResult) -> str:
    c = result.scores.counts
    return (
        f"events {c.events:,} · answered {c.answered:,} · missing {c.missing:,} · "
        f"degraded {c.degraded:,} · coalesced {c.coalesced:,} · dead letters "
        f"{c.dead_letters:,} · wall time {result.stream_s:.1f} s · "
        f"{result.events_per_s:,.1f} events/s"
    )


def _load(triple: tuple[float, float, float]) -> str:
    return " / ".join(f"{v:.2f}" for v in triple)


def render_markdown(result: ReplayResult) -> str:
    scores = result.scores
    data = result.data
    live = scores.systems[0]
    c = scores.counts
    cut = []
    if data.get("limit_users") is not None:
        cut.append(f"the first {data['limit_users']:,} users")
    if data.get("last_events") is not None:
        cut.append(f"each user's last {data['last_events']:,} interactions")
    machine = result.machine
    lat = result.latency_ms
    lines = [
        f"## Replay: {data['name']}, {c.events:,} events from {data['users']:,} users, "
        f"{result.pace}",
        "",
        quality_table(scores),
        "",
        counts_line(result),
        "",
        f"- command: `{result.command}`",
        f"- machine: {machine.get('nproc')} CPUs ({machine.get('cpu_model') or 'unknown CPU'}), "
        f"load average (1/5/15 min) {_load(result.load_before)} before, "
        f"{_load(result.load_after)} after; broker: {result.broker}",
        f"- data: {data['name']}"
        + (f" ({', '.join(cut)})" if cut else "")
        + f", {data['items']:,} catalog items; every interaction a click, published in global "
        f"time order (per user in their own order); event times keep the data's gaps "
        f"({data['span_days']:.1f} days), shifted so that the last is the replay's start "
        f"({data['last_event_time']}); record timestamps are the send times",
        "- worker: "
        + (
            "default settings except "
            + ", ".join(f"`{k}={v}`" for k, v in sorted(result.worker_settings.items()))
            if result.worker_settings
            else "default settings"
        )
        + f"; ready in {result.worker_ready_s:.1f} s; models answering: "
        + (", ".join(f"{v} ({n:,})" for v, n in c.model_versions.items()) or "none"),
        f"- judged: each user's event i >= 1 against the list answering their event i - 1 "
        f"(HR@{scores.k}: in its top {scores.k}; NDCG@{scores.k}: 1/log2(rank + 2)); "
        f"{live.all.events:,} events, {live.last.events:,} last, "
        f"{live.second_last.events:,} second-to-last; {live.missing:,} had no live list "
        "(no record or dead-lettered: counted as misses). The baselines are computed from the "
        "same events in the same order, each list fixed before the user's next event, with the "
        "worker's exclusion rule",
        f"- timing: published in {result.publish_s:.1f} s; wall time is first event sent to "
        f"last answer read; whole run {result.total_s:.1f} s"
        + (
            f"; answer latency (record append time minus send time) p50 {lat['p50']:.0f} ms, "
            f"p99 {lat['p99']:.0f} ms, max {lat['max']:.0f} ms"
            if lat
            else ""
        ),
    ]
    extra = []
    if result.duplicates:
        extra.append(f"{result.duplicates:,} duplicate answers (at-least-once) ignored")
    if result.unattributed_dead_letters:
        extra.append(f"{result.unattributed_dead_letters:,} dead letters named no event of ours")
    lines += [f"- note: {n}" for n in [*result.notes, *extra]]
    return "\n".join(lines) + "\n"


def write_all(result: ReplayResult, out_dir: Path) -> list[Path]:
    """``replay.md`` and ``replay.json`` in ``out_dir``; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "replay.md"
    md.write_text(render_markdown(result), encoding="utf-8")
    js = out_dir / "replay.json"
    # orjson writes NaN (a slice with no events) as null.
    js.write_bytes(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    return [md, js]
