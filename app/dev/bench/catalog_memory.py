"""The catalog's memory at a given size: RSS after the build, peak RSS, build time and the
in-process events/s at that size, each size in a fresh process
(``python -m app.dev.bench.catalog_memory --items 10000,1000000``)."""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

from app.core.catalog import Catalog, index_options
from app.core.ranking import model_vectorizer
from app.core.records import Item
from app.core.scoring.package import load_package
from app.core.settings import Settings
from app.dev.bench.paths import records, run
from app.dev.bench.procstat import sample
from app.dev.synthetic import make_catalog

MIB = 1024 * 1024
# Items are made this many at a time: the worker decodes catalog records one by one, so a
# list of every item held by the benchmark itself would inflate the peak it measures.
CHUNK = 10_000


def synthetic_items(n: int, seed: int) -> Iterator[Item]:
    """``n`` items like :func:`make_catalog`'s, made a chunk at a time; ids and the number in
    each title are numbered across chunks, so every id (and every title number) is distinct.

    >>> [i.item_id for i in synthetic_items(3, seed=1)]
    ['item-000000', 'item-000001', 'item-000002']
    """
    for start in range(0, n, CHUNK):
        for j, item in enumerate(make_catalog(min(CHUNK, n - start), seed=seed + start)):
            row = start + j
            head = item.title.rsplit(" ", 1)[0]
            yield replace(item, item_id=f"item-{row:06d}", title=f"{head} {row}")


def measure(n: int, model_path: Path, events: int, batch: int) -> dict[str, float]:
    """Build the catalog as the worker does, then time Processor.handle_batch at that size."""
    settings = Settings(model_path=model_path)
    model = load_package(settings.model_path, threads=1)
    catalog = Catalog(
        model_vectorizer(model.encoder, model.spec),
        index_options(settings),
        encoder_tag=model.spec.version,
    )
    started = time.perf_counter()
    for item in synthetic_items(n, seed=1):
        catalog.upsert(item)
    catalog.publish()
    build_s = time.perf_counter() - started
    if len(catalog.index) != n:
        raise SystemExit(f"built {len(catalog.index)} rows for {n} items")
    gc.collect()
    now = sample(os.getpid())
    rss = now.rss_bytes if now is not None else 0
    # ru_maxrss is in KiB on Linux.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del catalog
    gc.collect()
    data = records(n, events, seed=3)
    batches = [data[i : i + batch] for i in range(0, len(data), batch)]
    rate, _rank_rate, _degraded = run(settings, n, batches, late=False)
    return {
        "items": n,
        "rss_mib": rss / MIB,
        "peak_mib": peak / MIB,
        "build_s": build_s,
        "events_per_s": rate,
    }


def table(rows: list[dict[str, float]]) -> str:
    """The markdown table; the last column compares each size with the first.

    >>> print(table([{"items": 10, "rss_mib": 1.0, "peak_mib": 2.0, "build_s": 0.5,
    ...               "events_per_s": 100.0}]))
    | items | RSS after build (MiB) | peak RSS (MiB) | build s | events/s | vs first |
    |---|---|---|---|---|---|
    | 10 | 1 | 2 | 0.5 | 100 | 1.00 |
    """
    lines = [
        "| items | RSS after build (MiB) | peak RSS (MiB) | build s | events/s | vs first |",
        "|---|---|---|---|---|---|",
    ]
    first = rows[0]["events_per_s"] if rows else 0.0
    for r in rows:
        ratio = r["events_per_s"] / first if first else 0.0
        lines.append(
            f"| {int(r['items']):,} | {r['rss_mib']:,.0f} | {r['peak_mib']:,.0f} "
            f"| {r['build_s']:,.1f} | {r['events_per_s']:,.0f} | {ratio:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", default="10000,1000000", help="comma-separated sizes")
    parser.add_argument("--events", type=int, default=3_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--model", type=Path, default=Path("models/seqrank-1"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.items.split(",") if s.strip()]
    if args.child:
        # One size, in this (fresh) process: its RSS and peak are the catalog's alone.
        print(json.dumps(measure(sizes[0], args.model, args.events, args.batch)))
        return 0
    rows = []
    for n in sizes:
        command = [sys.executable, "-m", "app.dev.bench.catalog_memory", "--child"]
        command += ["--items", str(n), "--events", str(args.events), "--batch", str(args.batch)]
        command += ["--model", str(args.model)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
        if done.returncode != 0:
            sys.stderr.write(done.stderr)
            raise SystemExit(f"the {n}-item run failed with exit status {done.returncode}")
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"catalog memory, {args.events} events in batches of {args.batch}, one process per size")
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
