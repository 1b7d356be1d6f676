"""Model inputs computed from state and catalog: user features and per-candidate features.

The names and order are part of the model contract (README.md); training computes the same
definitions (app.training.train) so that what the model learned is what it is served.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from app.catalog import CatalogIndex
from app.retrieval import Candidates, query_matches

USER_FEATURES: tuple[str, ...] = ("is_search", "activity", "history_fill")
CANDIDATE_FEATURES: tuple[str, ...] = ("popularity", "category_affinity", "query_match")


def normalized(affinity: dict[str, float]) -> dict[str, float]:
    """Scale affinities to [0, 1] by the strongest one.

    >>> normalized({"jazz": 4.0, "rock": 1.0})
    {'jazz': 1.0, 'rock': 0.25}
    """
    top = max(affinity.values(), default=0.0)
    return {k: v / top for k, v in affinity.items()} if top > 0 else {}


def user_features(*, is_search: bool, interactions: int, max_len: int) -> list[float]:
    """``is_search``; ``activity``: log1p(item interactions so far) / 10, capped at 1;
    ``history_fill``: the share of the model's history window in use."""
    return [
        1.0 if is_search else 0.0,
        min(1.0, math.log1p(interactions) / 10.0),
        min(interactions, max_len) / max_len,
    ]


def candidate_features(
    index: CatalogIndex, candidates: Candidates, *, category_affinity: dict[str, float]
) -> NDArray[np.float32]:
    """(candidates, 3): catalog popularity, the user's normalized affinity for the item's
    category, and the fraction of the query's tokens the item's text contains."""
    rows = candidates.rows
    out = np.zeros((rows.shape[0], len(CANDIDATE_FEATURES)), dtype=np.float32)
    if rows.shape[0] == 0:
        return out
    out[:, 0] = index.popularity[rows]
    if category_affinity:
        out[:, 1] = [category_affinity.get(index.categories[r], 0.0) for r in rows.tolist()]
    if candidates.query_tokens:
        match_rows, match = query_matches(index, candidates.query_tokens)
        if match_rows.size:
            pos = np.minimum(np.searchsorted(match_rows, rows), match_rows.size - 1)
            out[:, 2] = np.where(match_rows[pos] == rows, match[pos], 0.0)
    return out
