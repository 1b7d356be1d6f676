"""Ranking: retrieve candidates, build features, score a batch with the ``Scorer``, take top-k."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.catalog import CatalogIndex
from app.features import (
    CANDIDATE_FEATURES,
    USER_FEATURES,
    candidate_features,
    normalized,
    user_features,
)
from app.records import Event, EventType, RankedItem, Recommendation
from app.retrieval import Candidates, retrieve
from app.scoring.base import Scorer
from app.state import UserState


@dataclass(frozen=True, slots=True)
class RankingParams:
    top_k: int = 10
    candidates: int = 200
    history_size: int = 50
    affinity_half_life_s: float = 6 * 3600.0
    top_categories: int = 3


@dataclass(frozen=True, slots=True)
class _Prepared:
    event: Event
    candidates: Candidates
    user: np.ndarray
    features: np.ndarray


def _prepare(
    index: CatalogIndex, state: UserState, event: Event, params: RankingParams
) -> _Prepared:
    categories, tags = state.affinities_at(event.event_time_ms, params.affinity_half_life_s)
    top_categories = tuple(
        sorted(categories, key=lambda c: (-categories[c], c))[: params.top_categories]
    )
    candidates = retrieve(
        index, state, event, limit=params.candidates, top_categories=top_categories
    )
    feats = candidate_features(
        index,
        state,
        candidates,
        category_affinity=normalized(categories),
        tag_affinity=normalized(tags),
    )
    user = user_features(
        state, is_search=event.type is EventType.SEARCH, history_size=params.history_size
    )
    return _Prepared(event, candidates, user, feats)


def rank(
    index: CatalogIndex,
    scorer: Scorer,
    requests: Sequence[tuple[UserState, Event]],
    params: RankingParams,
) -> list[Recommendation]:
    """One recommendation per (state after the event, event), scored in one model call.

    Candidate lists of different lengths are padded; padded slots never reach the output.
    """
    if not requests:
        return []
    prepared = [_prepare(index, state, event, params) for state, event in requests]
    width = max(1, max(p.candidates.rows.shape[0] for p in prepared))
    users = np.stack([p.user for p in prepared]).astype(np.float32, copy=False)
    batch = np.zeros((len(prepared), width, len(CANDIDATE_FEATURES)), dtype=np.float32)
    for i, p in enumerate(prepared):
        batch[i, : p.features.shape[0]] = p.features
    assert users.shape[1] == len(USER_FEATURES)  # noqa: S101 - internal invariant
    scores = scorer.score(users, batch)
    out = []
    for i, p in enumerate(prepared):
        n = p.candidates.rows.shape[0]
        row_scores = scores[i, :n]
        k = min(params.top_k, n)
        # Stable order on ties: score desc, then candidate order (retrieval priority).
        order = np.argsort(-row_scores, kind="stable")[:k]
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
