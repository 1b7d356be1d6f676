"""The two ranking paths side by side, in process: the model path and the cheap path (the
overload answer), events per second for the same records, so the cheap path's headroom is a
number (``python -m app.dev.bench.paths``)."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from app.core.catalog import Catalog, index_options
from app.core.codec import encode_event
from app.core.processor import Processor
from app.core.ranking import model_vectorizer
from app.core.records import Source
from app.core.scoring.package import load_package
from app.core.settings import Settings
from app.dev.synthetic import Traffic, make_catalog

START_MS = 1_790_000_000_000


def records(n_items: int, n_events: int, seed: int) -> list[tuple[bytes, Source]]:
    traffic = Traffic(make_catalog(n_items, seed=seed), n_users=max(10, n_events // 20), seed=seed)
    out: list[tuple[bytes, Source]] = []
    for event in traffic.interleaved(n_events, concurrent=64, start_ms=START_MS, step_ms=20):
        out.append((encode_event(event), Source("events", 0, len(out), event.user_id.encode())))
    return out


def run(
    settings: Settings, n_items: int, batches: Sequence[list[tuple[bytes, Source]]], late: bool
) -> tuple[float, float, int]:
    """Events per second through Processor.handle_batch, triggering events per second of its
    ranking step alone, and how many records were degraded."""
    model = load_package(settings.model_path, threads=1)
    catalog = Catalog(model_vectorizer(model.encoder, model.spec), index_options(settings))
    for item in make_catalog(n_items, seed=1):
        catalog.upsert(item)
    catalog.publish()
    # Every record was written a minute before it is ranked: past any deadline.
    clock_ms = START_MS + 10**9
    stamp = clock_ms - 60_000 if late else clock_ms
    processor = Processor(
        catalog,
        model.ranker,
        model.spec,
        settings.replace(deadline_ms=1000.0 if late else 0.0),
        clock=lambda: clock_ms,
    )
    store: dict[bytes, bytes] = {}
    degraded = events = ranked = 0
    ranking_s = 0.0
    started = time.perf_counter()
    for batch in batches:
        timed = [(v, Source(s.topic, s.partition, s.offset, s.key, stamp)) for v, s in batch]
        result = processor.handle_batch(timed, store.get)
        for outcome in result.outcomes:
            if outcome.state is not None and outcome.user_id is not None:
                store[outcome.user_id.encode()] = outcome.state
        degraded += result.degraded
        ranked += result.ranked + result.degraded
        ranking_s += result.ranking_s
        events += len(batch)
    return events / (time.perf_counter() - started), ranked / max(ranking_s, 1e-9), degraded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=6_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=Path("models/seqrank-1"))
    args = parser.parse_args(argv)
    settings = Settings(model_path=args.model)
    data = records(args.items, args.events, seed=3)
    batches = [data[i : i + args.batch] for i in range(0, len(data), args.batch)]
    rates: dict[str, list[float]] = {"model": [], "cheap": []}
    ranking: dict[str, list[float]] = {"model": [], "cheap": []}
    for _ in range(args.repeats):  # interleaved, so a busy moment hits both
        for path in rates:
            rate, rank_rate, degraded = run(settings, args.items, batches, late=path == "cheap")
            if (degraded > 0) != (path == "cheap"):
                raise SystemExit(f"the {path} path run had {degraded} degraded records")
            rates[path].append(rate)
            ranking[path].append(rank_rate)
    print(f"{args.items} items, {args.events} events, batches of {args.batch}, one process")
    print(
        "| path | events/s, whole batch (median) | runs | ranked events/s, ranking step (median) |"
    )
    print("|---|---|---|---|")
    for path, runs in rates.items():
        print(
            f"| {path} | {statistics.median(runs):,.0f} | {', '.join(f'{r:,.0f}' for r in runs)} "
            f"| {statistics.median(ranking[path]):,.0f} |"
        )
    whole = statistics.median(rates["cheap"]) / statistics.median(rates["model"])
    step = statistics.median(ranking["cheap"]) / statistics.median(ranking["model"])
    print(f"cheap / model: {whole:.2f}x whole batch, {step:.2f}x ranking step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
