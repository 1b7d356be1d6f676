"""Model inputs computed from state and catalog: user features and per-candidate features.

The names and order are part of the model contract (README.md); training computes the same
definitions (app.training.train) so that what the model learned is what it is served.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from app.catalog import CatalogIndex
from app.retrieval import Candidates

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
        # The user has a few categories (bounded by max_affinities): look the candidates' codes
        # up in that short sorted list rather than building a table over all categories.
        codes = index.category_code
        known = sorted((codes[c], a) for c, a in category_affinity.items() if c in codes)
        if known:
            user_codes = np.array([c for c, _ in known], dtype=np.int32)
            values = np.array([a for _, a in known], dtype=np.float32)
            cand_codes = index.category_codes[rows]
            pos = np.minimum(np.searchsorted(user_codes, cand_codes), user_codes.size - 1)
            out[:, 1] = np.where(user_codes[pos] == cand_codes, values[pos], 0.0)
    out[:, 2] = candidates.query_match
    return out
