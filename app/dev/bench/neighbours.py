"""Similar items from item-to-item neighbour lists against a search of the whole catalog.

The worker's "similar items" retriever proposes the rows that score best against the user's
profile. With neighbour lists (app.core.item_neighbours, the default) it looks only at the recent
items and their lists; with ``ITEM_NEIGHBOURS=0`` it searches every row. This runs the worker's
own processor over synthetic traffic to get real user states, then, for each user's last event,
takes both retrievers' similar rows after the worker's exclusions and reports:

- recall@k: the share of the exact search's first k rows that the lists also propose (k = the
  similar retriever's quotas: half the candidates after a next-item event, a quarter after a
  search);
- ms per batch of 64 for the whole candidate retrieval (``retrieve_batch``), both ways;
- how long building the lists took.

``python -m app.dev.bench.neighbours`` (``--items``, ``--users``, ``--lists``: list lengths to
compare). scripts/test runs it small (tests/unit/test_item_neighbours.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from app.core.catalog import Catalog, CatalogIndex, index_options
from app.core.codec import encode_event
from app.core.exclusions import ExclusionPolicy
from app.core.item_neighbours import ItemNeighbours
from app.core.processor import Processor
from app.core.ranking import model_vectorizer
from app.core.records import Event, Source
from app.core.retrieval import (
    PROFILE_DEPTH,
    Request,
    excluded_rows,
    query_tokens,
    retrieve_batch,
    similar_from_lists,
    user_profile,
)
from app.core.scoring.package import load_package
from app.core.settings import Settings
from app.core.state import UserState, decode_state
from app.dev.synthetic import Traffic, make_catalog

START_MS = 1_790_000_000_000
BATCH = 64


@dataclasses.dataclass(frozen=True)
class Row:
    items: int
    m: int
    users: int
    recall_next: float  # mean recall@(candidates // 2) after next-item events
    recall_next_p10: float
    recall_search: float  # mean recall@(candidates // 4)
    build_s: float
    exact_ms: float  # retrieve_batch per batch of BATCH, whole-catalog search
    lists_ms: float  # the same with the lists


def user_states(
    settings: Settings, n_items: int, n_users: int, events_per_user: int, seed: int
) -> tuple[CatalogIndex, list[tuple[UserState, Event]]]:
    """The catalog index the worker would build, and each user's state after their last event,
    from the worker's own processor."""
    model = load_package(settings.model_path, threads=1)
    catalog = Catalog(model_vectorizer(model.encoder, model.spec), index_options(settings))
    for item in make_catalog(n_items, seed=seed):
        catalog.upsert(item)
    catalog.publish()
    processor = Processor(
        catalog, model.ranker, model.spec, settings.replace(deadline_ms=0.0), clock=lambda: 0
    )
    traffic = Traffic(make_catalog(n_items, seed=seed), n_users=n_users, seed=seed)
    store: dict[bytes, bytes] = {}
    last: dict[str, Event] = {}
    events = list(
        traffic.interleaved(n_users * events_per_user, concurrent=64, start_ms=START_MS, step_ms=20)
    )
    for lo in range(0, len(events), 256):
        batch = events[lo : lo + 256]
        records = [
            (encode_event(e), Source("events", 0, lo + i, e.user_id.encode(), START_MS))
            for i, e in enumerate(batch)
        ]
        result = processor.handle_batch(records, store.get)
        for outcome in result.outcomes:
            if outcome.state is not None and outcome.user_id is not None:
                store[outcome.user_id.encode()] = outcome.state
        for e in batch:
            last[e.user_id] = e
    pairs = [
        (decode_state(store[u.encode()]), e)
        for u, e in sorted(last.items())
        if u.encode() in store  # only users the processor kept a state for
    ]
    return catalog.index, pairs


def _exact_similar(
    index: CatalogIndex, state: UserState, excluded: NDArray[np.int32], k: int
) -> NDArray[np.int32]:
    profile = user_profile(index, state)
    if profile is None:
        return np.zeros(0, dtype=np.int32)
    found, _ = index.neighbours.search(profile[None, :], min(len(index), k + excluded.size))
    rows: NDArray[np.int32] = found[0][found[0] >= 0]
    return rows[~np.isin(rows, excluded)][:k]


