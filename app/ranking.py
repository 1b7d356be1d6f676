"""Ranking: retrieve candidates, build model inputs, score a batch with the Scorer, take top-k."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.catalog import CatalogIndex, Vectorizer, item_tokens
from app.features import CANDIDATE_FEATURES, candidate_features, normalized, user_features
from app.records import Event, EventType, Item, RankedItem, Recommendation
from app.retrieval import Candidates, retrieve
from app.scoring.base import ItemEncoder, RankInputs, Scorer
from app.scoring.package import ModelSpec
from app.state import UserState
from app.text import term_ids, tokenize

QUERY_MATCH = CANDIDATE_FEATURES.index("query_match")
# Interaction types as the model numbers them (0 pads).
TYPE_IDS = {"view": 1, "click": 2, "add_to_cart": 3, "purchase": 4}


@dataclass(frozen=True, slots=True)
class RankingParams:
    top_k: int = 10
    candidates: int = 200
    affinity_half_life_s: float = 6 * 3600.0
    top_categories: int = 3


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


@dataclass(frozen=True, slots=True)
class _Prepared:
    event: Event
    candidates: Candidates
    features: NDArray[np.float32]


def _prepare(
    index: CatalogIndex, state: UserState, event: Event, params: RankingParams
) -> _Prepared:
    categories, _tags = state.affinities_at(event.event_time_ms, params.affinity_half_life_s)
    top_categories = tuple(
        sorted(categories, key=lambda c: (-categories[c], c))[: params.top_categories]
    )
    candidates = retrieve(
        index, state, event, limit=params.candidates, top_categories=top_categories
    )
    feats = candidate_features(index, candidates, category_affinity=normalized(categories))
    return _Prepared(event, candidates, feats)


def model_inputs(
    index: CatalogIndex,
    spec: ModelSpec,
    requests: Sequence[tuple[UserState, Event]],
    prepared: Sequence[_Prepared],
) -> RankInputs:
    """Stack a batch; candidate lists of different lengths are zero-padded."""
    batch = len(requests)
    width = max(1, max(p.candidates.rows.shape[0] for p in prepared))
    inputs = RankInputs.zeros(spec, batch, width)
    for b, ((state, event), p) in enumerate(zip(requests, prepared, strict=True)):
        recent = state.history[-spec.max_len :]
        offset = spec.max_len - len(recent)
        for j, interaction in enumerate(recent):
            row = index.row_of.get(interaction.item_id)
            if row is None:  # no longer in the catalog: leave the slot masked
                continue
            inputs.history_vectors[b, offset + j] = index.vectors[row]
            inputs.history_mask[b, offset + j] = 1.0
            inputs.history_types[b, offset + j] = TYPE_IDS.get(interaction.type, 2)
        if event.type is EventType.SEARCH and event.query:
            ids = term_ids(tokenize(event.query), spec.n_buckets, spec.max_query_terms)
            inputs.query_terms[b, : len(ids)] = ids
        inputs.user_features[b] = user_features(
            is_search=event.type is EventType.SEARCH,
            interactions=state.interactions,
            max_len=spec.max_len,
        )
        n = p.candidates.rows.shape[0]
        inputs.candidate_vectors[b, :n] = index.vectors[p.candidates.rows]
        inputs.candidate_features[b, :n] = p.features
    assert inputs.candidate_features.shape[2] == len(CANDIDATE_FEATURES)  # noqa: S101
    return inputs


def rank(
    index: CatalogIndex,
    scorer: Scorer,
    spec: ModelSpec,
    requests: Sequence[tuple[UserState, Event]],
    params: RankingParams,
) -> list[Recommendation]:
    """One recommendation per (state after the event, event), all scored in one model call."""
    if not requests:
        return []
    prepared = [_prepare(index, state, event, params) for state, event in requests]
    scores = scorer.score(model_inputs(index, spec, requests, prepared))
    out = []
    for i, p in enumerate(prepared):
        n = p.candidates.rows.shape[0]
        row_scores = scores[i, :n]
        if p.event.type is EventType.SEARCH:
            # Search results are for the query: items that match it come first, in the model's
            # order; others only fill the page when too few match.
            matches = p.features[:, QUERY_MATCH] > 0
            order = np.lexsort((-row_scores, ~matches))[: min(params.top_k, n)]
        else:
            # Stable order on ties: score desc, then candidate order (retrieval priority).
            order = np.argsort(-row_scores, kind="stable")[: min(params.top_k, n)]
        items = tuple(
            RankedItem(
                item_id=index.ids[int(p.candidates.rows[j])],
                score=round(float(row_scores[j]), 6),
                source=p.candidates.sources[j],
            )
            for j in order.tolist()
        )
        event = p.event
        out.append(
            Recommendation(
                event_id=event.event_id,
                user_id=event.user_id,
                kind="search" if event.type is EventType.SEARCH else "next_items",
                items=items,
                model_version=scorer.model_version,
                event_time=event.event_time,
                event_time_ms=event.event_time_ms,
                query=event.query,
            )
        )
    return out
