"""Candidate retrieval for a batch of events: query matches, similar items, favourite categories,
popular fallback. The similarity search runs once for the whole batch."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from app.core import exclusions
from app.core.catalog import CatalogIndex
from app.core.exclusions import ExclusionPolicy
from app.core.item_neighbours import ItemNeighbours, similar_rows
from app.core.records import Event, EventType
from app.core.state import UserState
from app.core.text import tokenize

# How many recent interactions shape the "similar items" profile, newest weighted most.
PROFILE_DEPTH = 10
_WEIGHTS = {n: np.linspace(0.5, 1.0, num=n, dtype=np.float32) for n in range(1, PROFILE_DEPTH + 1)}
_NO_ROWS: NDArray[np.int32] = np.zeros(0, dtype=np.int32)
_NO_MATCH: NDArray[np.float32] = np.zeros(0, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class Request:
    """One event to retrieve for: the user's state after it, the query's tokens (searches),
    the user's favourite categories (strongest first), their genre affinities scaled to [0, 1]
    (app.core.features.genre_affinity), and
    co-occurrence neighbours of their recent items."""

    state: UserState
    event: Event
    tokens: tuple[str, ...]
    top_categories: tuple[str, ...]
    category_affinity: dict[str, float]
    # Rows of items that followed the user's recent items in other users' sequences
    # (app.core.cooccurrence), strongest first, none of them excluded.
    related: NDArray[np.int32] = field(default_factory=lambda: _NO_ROWS)
    # The item ids not to show (app.core.exclusions), when the caller has them already; None: work
    # them out from the state.
    excluded: frozenset[str] | None = None
    # Rows of the model package's transition successors of the recent items
    # (app.core.transitions), strongest first; proposed as "related" before ``related``.
    transitions: NDArray[np.int32] = field(default_factory=lambda: _NO_ROWS)


@dataclass(frozen=True, slots=True)
class Candidates:
    """Catalog rows proposed for one event, the retriever that proposed each first, and the
    fraction of the query's tokens each row's text contains (0 outside searches)."""

    rows: NDArray[np.int32]
    sources: tuple[str, ...]
    query_match: NDArray[np.float32]


def history_rows(index: CatalogIndex, state: UserState, depth: int) -> list[int]:
    """Catalog rows of the user's last ``depth`` interactions still in the catalog, oldest first."""
    row_of = index.row_of
    return [row_of[i.item_id] for i in state.history[-depth:] if i.item_id in row_of]


def user_profile(index: CatalogIndex, state: UserState) -> NDArray[np.float32] | None:
    """Recency-weighted mean vector of the user's last interactions still in the catalog."""
    rows = history_rows(index, state, PROFILE_DEPTH)
    if not rows:
        return None
    profile = _WEIGHTS[len(rows)] @ index.vectors[rows]
    norm = float(np.linalg.norm(profile))
    return (profile / norm).astype(np.float32) if norm > 0 else None


def query_matches(
    index: CatalogIndex, tokens: tuple[str, ...]
) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    """Rows matching any query token (ascending) and the fraction of tokens each matches.

    Each token contributes at most its posting list (the most popular items having it)."""
    if not tokens:
        return _NO_ROWS, _NO_MATCH
    hits = [index.rows_for_token(t) for t in tokens]
    joined = np.concatenate(hits)
    if joined.size == 0:
        return _NO_ROWS, _NO_MATCH
    rows, counts = np.unique(joined, return_counts=True)
    return rows.astype(np.int32), (counts / len(tokens)).astype(np.float32)


@dataclass(frozen=True, slots=True)
class QueryMatch:
    """What a query's tokens match in one catalog index: the rows (ascending) with the fraction
    of tokens each has, and the same rows best-matching first, popularity breaking ties (the
    order the "query" source proposes them in). Read-only: a cache shares it."""

    rows: NDArray[np.int32]
    match: NDArray[np.float32]
    ranked: NDArray[np.int32]


_NO_QUERY = QueryMatch(_NO_ROWS, _NO_MATCH, _NO_ROWS)


def query_match(index: CatalogIndex, tokens: tuple[str, ...]) -> QueryMatch:
    """:func:`query_matches` and their ranked order."""
    rows, match = query_matches(index, tokens)
    if rows.size == 0:
        return _NO_QUERY
    ranked = rows[np.lexsort((-index.popularity[rows], -match))]
    for array in (rows, match, ranked):
        array.flags.writeable = False
    return QueryMatch(rows, match, ranked)


