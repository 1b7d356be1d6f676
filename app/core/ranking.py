"""Ranking: retrieve candidates, build model inputs, score a batch with the Scorer, take top-k."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from app.core.catalog import CatalogIndex, Vectorizer, item_tokens
from app.core.exclusions import ExclusionPolicy
from app.core.features import (
    CANDIDATE_FEATURES,
    USER_FEATURES,
    genre_affinity,
    genre_match_batch,
    user_features,
)
from app.core.records import Event, EventType, Item, RankedItem, Recommendation
from app.core.retrieval import Candidates, QueryCache, Request, retrieve_batch
from app.core.scoring.base import ItemEncoder, RankInputs, Scorer
from app.core.scoring.package import ModelSpec
from app.core.state import UserState
from app.core.text import term_ids, tokenize
from app.core.transitions import Signal, Transitions, blend

# The model_version of degraded recommendations: no model ranked them.
FALLBACK_VERSION = "cheap-path"


@functools.cache
def position_scores(n: int) -> tuple[float, ...]:
    """The cheap path's scores for a list of ``n``: 1 falling to 1/n by position.

    >>> position_scores(4)
    (1.0, 0.75, 0.5, 0.25)
    """
    return tuple(round((n - j) / n, 6) for j in range(n))


# Per event, what the processor worked out at that record: the co-occurring item ids
# (strongest first) and the ids not to show (None: work them out from the state).
Hints = tuple[Sequence[str], frozenset[str] | None]
# Interaction types as the model numbers them (0 pads).
TYPE_IDS = {"view": 1, "click": 2, "add_to_cart": 3, "purchase": 4}


@dataclass(frozen=True, slots=True)
class RankingParams:
    top_k: int = 10
    candidates: int = 200
    affinity_half_life_s: float = 6 * 3600.0
    top_categories: int = 3
    exclusion: ExclusionPolicy = ExclusionPolicy.SEEN


def model_vectorizer(encoder: ItemEncoder, spec: ModelSpec) -> Vectorizer:
    """Item vectors from the model's item encoder: known ids use their learned embedding, new
    items (index 0) get a vector from their title, category and tags alone."""

    def vectors(items: Sequence[Item]) -> NDArray[np.float32]:
        index = np.array([spec.item_index.get(i.item_id, 0) for i in items], dtype=np.int64)
        terms = np.zeros((len(items), spec.max_item_terms), dtype=np.int64)
        for row, item in enumerate(items):
            ids = term_ids(item_tokens(item), spec.n_buckets, spec.max_item_terms)
            terms[row, : len(ids)] = ids
        return encoder.encode(index, terms)

    return vectors


class _Buffers:
    """Model inputs reused across batches: flat arrays whose prefixes are reshaped per call, so
    a batch of any size and width is C-contiguous without allocating (ONNX Runtime wants
    contiguous inputs). Grown, never shrunk, when a batch is larger than any before."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self.batch = 0
        self.width = 0
        self._flat: dict[str, NDArray[np.float32] | NDArray[np.int64]] = {}

    def view(self, batch: int, width: int) -> RankInputs:
        spec = self.spec
        if batch > self.batch or width > self.width:
            self.batch, self.width = max(batch, self.batch), max(width, self.width)
            full = RankInputs.zeros(spec, self.batch, self.width)
            self._flat = {name: array.reshape(-1) for name, array in full.feed().items()}
        shapes: dict[str, tuple[int, ...]] = {
            "history_vectors": (batch, spec.max_len, spec.dim),
            "history_mask": (batch, spec.max_len),
            "history_types": (batch, spec.max_len),
            "query_terms": (batch, spec.max_query_terms),
            "user_features": (batch, len(USER_FEATURES)),
            "candidate_vectors": (batch, width, spec.dim),
            "candidate_features": (batch, width, len(CANDIDATE_FEATURES)),
        }
        views: dict[str, Any] = {}
        for name, shape in shapes.items():
            part = self._flat[name][: math.prod(shape)]
            part.fill(0)
            views[name] = part.reshape(shape)
        return RankInputs(**views)


_NO_ROWS: NDArray[np.int32] = np.zeros(0, dtype=np.int32)


