"""The benchmark's outputs: targets checked, a markdown table, a JSON file and a latency plot."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from app.bench.results import FIXED, MAX, BenchResults, StepResult, Target
from app.bench.systems import NAIVE, WORKER

EIGHTY = "80% of max"


def _num(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _rate(value: float | None) -> str:
    return _num(value, 0)


def evaluate_targets(results: BenchResults) -> list[Target]:
    """The issue's goals, each checked against what this run measured (never assumed)."""
    targets: list[Target] = []
    sizes = sorted({s.catalog_items for s in results.systems if s.system == WORKER})
    for items in sizes:
        worker = results.system(WORKER, items)
        if worker is None or worker.max_eps is None:
            continue
        label = f"{items:,} items"
        targets.append(
            Target(
                f">= 5,000 events/s per worker ({label})",
                f"{_rate(worker.max_eps)} events/s",
                worker.max_eps >= 5000,
            )
        )
        naive = results.system(NAIVE, items)
        if naive is not None and naive.max_eps:
            ratio = worker.max_eps / naive.max_eps
            targets.append(
                Target(
                    f">= 5x the naive baseline's throughput ({label})",
                    f"{ratio:.1f}x ({_rate(worker.max_eps)} vs {_rate(naive.max_eps)} events/s)",
                    ratio >= 5.0,
                )
            )
        at_1000 = worker.step("1000")
        if at_1000 is not None and at_1000.latency_ms.p99 is not None:
            targets.append(
                Target(
                    f"p99 < 25 ms at 1,000 events/s ({label})",
                    f"{_num(at_1000.latency_ms.p99)} ms"
                    + ("" if at_1000.kept_up else " (did not keep up)"),
                    at_1000.latency_ms.p99 < 25.0 and bool(at_1000.kept_up),
                )
            )
        eighty = worker.step(EIGHTY)
        if eighty is not None and eighty.latency_ms.p99 is not None:
            targets.append(
                Target(
                    f"p99 < 100 ms at 80% of max ({label})",
                    f"{_num(eighty.latency_ms.p99)} ms at {_rate(eighty.offered_eps)} events/s"
                    + ("" if eighty.kept_up else " (did not keep up)"),
                    eighty.latency_ms.p99 < 100.0 and bool(eighty.kept_up),
                )
            )
        targets.append(
            Target(
                f"worker RSS ({label})",
                f"{_num(worker.rss_ready_mib, 0)} MiB when ready, "
                f"{_num(worker.peak_rss_mib, 0)} MiB peak",
                None,
            )
        )
    if len(sizes) >= 2:
        small, large = results.system(WORKER, sizes[0]), results.system(WORKER, sizes[-1])
        if small and large and small.max_eps and large.max_eps is not None:
            ratio = large.max_eps / small.max_eps
            targets.append(
                Target(
                    f"throughput at {sizes[-1]:,} items >= 70% of that at {sizes[0]:,}",
                    f"{ratio:.0%} ({_rate(large.max_eps)} vs {_rate(small.max_eps)} events/s)",
                    ratio >= 0.7,
                )
            )
    return targets


def system_label(system: str, items: int) -> str:
    """``liverank (10,000 items)``, or the bare name where no catalog applies (the pipe)."""
    return f"{system} ({items:,} items)" if items else system


def _items(items: int) -> str:
    return f"{items:,}" if items else "–"


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
        f"| {step.system} | {_items(step.catalog_items)} | {step.step} | "
        f"{_rate(step.offered_eps)} | {_rate(step.achieved_eps)} | {sustained} | "
        f"{_num(lat.p50)} | {_num(lat.p95)} | {_num(lat.p99)} | {_num(lat.max)} | "
        f"{records} | {step.degraded:,} | "
        f"{_num(step.cpu_ms_per_event, 3)} | {_num(step.broker_cpu_ms_per_event, 3)} | "
        f"{_num(step.rss_mib, 0)} |"
    )