class QueryCache:
    """The most recently used queries' :class:`QueryMatch` against one catalog index.

    Searches repeat (popular queries, pagination, refinements), and a query's matches cost a
    merge of its tokens' posting lists and a sort (up to ``posting_limit`` rows per token):
    most of a search's retrieval. They depend on the index alone, so a new index (a catalog
    publish, a model's item vectors) empties the cache. Bounded by queries and by rows held.
    One thread at a time (each ranker's)."""

    __slots__ = ("_entries", "_index", "_max_queries", "_max_rows", "_rows", "hits", "misses")

    def __init__(self, max_queries: int = 1024, max_rows: int = 1_000_000) -> None:
        self._max_queries = max_queries
        self._max_rows = max_rows
        self._index: CatalogIndex | None = None
        self._entries: OrderedDict[tuple[str, ...], QueryMatch] = OrderedDict()
        self._rows = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, index: CatalogIndex, tokens: tuple[str, ...]) -> QueryMatch:
        if not tokens:
            return _NO_QUERY
        if index is not self._index:
            self._index, self._rows = index, 0
            self._entries.clear()
        entries = self._entries
        found = entries.get(tokens)
        if found is not None:
            self.hits += 1
            entries.move_to_end(tokens)
            return found
        self.misses += 1
        found = query_match(index, tokens)
        if found.rows.size > self._max_rows:
            return found
        entries[tokens] = found
        self._rows += found.rows.size
        while len(entries) > self._max_queries or self._rows > self._max_rows:
            _, dropped = entries.popitem(last=False)
            self._rows -= dropped.rows.size
        return found


def query_tokens(event: Event) -> tuple[str, ...]:
    return tokenize(event.query) if event.type is EventType.SEARCH and event.query else ()


def _match_of(
    rows: NDArray[np.int32], match_rows: NDArray[np.int32], match: NDArray[np.float32]
) -> NDArray[np.float32]:
    if match_rows.size == 0 or rows.size == 0:
        return np.zeros(rows.shape[0], dtype=np.float32)
    pos = np.minimum(np.searchsorted(match_rows, rows), match_rows.size - 1)
    return np.where(match_rows[pos] == rows, match[pos], 0.0).astype(np.float32)


def excluded_ids(state: UserState, event: Event, policy: ExclusionPolicy) -> frozenset[str]:
    """The item ids the user must not be shown after ``event`` (app.core.exclusions)."""
    return frozenset(
        exclusions.excluded(
            itertools.chain(state.seen, (i.item_id for i in state.history)),
            state.purchased,
            event.item_id,
            search=event.type is EventType.SEARCH,
            policy=policy,
        )
    )


def excluded_row_set(index: CatalogIndex, request: Request, policy: ExclusionPolicy) -> set[int]:
    """Catalog rows the request's user must not be shown (``request.excluded`` when given)."""
    ids = request.excluded
    if ids is None:
        ids = excluded_ids(request.state, request.event, policy)
    row_of = index.row_of
    return {row_of[i] for i in ids if i in row_of}


def excluded_rows(
    index: CatalogIndex, request: Request, policy: ExclusionPolicy
) -> NDArray[np.int32]:
    """:func:`excluded_row_set`, sorted, as an array."""
    return np.array(sorted(excluded_row_set(index, request, policy)), dtype=np.int32)