class Ranker:
    """Ranks batches of (state after the event, event): retrieval with one similarity search
    per batch, features, one model call, top-k. Holds the query cache and reusable buffers."""

    def __init__(
        self,
        scorer: Scorer,
        spec: ModelSpec,
        params: RankingParams,
        *,
        query_cache_size: int = 4096,
    ) -> None:
        self.scorer = scorer
        self.spec = spec
        self.params = params
        self._buffers = _Buffers(spec)
        self._seen = np.zeros(0, dtype=np.bool_)
        # Catalog row -> model index and back, for the transition table, per catalog index.
        self._mapped: tuple[CatalogIndex, NDArray[np.int64], NDArray[np.int32]] | None = None
        # Searches repeat (popular queries): tokenize and hash each distinct text once.
        self.query = functools.lru_cache(maxsize=query_cache_size)(self._parse_query)
        # And match each distinct query against the catalog once per catalog index.
        self.matches = QueryCache()

    def _scratch(self, index: CatalogIndex) -> NDArray[np.bool_]:
        # Reused by every batch (one thread ranks); reallocated only when the catalog grows.
        if self._seen.shape[0] < len(index):
            self._seen = np.zeros(len(index), dtype=np.bool_)
        return self._seen

    def _model_map(
        self, index: CatalogIndex, table: Transitions
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """Each catalog row's model index (0: unknown to the model) and each model index's row
        (-1: not in the catalog); worked out once per catalog index."""
        mapped = self._mapped
        if mapped is not None and mapped[0] is index:
            return mapped[1], mapped[2]
        known = self.spec.item_index
        to_model = np.fromiter((known.get(i, 0) for i in index.ids), np.int64, len(index))
        to_model[to_model > table.n_items] = 0
        to_row = np.full(table.n_items + 1, -1, dtype=np.int32)
        rows = np.flatnonzero(to_model)
        to_row[to_model[rows]] = rows
        self._mapped = (index, to_model, to_row)
        return to_model, to_row

    def _transitions(
        self, index: CatalogIndex, requests: list[Request], table: Transitions
    ) -> tuple[list[Request], Signal, NDArray[np.int64]]:
        """The batch's transition signal (from each user's recent items, newest first, as model
        indices) and the requests with the strongest successors as candidates."""
        to_model, to_row = self._model_map(index, table)
        known = self.spec.item_index
        depth = table.params.recent
        recent = [
            [known.get(i.item_id, 0) for i in reversed(r.state.history[-depth:])] for r in requests
        ]
        signal = table.gather(recent)
        # The strongest successors, enough to fill the quota past the exclusions.
        tops = signal.tops(self.params.candidates)
        with_rows = []
        for request, top in zip(requests, tops, strict=True):
            rows = to_row[top]
            with_rows.append(replace(request, transitions=rows[rows >= 0]))
        return with_rows, signal, to_model

    def _parse_query(self, text: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
        tokens = tokenize(text)
        spec = self.spec
        return tokens, tuple(term_ids(tokens, spec.n_buckets, spec.max_query_terms))

    def _request(
        self,
        index: CatalogIndex,
        state: UserState,
        event: Event,
        hints: Hints = ((), None),
        *,
        model: bool = True,
    ) -> Request:
        # The strongest categories: decay scales them all alike, so the stored values order them.
        stored = state.category_affinity
        top = tuple(
            c
            for c, _ in sorted(stored, key=lambda cv: (-cv[1], cv[0]))[: self.params.top_categories]
        )
        tokens: tuple[str, ...] = ()
        if event.type is EventType.SEARCH and event.query:
            tokens = self.query(event.query)[0]
        row_of = index.row_of
        related, excluded = hints
        rows = [row_of[i] for i in related if i in row_of]
        return Request(
            state,
            event,
            tokens,
            top,
            # Only the model reads the genre affinities.
            genre_affinity(state, event.event_time_ms, self.params.affinity_half_life_s)
            if model
            else {},
            np.array(rows, dtype=np.int32) if rows else _NO_ROWS,
            excluded,
        )

    def inputs(
        self, index: CatalogIndex, requests: Sequence[Request], candidates: Sequence[Candidates]
    ) -> RankInputs:
        """The model's inputs for a batch; candidate lists of different lengths are padded."""
        spec = self.spec
        width = max(1, max(c.rows.shape[0] for c in candidates))
        inputs = self._buffers.view(len(requests), width)
        history = np.full((len(requests), spec.max_len), -1, dtype=np.int64)
        cand_rows = np.zeros((len(requests), width), dtype=np.int64)
        row_of = index.row_of
        for b, (request, cands) in enumerate(zip(requests, candidates, strict=True)):
            state, event = request.state, request.event
            recent = state.history[-spec.max_len :]
            offset = spec.max_len - len(recent)
            for j, interaction in enumerate(recent):
                row = row_of.get(interaction.item_id)
                if row is not None:  # an item no longer in the catalog leaves its slot masked
                    history[b, offset + j] = row
                    inputs.history_types[b, offset + j] = TYPE_IDS.get(interaction.type, 2)
            if request.tokens and event.query:
                ids = self.query(event.query)[1]
                inputs.query_terms[b, : len(ids)] = ids
            inputs.user_features[b] = user_features(
                is_search=event.type is EventType.SEARCH,
                interactions=state.interactions,
                max_len=spec.max_len,
            )
            n = cands.rows.shape[0]
            cand_rows[b, :n] = cands.rows
            features = inputs.candidate_features[b]
            features[:n, 0] = index.popularity[cands.rows]
            features[:n, 2] = cands.query_match
        # The genre match of every candidate of the batch at once (app.core.features).
        matches = genre_match_batch(
            index, [c.rows for c in candidates], [r.category_affinity for r in requests]
        )
        at = 0
        for b, cands in enumerate(candidates):
            n = cands.rows.shape[0]
            inputs.candidate_features[b, :n, 1] = matches[at : at + n]
            at += n
        if len(index):
            present = history >= 0
            np.take(
                index.vectors, np.where(present, history, 0), axis=0, out=inputs.history_vectors
            )
            inputs.history_vectors[~present] = 0.0
            inputs.history_mask[present] = 1.0
            # Padded candidate slots hold row 0's vector; their scores are never read.
            np.take(index.vectors, cand_rows, axis=0, out=inputs.candidate_vectors)
        return inputs

    def _requests(
        self,
        index: CatalogIndex,
        batch: Sequence[tuple[UserState, Event]],
        hints: Sequence[Hints] | None,
        *,
        model: bool = True,
    ) -> list[Request]:
        if hints is None:
            return [self._request(index, state, event, model=model) for state, event in batch]
        return [
            self._request(index, state, event, hint, model=model)
            for (state, event), hint in zip(batch, hints, strict=True)
        ]

    def rank(
        self,
        index: CatalogIndex,
        batch: Sequence[tuple[UserState, Event]],
        hints: Sequence[Hints] | None = None,
    ) -> list[Recommendation]:
        """One recommendation per (state after the event, event), all scored in one model call.

        ``hints``: per event, the item ids that co-occur with the user's recent items, strongest
        first (candidates of their own), and the ids not to show when already worked out."""
        if not batch:
            return []
        requests = self._requests(index, batch, hints)
        table = self.spec.transitions
        signal: Signal | None = None
        if table is not None and len(index):
            requests, signal, to_model = self._transitions(index, requests, table)
        candidates = retrieve_batch(
            index,
            requests,
            limit=self.params.candidates,
            scratch=self._scratch(index),
            policy=self.params.exclusion,
            queries=self.matches,
        )
        scores = self.scorer.score(self.inputs(index, requests, candidates))
        if signal is not None and table is not None:
            # The hybrid score (app.core.transitions.blend), as the offline evaluation computes it.
            items = np.zeros(scores.shape, dtype=np.int64)
            for b, c in enumerate(candidates):
                items[b, : c.rows.shape[0]] = to_model[c.rows]
            scores = blend(scores, signal.at(items), table.params.alpha)
        orders = self._orders(requests, candidates, scores)
        return [
            self._recommendation(
                index, r, c, scores[i, : c.rows.shape[0]], self.scorer.model_version, orders[i]
            )
            for i, (r, c) in enumerate(zip(requests, candidates, strict=True))
        ]

    def _orders(
        self,
        requests: Sequence[Request],
        candidates: Sequence[Candidates],
        scores: NDArray[np.float32],
    ) -> list[NDArray[np.intp] | None]:
        """Each next-item request's top-k candidate positions, best first (ties: candidate
        order), from one sort of the whole batch; None for searches (ordered on their own)."""
        widths = np.array([c.rows.shape[0] for c in candidates], dtype=np.int64)
        plain = np.array([r.event.type is not EventType.SEARCH for r in requests])
        if not plain.any() or scores.shape[1] == 0:
            return [None] * len(requests)
        keys = -scores.astype(np.float32, copy=True)
        keys[np.arange(scores.shape[1])[None, :] >= widths[:, None]] = np.inf  # padding last
        top = np.argsort(keys, axis=1, kind="stable")[:, : self.params.top_k]
        return [
            top[i, : min(self.params.top_k, int(widths[i]))] if plain[i] else None
            for i in range(len(requests))
        ]

    def rank_cheap(
        self,
        index: CatalogIndex,
        batch: Sequence[tuple[UserState, Event]],
        hints: Sequence[Hints] | None = None,
    ) -> list[Recommendation]:
        """The overload path: no similarity search, no model, still personal. Query matches
        (searches), then what co-occurs with the user's recent items (``hints``), then
        popular items in their favourite categories, then popular items, in that order (the
        score falls with the position). The same exclusions as the model path. Marked
        ``degraded``."""
        requests = self._requests(index, batch, hints, model=False)
        candidates = retrieve_batch(
            index,
            requests,
            limit=self.params.top_k,
            similar=False,
            scratch=self._scratch(index),
            policy=self.params.exclusion,
            related_share=1.0,
            queries=self.matches,
        )
        return [self._cheap(index, r, c) for r, c in zip(requests, candidates, strict=True)]

    def _cheap(self, index: CatalogIndex, request: Request, cands: Candidates) -> Recommendation:
        """The cheap path's list: the candidates in retrieval order (query matches already come
        first), scored 1 falling to 1/n by position; no numpy for a page of ten."""
        rows = cands.rows[: self.params.top_k].tolist()
        n, ids, sources = len(rows), index.ids, cands.sources
        event = request.event
        return Recommendation(
            event_id=event.event_id,
            user_id=event.user_id,
            kind="search" if event.type is EventType.SEARCH else "next_items",
            items=tuple(
                [
                    RankedItem(ids[row], score, source)
                    for row, score, source in zip(rows, position_scores(n), sources, strict=False)
                ]
            ),
            model_version=FALLBACK_VERSION,
            event_time=event.event_time,
            event_time_ms=event.event_time_ms,
            query=event.query,
            degraded=True,
        )

    def _recommendation(
        self,
        index: CatalogIndex,
        request: Request,
        cands: Candidates,
        row_scores: NDArray[np.float32],
        model_version: str,
        order: NDArray[np.intp] | None = None,
    ) -> Recommendation:
        """``order``: the top-k positions when the caller sorted them for the batch."""
        n = cands.rows.shape[0]
        top_k = min(self.params.top_k, n)
        event = request.event
        if order is not None:
            pass
        elif event.type is EventType.SEARCH:
            # Search results are for the query: items that match it come first, in the model's
            # order; others only fill the page when too few match.
            order = np.lexsort((-row_scores, ~(cands.query_match > 0)))[:top_k]
        else:
            # Stable order on ties: score desc, then candidate order (retrieval priority).
            order = np.argsort(-row_scores, kind="stable")[:top_k]
        ids = index.ids
        rows = cands.rows[order].tolist()
        scores = np.round(row_scores[order].astype(np.float64), 6).tolist()
        sources = cands.sources
        items = tuple(
            RankedItem(item_id=ids[row], score=score, source=sources[j])
            for row, score, j in zip(rows, scores, order.tolist(), strict=True)
        )
        return Recommendation(
            event_id=event.event_id,
            user_id=event.user_id,
            kind="search" if event.type is EventType.SEARCH else "next_items",
            items=items,
            model_version=model_version,
            event_time=event.event_time,
            event_time_ms=event.event_time_ms,
            query=event.query,
        )


def rank(
    index: CatalogIndex,
    scorer: Scorer,
    spec: ModelSpec,
    requests: Sequence[tuple[UserState, Event]],
    params: RankingParams,
) -> list[Recommendation]:
    """:meth:`Ranker.rank` without a long-lived ranker (tests, tools)."""
    return Ranker(scorer, spec, params).rank(index, requests)