def render_markdown(results: BenchResults) -> str:
    """The report: the run's setting, one row per load level, start-up and targets."""
    m = results.machine
    cfg = results.config
    lines = [
        f"## liverank benchmark, {results.started_at}",
        "",
        f"Machine: {m.get('cpu_model') or 'unknown CPU'}, {m.get('cpus_usable')} CPUs usable, "
        f"{_num((m.get('memory_bytes') or 0) / 2**30, 1)} GiB; broker "
        f"{cfg.get('broker', 'unknown')}; broker, system under test and load generator share "
        f"the machine. Wall time {_num(results.wall_s / 60, 1)} min"
        f"{' (--quick)' if cfg.get('quick') else ''}.",
        "",
        "Latency: broker append time of the output record (LogAppendTime) minus the event's "
        "event_time, which the open-loop generator sets to the event's scheduled send time "
        f"(no coordinated omission). {cfg.get('duration_s')} s measured per load level after "
        f"{cfg.get('warmup_s')} s of warm-up. `max`: the system kept busy by a standing backlog "
        "(its throughput ceiling; no latency). A level is sustained when the system processed "
        ">= 97% of the offered events and its backlog did not grow.",
        "",
        "| system | items | load | offered ev/s | achieved ev/s | sustained | p50 ms | p95 ms "
        "| p99 ms | max ms | recs | degraded | CPU ms/event | broker CPU ms/event | RSS MiB |",
        "|---|---:|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for system in results.systems:
        if system.error:
            lines.append(
                f"| {system.system} | {_items(system.catalog_items)} | failed: {system.error[:80]} "
                "| | | | | | | | | | | | |"
            )
        # Max first, then by load; the run order (max, 80% of max, rates) is in the JSON.
        ordered = sorted(system.steps, key=lambda s: (s.kind != MAX, s.offered_eps))
        lines += [_step_row(step) for step in ordered]
    lines += [
        "",
        "| system | items | variant | ready s | RSS when ready MiB | peak RSS MiB | "
        "skipped rates (over 1.5x max) |",
        "|---|---:|---|---:|---:|---:|---|",
    ]
    for system in results.systems:
        skipped = ", ".join(_rate(r) for r in system.skipped_rates) or "–"
        lines.append(
            f"| {system.system} | {_items(system.catalog_items)} | {system.variant or '–'} | "
            f"{_num(system.ready_s)} | {_num(system.rss_ready_mib, 0)} | "
            f"{_num(system.peak_rss_mib, 0)} | {skipped} |"
        )
    if results.catalogs:
        lines += ["", "| catalog items | generate s | publish s |", "|---:|---:|---:|"]
        lines += [
            f"| {c.items:,} | {_num(c.generate_s)} | {_num(c.publish_s)} |"
            for c in results.catalogs
        ]
    if results.targets:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        for t in results.targets:
            met = "–" if t.passed is None else ("yes" if t.passed else "**no**")
            lines.append(f"| {t.name} | {t.measured} | {met} |")
    if results.notes:
        lines += ["", *[f"- {note}" for note in results.notes]]
    return "\n".join(lines) + "\n"


def write_json(results: BenchResults, path: Path) -> None:
    path.write_text(json.dumps(results.to_dict(), indent=2, allow_nan=False) + "\n")


def read_json(path: Path) -> BenchResults:
    return BenchResults.from_dict(json.loads(path.read_text()))


def plot_latency(results: BenchResults, path: Path) -> bool:
    """p50 (dashed) and p99 (solid) latency against offered load, one colour per system and
    catalog; crosses mark levels that were not sustained. False when matplotlib is missing."""
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
            (s.offered_eps, s.latency_ms.p50, s.latency_ms.p99, bool(s.kept_up))
            for s in system.steps
            if s.kind == FIXED and s.latency_ms.p50 is not None and s.latency_ms.p99 is not None
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