def _list_similar(
    index: CatalogIndex,
    lists: ItemNeighbours,
    request: Request,
    excluded: NDArray[np.int32],
    k: int,
) -> NDArray[np.int32]:
    rows = similar_from_lists(index, lists, [request])[0]
    if rows is None:
        return np.zeros(0, dtype=np.int32)
    return rows[~np.isin(rows, excluded)][:k]


def _timed(
    index: CatalogIndex, requests: Sequence[Request], limit: int, policy: ExclusionPolicy
) -> float:
    started = time.perf_counter()
    for lo in range(0, len(requests), BATCH):
        retrieve_batch(index, requests[lo : lo + BATCH], limit=limit, policy=policy)
    return (time.perf_counter() - started) * 1000 / max(1, -(-len(requests) // BATCH))


def measure(
    settings: Settings,
    index: CatalogIndex,
    pairs: Sequence[tuple[UserState, Event]],
    list_lengths: Sequence[int],
    repeats: int = 3,
) -> list[Row]:
    policy = ExclusionPolicy(settings.exclude)
    requests = [
        Request(state, event, query_tokens(event), (), {})
        for state, event in pairs
        if state.history
    ]
    excluded = [excluded_rows(index, r, policy) for r in requests]
    k_next, k_search = settings.candidates // 2, settings.candidates // 4
    truth = [
        _exact_similar(index, r.state, x, k_next) for r, x in zip(requests, excluded, strict=True)
    ]
    exact_index = dataclasses.replace(index, item_lists=None)
    out = []
    for m in list_lengths:
        started = time.perf_counter()
        lists = ItemNeighbours(index.vectors, index.neighbours, m)
        build_s = time.perf_counter() - started
        recalls, recalls_search = [], []
        for r, x, want in zip(requests, excluded, truth, strict=True):
            if want.size == 0:
                continue
            got = _list_similar(index, lists, r, x, k_next)
            recalls.append(float(np.isin(want, got).mean()))
            got_s, want_s = got[:k_search], want[:k_search]
            recalls_search.append(float(np.isin(want_s, got_s).mean()))
        list_index = dataclasses.replace(index, item_lists=lists)
        exact_ms, lists_ms = [], []
        for _ in range(repeats):  # interleaved, so a busy moment hits both
            exact_ms.append(_timed(exact_index, requests, settings.candidates, policy))
            lists_ms.append(_timed(list_index, requests, settings.candidates, policy))
        out.append(
            Row(
                items=len(index),
                m=m,
                users=len(recalls),
                recall_next=float(np.mean(recalls)) if recalls else 1.0,
                recall_next_p10=float(np.percentile(recalls, 10)) if recalls else 1.0,
                recall_search=float(np.mean(recalls_search)) if recalls_search else 1.0,
                build_s=build_s,
                exact_ms=statistics.median(exact_ms),
                lists_ms=statistics.median(lists_ms),
            )
        )
    return out


def table(rows: Sequence[Row], candidates: int) -> str:
    lines = [
        f"| items | list length | users | recall@{candidates // 2} (mean, p10) "
        f"| recall@{candidates // 4} | lists built s | retrieval ms / {BATCH} events: "
        "whole-catalog search | with lists | speed-up |",
        "|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.items:,} | {r.m} | {r.users:,} | {r.recall_next:.3f} ({r.recall_next_p10:.3f}) "
            f"| {r.recall_search:.3f} | {r.build_s:.2f} | {r.exact_ms:.2f} | {r.lists_ms:.2f} "
            f"| {r.exact_ms / max(r.lists_ms, 1e-9):.1f}x |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--events-per-user", type=int, default=12)
    parser.add_argument("--lists", default="16,32,64,128", help="list lengths to compare")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=Path("models/seqrank-1"))
    args = parser.parse_args(argv)
    settings = Settings(model_path=args.model)
    index, pairs = user_states(settings, args.items, args.users, args.events_per_user, seed=5)
    rows = measure(
        settings, index, pairs, [int(m) for m in args.lists.split(",")], repeats=args.repeats
    )
    print(
        f"{args.items:,} items, {args.users:,} users x {args.events_per_user} events, "
        f"profile of the last {PROFILE_DEPTH} items, exclusions: {settings.exclude}"
    )
    print(table(rows, settings.candidates))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
