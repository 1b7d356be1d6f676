"""Model inputs: user features and per-candidate features, numpy in, numpy out.

The names and order here are the model contract; a model whose metadata lists other
features is refused at load time (see ``app.scoring.onnx``).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from app.catalog import CatalogIndex
from app.retrieval import Candidates, query_matches
from app.state import UserState

USER_FEATURES: tuple[str, ...] = ("is_search", "activity", "history_fill", "has_purchases")
CANDIDATE_FEATURES: tuple[str, ...] = (
    "similarity",
    "category_affinity",
    "tag_affinity",
    "query_match",
    "popularity",
    "seen",
)


def normalized(affinity: dict[str, float]) -> dict[str, float]:
    """Scale affinities to [0, 1] by the strongest one."""
    top = max(affinity.values(), default=0.0)
    return {k: v / top for k, v in affinity.items()} if top > 0 else {}


def user_features(state: UserState, *, is_search: bool, history_size: int) -> NDArray[np.float32]:
    return np.array(
        [
            1.0 if is_search else 0.0,
            min(1.0, math.log1p(state.total_events) / 10.0),
            len(state.history) / history_size,
            1.0 if state.purchased else 0.0,
        ],
        dtype=np.float32,
    )


def candidate_features(
    index: CatalogIndex,
    state: UserState,
    candidates: Candidates,
    *,
    category_affinity: dict[str, float],
    tag_affinity: dict[str, float],
) -> NDArray[np.float32]:
    """A (candidates, len(CANDIDATE_FEATURES)) float32 matrix; affinities already normalized."""
    rows = candidates.rows
    n = rows.shape[0]
    out = np.zeros((n, len(CANDIDATE_FEATURES)), dtype=np.float32)
    if n == 0:
        return out
    if candidates.profile is not None:
        out[:, 0] = index.vectors[rows] @ candidates.profile
    if category_affinity:
        out[:, 1] = [category_affinity.get(index.categories[r], 0.0) for r in rows.tolist()]
    if tag_affinity:
        out[:, 2] = [
            sum(tag_affinity.get(t, 0.0) for t in index.tags[r]) / max(1, len(index.tags[r]))
            for r in rows.tolist()
        ]
    if candidates.query_tokens:
        match_rows, match = query_matches(index, candidates.query_tokens)
        if match_rows.size:
            pos = np.searchsorted(match_rows, rows)
            pos = np.minimum(pos, match_rows.size - 1)
            hit = match_rows[pos] == rows
            out[:, 3] = np.where(hit, match[pos], 0.0)
    out[:, 4] = index.popularity[rows]
    seen = {index.row_of[i.item_id] for i in state.history if i.item_id in index.row_of}
    if seen:
        out[:, 5] = [1.0 if r in seen else 0.0 for r in rows.tolist()]
    return out
