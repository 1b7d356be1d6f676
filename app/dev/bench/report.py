"""The benchmark's outputs: targets checked, a markdown table, a JSON file and a latency plot."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from app.dev.bench.results import FIXED, MAX, BenchResults, LevelSummary, StepResult, Target
from app.dev.bench.stats import Spread
from app.dev.bench.systems import (
    NAIVE,
    NAIVE_FULL,
    QUIX,
    WORKER,
    WORKER_2P,
    WORKER_SHADOW,
    label_of,
)

# The catalog size the memory bound (under 1 GiB) is set for.
LARGE_CATALOG = 1_000_000


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _rate(value: float | None) -> str:
    return _num(value, 0)


def _spread(value: Spread, digits: int = 1) -> str:
    """``median (min–max)``; just the median when there was one run or no spread."""
    if value.median is None:
        return "–"
    if value.n < 2 or value.lo == value.hi:
        return _num(value.median, digits)
    return f"{_num(value.median, digits)} ({_num(value.lo, digits)}–{_num(value.hi, digits)})"


def _median_max(results: BenchResults, system: str, items: int) -> tuple[float | None, str]:
    found = results.system(system, items)
    if found is None:
        return None, ""
    level = found.level(MAX)
    if level is None or level.achieved_eps.median is None:
        return None, ""
    return level.achieved_eps.median, _spread(level.achieved_eps, 0)


def evaluate_targets(results: BenchResults) -> list[Target]:
    """The issue's goals, each checked against this run's medians (never assumed)."""
    targets: list[Target] = []
    sizes = sorted({s.catalog_items for s in results.systems if s.system == WORKER})
    for items in sizes:
        worker = results.system(WORKER, items)
        best, best_text = _median_max(results, WORKER, items)
        if worker is None or best is None:
            continue
        label = f"{items:,} items"
        targets.append(
            Target(
                f">= 5,000 events/s per worker process ({label})",
                f"{best_text} events/s",
                best >= 5000,
            )
        )
        for other, name in ((NAIVE_FULL, "the like-for-like naive loop"), (QUIX, "Quix Streams")):
            theirs, theirs_text = _median_max(results, other, items)
            if theirs:
                ratio = best / theirs
                targets.append(
                    Target(
                        f"max >= 3x {name}'s ({label})",
                        f"{ratio:.2f}x ({_rate(best)} vs {theirs_text} events/s)",
                        ratio >= 3.0,
                    )
                )
        at_300 = worker.level("300")
        for other in (NAIVE_FULL, NAIVE):
            found = results.system(other, items)
            theirs_300 = found.level("300") if found is not None else None
            if at_300 is None or theirs_300 is None:
                continue
            mine, theirs = at_300.p50_ms.median, theirs_300.p50_ms.median
            if mine is None or theirs is None:
                continue
            targets.append(
                Target(
                    f"p50 at 300 events/s <= {label_of(other)}'s ({label})",
                    f"{_num(mine)} vs {_num(theirs)} ms"
                    + ("" if at_300.kept_up else " (did not keep up)"),
                    mine <= theirs and at_300.kept_up,
                )
            )
        at_1000 = worker.level("1000")
        if at_1000 is not None and at_1000.p99_ms.median is not None:
            targets.append(
                Target(
                    f"p99 < 25 ms at 1,000 events/s ({label})",
                    f"{_spread(at_1000.p99_ms)} ms"
                    + ("" if at_1000.kept_up else " (did not keep up)"),
                    at_1000.p99_ms.median < 25.0 and at_1000.kept_up,
                )
            )
        ready, peak = _num(worker.rss_ready_mib, 0), _num(worker.peak_rss_mib, 0)
        rss = f"{ready} MiB when ready, {peak} MiB peak"
        if items >= LARGE_CATALOG and worker.peak_rss_mib is not None:
            # The bound is for a million items, and it holds only if it holds at the peak.
            targets.append(
                Target(
                    f"worker RSS < 1 GiB at its peak ({label})", rss, worker.peak_rss_mib < 1024.0
                )
            )
        else:
            targets.append(Target(f"worker RSS ({label})", rss, None))
    # The worker's variants, each against the plain worker on the same catalog (no target).
    variants = (
        (WORKER_2P, "two worker processes against one"),
        (WORKER_SHADOW, "a worker with a shadow model against one without"),
    )
    for system, name in variants:
        for items in sizes:
            one, _ = _median_max(results, WORKER, items)
            variant_eps, variant_text = _median_max(results, system, items)
            if one and variant_eps is not None:
                targets.append(
                    Target(
                        f"{name}, max events/s ({items:,} items)",
                        f"{variant_eps / one:.2f}x ({variant_text} vs {_rate(one)} events/s)",
                        None,
                    )
                )
    if len(sizes) >= 2:
        small, _ = _median_max(results, WORKER, sizes[0])
        large, _ = _median_max(results, WORKER, sizes[-1])
        if small and large is not None:
            ratio = large / small
            targets.append(
                Target(
                    f"throughput at {sizes[-1]:,} items >= 70% of that at {sizes[0]:,}",
                    f"{ratio:.0%} ({_rate(large)} vs {_rate(small)} events/s)",
                    ratio >= 0.7,
                )
            )
    return targets


def system_label(system: str, items: int) -> str:
    """``liverank (10,000 items)``, or the bare name where no catalog applies (the pipe)."""
    name = label_of(system)
    return f"{name} ({items:,} items)" if items else name


def _items(items: int) -> str:
    return f"{items:,}" if items else "–"


def _level_row(level: LevelSummary) -> str:
    if level.kind == MAX:
        sustained = "backlogged"
    else:
        sustained = f"{level.sustained}/{level.runs}"
        if not level.kept_up:
            sustained = f"**{sustained}**"
    records = f"{level.records:,}"
    if level.unanswered:
        records += f" ({level.unanswered:,} missing)"
    return (
        f"| {label_of(level.system)} | {_items(level.catalog_items)} | {level.step} | "
        f"{level.runs} | {_rate(level.offered_eps.median)} | "
        f"{_spread(level.achieved_eps, 0)} | {sustained} | "
        f"{_spread(level.p50_ms)} | {_spread(level.p99_ms)} | {_num(level.max_ms.hi)} | "
        f"{records} | {level.degraded:,} | {_spread(level.cpu_ms_per_event, 3)} | "
        f"{_num(level.broker_cpu_ms_per_event.median, 3)} | {_num(level.rss_mib.hi, 0)} |"
    )


def _step_row(step: StepResult) -> str:
    lat = step.latency_ms
    if step.kind == MAX:
        sustained = "backlogged"
    else:
        sustained = "yes" if step.kept_up else "**no**"
    records = f"{step.records:,}"
    if step.unanswered:
        records += f" ({step.unanswered:,} missing)"
    return (
        f"| {step.repeat + 1} | {label_of(step.system)} | {_items(step.catalog_items)} | "
        f"{step.step} | {_rate(step.offered_eps)} | {_rate(step.achieved_eps)} | {sustained} | "
        f"{_num(lat.p50)} | {_num(lat.p95)} | {_num(lat.p99)} | {_num(lat.max)} | "
        f"{records} | {step.degraded:,} | "
        f"{_num(step.cpu_ms_per_event, 3)} | {_num(step.broker_cpu_ms_per_event, 3)} | "
        f"{_num(step.rss_mib, 0)} |"
    )


SYSTEMS_TEXT = (
    "Systems: `liverank` the worker (Faust, micro-batches); `naive-full (like-for-like)` a "
    "plain confluent-kafka loop, one record at a time through the worker's own "
    "`Processor.handle` (same model, catalog, settings, attribution and dead letters), state "
    "in RocksDB plus a compacted changelog topic, producer flushed before each offset commit; "
    "`quix` the same per-record processing in a Quix Streams application (its RocksDB state "
    "and changelog, at-least-once); `naive (plain)` the first loop a user would write (brute "
    "force retrieval, no attribution, no changelog: less work than the worker's); `pipe` "
    "consume and produce only."
)
TWO_PROCESSES_TEXT = (
    " `liverank (2 processes)` the same worker with PROCESSES=2: a supervisor and two workers, "
    "each its own consumer-group member with its own RocksDB; its CPU and memory are those of "
    "all three processes."
)


SHADOW_TEXT = (
    " `liverank (with a shadow)` the same worker with a shadow model announced on its "
    "model-updates topic (the serving package under another version): every batch the model "
    "ranks is ranked a second time, and the shadow's lists are attributed in memory."
)


def render_markdown(results: BenchResults) -> str:
    """The report: the run's setting, one row per system and load level (median and spread
    over the rounds), every run, start-up and targets."""
    m = results.machine
    cfg = results.config
    repeats = cfg.get("repeats", 1)
    lines = [
        f"## liverank benchmark, {results.started_at}",
        "",
        f"Machine: {m.get('cpu_model') or 'unknown CPU'}, {m.get('cpus_usable')} CPUs usable, "
        f"{_num((m.get('memory_bytes') or 0) / 2**30, 1)} GiB; broker "
        f"{cfg.get('broker', 'unknown')}; broker, systems under test and load generator share "
        f"the machine. Wall time {_num(results.wall_s / 60, 1)} min"
        f"{' (--quick)' if cfg.get('quick') else ''}.",
        "",
        SYSTEMS_TEXT
        + (TWO_PROCESSES_TEXT if any(s.system == WORKER_2P for s in results.systems) else "")
        + (SHADOW_TEXT if any(s.system == WORKER_SHADOW for s in results.systems) else ""),
        "",
        "Latency: broker append time of the output record (LogAppendTime) minus the event's "
        "event_time, which the open-loop generator sets to the event's scheduled send time "
        f"(no coordinated omission). {cfg.get('duration_s')} s measured per load level after "
        f"{cfg.get('warmup_s')} s of warm-up. `max`: the system kept busy by a standing backlog "
        "(its throughput ceiling; no latency). A level is sustained when the system processed "
        ">= 97% of the offered events and its backlog did not grow. Every system is started "
        f"once and kept running; the levels are interleaved across systems and the whole round "
        f"is repeated {repeats} times: each cell is the median with the (min–max) over the "
        "rounds; `max ms` and `RSS` are the highest seen.",
        "",
        "| system | items | load | runs | offered ev/s | achieved ev/s | sustained | p50 ms "
        "| p99 ms | max ms | recs | degraded | CPU ms/event | broker CPU ms/event | RSS MiB |",
        "|---|---:|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for system in results.systems:
        if system.error:
            lines.append(
                f"| {label_of(system.system)} | {_items(system.catalog_items)} | failed: "
                f"{system.error.splitlines()[0][:80] if system.error else ''} "
                "| | | | | | | | | | | | |"
            )
        lines += [_level_row(level) for level in system.levels()]
    if results.targets:
        lines += ["", "| target (medians) | measured | met |", "|---|---|---|"]
        for t in results.targets:
            met = "–" if t.passed is None else ("yes" if t.passed else "**no**")
            lines.append(f"| {t.name} | {t.measured} | {met} |")
    lines += [
        "",
        "| system | items | variant | ready s | RSS when ready MiB | peak RSS MiB | "
        "skipped rates (over 1.5x max) |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for system in results.systems:
        skipped = ", ".join(_rate(r) for r in system.skipped_rates) or "–"
        lines.append(
            f"| {label_of(system.system)} | {_items(system.catalog_items)} | "
            f"{system.variant or '–'} | {_num(system.ready_s)} | "
            f"{_num(system.rss_ready_mib, 0)} | {_num(system.peak_rss_mib, 0)} | {skipped} |"
        )
    if results.catalogs:
        lines += ["", "| catalog items | generate s | publish s |", "|---:|---:|---:|"]
        lines += [
            f"| {c.items:,} | {_num(c.generate_s)} | {_num(c.publish_s)} |"
            for c in results.catalogs
        ]
    runs = sorted(
        (step for system in results.systems for step in system.steps),
        key=lambda s: (s.repeat, s.kind != MAX, s.offered_eps if s.kind != MAX else 0.0),
    )
    if runs:
        lines += [
            "",
            "Every run, by round and load:",
            "",
            "| round | system | items | load | offered ev/s | achieved ev/s | sustained | p50 ms "
            "| p95 ms | p99 ms | max ms | recs | degraded | CPU ms/event | broker CPU ms/event "
            "| RSS MiB |",
            "|---:|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            *[_step_row(step) for step in runs],
        ]
    if results.notes:
        lines += ["", *[f"- {note}" for note in results.notes]]
    return "\n".join(lines) + "\n"


def write_json(results: BenchResults, path: Path) -> None:
    path.write_text(json.dumps(results.to_dict(), indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> BenchResults:
    return BenchResults.from_dict(json.loads(path.read_text()))


def plot_latency(results: BenchResults, path: Path) -> bool:
    """Median p50 (dashed) and p99 (solid) latency against offered load, one colour per system
    and catalog; crosses mark levels not sustained in most rounds. False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(11, 5.5))
    drawn = False
    for n, system in enumerate(results.systems):
        points = sorted(
            (lv.offered_eps.median or 0.0, lv.p50_ms.median, lv.p99_ms.median, lv.kept_up)
            for lv in system.levels()
            if lv.kind == FIXED and lv.p50_ms.median is not None and lv.p99_ms.median is not None
        )
        if not points:
            continue
        colour = f"C{n % 10}"
        label = system_label(system.system, system.catalog_items)
        xs = [p[0] for p in points]
        ax.plot(xs, [p[2] for p in points], "-o", color=colour, label=f"{label} p99")
        ax.plot(xs, [p[1] for p in points], "--.", color=colour, label=f"{label} p50")
        missed = [p for p in points if not p[3]]
        if missed:
            ax.plot([p[0] for p in missed], [p[2] for p in missed], "kx", markersize=10)
        if system.max_eps:
            ax.axvline(system.max_eps, color=colour, linestyle=":", linewidth=1)
        drawn = True
    if not drawn:
        plt.close(fig)
        return False
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered load, events/s (dotted: measured max)")
    ax.set_ylabel("end-to-end latency, ms")
    ax.set_title("liverank: latency against load (x: not sustained)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_all(results: BenchResults, out_dir: Path, latest: Path | None = None) -> list[Path]:
    """results.md, results.json and latency.png in ``out_dir``, copied to ``latest`` too."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "results.md", out_dir / "results.json"]
    written[0].write_text(render_markdown(results))
    write_json(results, written[1])
    if plot_latency(results, out_dir / "latency.png"):
        written.append(out_dir / "latency.png")
    if latest is not None:
        if latest.exists():
            shutil.rmtree(latest)
        latest.mkdir(parents=True)
        for path in written:
            shutil.copy2(path, latest / path.name)
    return written