def _assemble(
    index: CatalogIndex,
    request: Request,
    excluded: NDArray[np.int32],
    similar: NDArray[np.int32] | None,
    limit: int,
    seen: NDArray[np.bool_],
    related_quota: int,
    queries: QueryCache,
) -> Candidates:
    """Fill up to ``limit`` rows source by source, each up to its quota of rows not yet taken.

    ``seen`` is a scratch mask over the catalog's rows, all False on entry and on return: it
    makes "not excluded, not taken yet" one vectorized lookup per source."""
    parts: list[NDArray[np.int32]] = []
    labels: list[tuple[str, int]] = []
    total = 0

    def take(rows: NDArray[np.int32], source: str, quota: int) -> None:
        nonlocal total
        quota = min(quota, limit - total)
        if quota <= 0 or rows.size == 0:
            return
        # Only a bounded prefix can matter: the quota plus the rows that may be skipped.
        head = rows[: quota + excluded.size + total]
        head = head[head >= 0]  # similarity search pads with -1
        fresh = head[~seen[head]][:quota]
        if fresh.size:
            seen[fresh] = True
            parts.append(fresh)
            labels.append((source, int(fresh.size)))
            total += int(fresh.size)

    tokens = request.tokens
    query = queries.get(index, tokens)
    seen[excluded] = True
    try:
        # Best-matching first, popularity breaking ties, so a broad query keeps good items.
        take(query.ranked, "query", limit)
        take(request.transitions, "related", related_quota)
        take(request.related, "related", related_quota)
        if similar is not None:
            take(similar, "similar", limit // 2 if not tokens else limit // 4)
        top = request.top_categories
        for category in top:
            take(index.rows_for_category(category), "category", limit // (2 * max(1, len(top))))
        take(index.popular_rows, "popular", limit)
    finally:
        for part in parts:
            seen[part] = False
        seen[excluded] = False
    rows = np.concatenate(parts) if parts else _NO_ROWS
    sources = tuple(itertools.chain.from_iterable(itertools.repeat(s, n) for s, n in labels))
    return Candidates(
        rows=rows, sources=sources, query_match=_match_of(rows, query.rows, query.match)
    )


def _assemble_small(
    index: CatalogIndex,
    request: Request,
    skip: set[int],
    limit: int,
    related_quota: int,
    queries: QueryCache,
) -> Candidates:
    """:func:`_assemble` without a similarity search, in plain Python: for the cheap path's
    page-sized lists, where a handful of set lookups costs less than numpy's per-call overhead.
    Same sources, order and quotas (tests/unit/test_exclusions.py compares the two). ``skip``:
    the excluded rows; rows taken are added to it."""
    taken: list[int] = []
    labels: list[tuple[str, int]] = []

    def take(rows: NDArray[np.int32], source: str, quota: int) -> None:
        quota = min(quota, limit - len(taken))
        if quota <= 0 or rows.size == 0:
            return
        got = 0
        for row in rows[: quota + len(skip)].tolist():
            if row >= 0 and row not in skip:
                skip.add(row)
                taken.append(row)
                got += 1
                if got == quota:
                    break
        if got:
            labels.append((source, got))

    query = queries.get(index, request.tokens)
    take(query.ranked, "query", limit)
    take(request.transitions, "related", related_quota)
    take(request.related, "related", related_quota)
    top = request.top_categories
    for category in top:
        take(index.rows_for_category(category), "category", limit // (2 * max(1, len(top))))
    take(index.popular_rows, "popular", limit)
    rows = np.array(taken, dtype=np.int32) if taken else _NO_ROWS
    sources = tuple(itertools.chain.from_iterable(itertools.repeat(s, n) for s, n in labels))
    return Candidates(
        rows=rows, sources=sources, query_match=_match_of(rows, query.rows, query.match)
    )


# Lists up to this long without a similarity search are assembled in plain Python.
SMALL_LIMIT = 64


def retrieve_batch(
    index: CatalogIndex,
    requests: Sequence[Request],
    *,
    limit: int,
    similar: bool = True,
    scratch: NDArray[np.bool_] | None = None,
    policy: ExclusionPolicy = ExclusionPolicy.SEEN,
    related_share: float = 0.25,
    queries: QueryCache | None = None,
) -> list[Candidates]:
    """Up to ``limit`` distinct active rows per request, none of them excluded by ``policy``
    (app.core.exclusions: by default no seen item after a next-item event, no purchase). Searches
    take query matches first; all then fill
    with co-occurrence neighbours of the recent items (up to ``related_share`` of ``limit``),
    similar items (one nearest-neighbour search for the batch, skipped when ``similar`` is
    false), the user's favourite categories and popular items.

    ``scratch``: an all-False bool array of at least ``len(index)`` rows to reuse (it is left
    all False); without it one is allocated. ``queries``: the caller's cache of query matches
    (:class:`QueryCache`); without it one for this call."""
    quota = max(1, int(limit * related_share))
    if queries is None:
        queries = QueryCache()
    if not similar and limit <= SMALL_LIMIT:
        return [
            _assemble_small(index, r, excluded_row_set(index, r, policy), limit, quota, queries)
            for r in requests
        ]
    seen = scratch if scratch is not None else np.zeros(len(index), dtype=np.bool_)
    if seen.shape[0] < len(index):
        raise ValueError(f"scratch has {seen.shape[0]} rows, the index {len(index)}")
    excluded = [excluded_rows(index, r, policy) for r in requests]
    nearest: list[NDArray[np.int32] | None] = [None] * len(requests)
    if similar and len(index) and index.item_lists is not None:
        nearest = similar_from_lists(index, index.item_lists, requests)
    elif similar and len(index):
        profiles = [user_profile(index, r.state) for r in requests]
        wanted = [i for i, p in enumerate(profiles) if p is not None]
        if wanted:
            k = min(len(index), limit + max(excluded[i].size for i in wanted))
            stacked = np.stack([profiles[i] for i in wanted])  # type: ignore[misc]
            found, _scores = index.neighbours.search(stacked, k)
            for j, i in enumerate(wanted):
                nearest[i] = found[j]
    return [
        _assemble(index, r, excluded[i], nearest[i], limit, seen, quota, queries)
        for i, r in enumerate(requests)
    ]


def similar_from_lists(
    index: CatalogIndex, lists: ItemNeighbours, requests: Sequence[Request]
) -> list[NDArray[np.int32] | None]:
    """Per request, the rows most like its recent items (app.core.item_neighbours), from one
    lookup of the batch's recent rows' neighbour lists; None without recent items."""
    recent = [history_rows(index, r.state, PROFILE_DEPTH) for r in requests]
    flat = np.fromiter(itertools.chain.from_iterable(recent), dtype=np.int32)
    if flat.size == 0:
        return [None] * len(requests)
    found = lists.lists(flat)
    out: list[NDArray[np.int32] | None] = []
    at = 0
    for rows in recent:
        n = len(rows)
        if not n:
            out.append(None)
            continue
        out.append(
            similar_rows(lists, index.vectors, flat[at : at + n], _WEIGHTS[n], found[at : at + n])
        )
        at += n
    return out


def retrieve(
    index: CatalogIndex,
    state: UserState,
    event: Event,
    *,
    limit: int,
    top_categories: tuple[str, ...],
) -> Candidates:
    """:func:`retrieve_batch` for one event."""
    request = Request(state, event, query_tokens(event), top_categories, {})
    return retrieve_batch(index, [request], limit=limit)[0]
