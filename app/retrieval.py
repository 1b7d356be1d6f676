"""Candidate retrieval: similar items, query matches, favourite categories, popular fallback."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.catalog import CatalogIndex
from app.records import Event, EventType
from app.state import UserState
from app.text import tokenize

# How many recent interactions shape the "similar items" profile, newest weighted most.
PROFILE_DEPTH = 10


@dataclass(frozen=True, slots=True)
class Candidates:
    """Catalog rows proposed for one event, with the retriever that proposed each first."""

    rows: NDArray[np.int32]
    sources: tuple[str, ...]
    query_tokens: tuple[str, ...]


def user_profile(index: CatalogIndex, state: UserState) -> NDArray[np.float32] | None:
    """Recency-weighted mean vector of the user's last interactions still in the catalog."""
    rows = [
        index.row_of[i.item_id] for i in state.history[-PROFILE_DEPTH:] if i.item_id in index.row_of
    ]
    if not rows:
        return None
    weights = np.linspace(0.5, 1.0, num=len(rows), dtype=np.float32)
    profile = weights @ index.vectors[rows]
    norm = float(np.linalg.norm(profile))
    return (profile / norm).astype(np.float32) if norm > 0 else None


def _top_rows(scores: NDArray[np.float32], k: int) -> NDArray[np.int32]:
    if k >= scores.shape[0]:
        order = np.argsort(-scores, kind="stable")
    else:
        part = np.argpartition(-scores, k)[:k]
        order = part[np.argsort(-scores[part], kind="stable")]
    return order.astype(np.int32)


def query_matches(
    index: CatalogIndex, tokens: tuple[str, ...]
) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """Rows matching any query token and the fraction of tokens each matches."""
    if not tokens:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
    hits = [index.rows_for_token(t) for t in tokens]
    joined = np.concatenate(hits) if hits else np.zeros(0, dtype=np.int32)
    if joined.size == 0:
        return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
    rows, counts = np.unique(joined, return_counts=True)
    return rows.astype(np.int32), (counts / len(tokens)).astype(np.float32)


def retrieve(
    index: CatalogIndex,
    state: UserState,
    event: Event,
    *,
    limit: int,
    top_categories: tuple[str, ...],
) -> Candidates:
    """Up to ``limit`` distinct active rows, excluding purchases (and, for next-items, the item
    the event is about). Search events retrieve query matches first; both kinds then fill with
    similar items, the user's favourite categories and popular items."""
    excluded = {index.row_of[i] for i in state.purchased if i in index.row_of}
    if event.type is not EventType.SEARCH and event.item_id in index.row_of:
        excluded.add(index.row_of[event.item_id])
    chosen: dict[int, str] = {}

    def take(rows: NDArray[np.int32], source: str, quota: int) -> None:
        for row in rows.tolist():
            if len(chosen) >= limit or quota <= 0:
                return
            if row not in excluded and row not in chosen:
                chosen[row] = source
                quota -= 1

    tokens = tokenize(event.query) if event.type is EventType.SEARCH and event.query else ()
    profile = user_profile(index, state)
    if tokens:
        rows, match = query_matches(index, tokens)
        # Best-matching first, popularity breaking ties, so a broad query keeps good items.
        order = np.lexsort((-index.popularity[rows], -match)) if rows.size else rows
        take(rows[order], "query", limit)
    if profile is not None and len(index):
        similar = _top_rows(index.vectors @ profile, min(len(index), limit + len(excluded)))
        take(similar, "similar", limit // 2 if not tokens else limit // 4)
    for category in top_categories:
        take(
            index.rows_for_category(category),
            "category",
            limit // (2 * max(1, len(top_categories))),
        )
    take(index.popular_rows[: limit + len(excluded)], "popular", limit)
    rows_out = np.fromiter(chosen.keys(), dtype=np.int32, count=len(chosen))
    return Candidates(rows=rows_out, sources=tuple(chosen.values()), query_tokens=tokens)
