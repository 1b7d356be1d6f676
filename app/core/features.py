"""Model inputs computed from state and catalog: user features and per-candidate features.

The names and order are part of the model contract (docs/contracts.md). Training computes its inputs
with these same functions over states built by ``app.core.state.apply_event``
(app.training.features), and tests/unit/test_feature_parity.py checks that a history fed both
ways gives equal inputs, so what the model learned is what it is served.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from app.core.catalog import CatalogIndex
from app.core.state import UserState

USER_FEATURES: tuple[str, ...] = ("is_search", "activity", "history_fill")
CANDIDATE_FEATURES: tuple[str, ...] = ("popularity", "category_affinity", "query_match")


def normalized(affinity: dict[str, float]) -> dict[str, float]:
    """Scale affinities to [0, 1] by the strongest one.

    >>> normalized({"jazz": 4.0, "rock": 1.0})
    {'jazz': 1.0, 'rock': 0.25}
    """
    top = max(affinity.values(), default=0.0)
    return {k: v / top for k, v in affinity.items()} if top > 0 else {}


def genre_affinity(state: UserState, now_ms: int, half_life_s: float) -> dict[str, float]:
    """The user's affinity for each genre (app.core.catalog.item_genres: categories and tags
    alike), decayed to ``now_ms`` and scaled to [0, 1]: every interaction adds its type's
    weight to each genre of its item (app.core.state.apply_event keeps the two halves)."""
    categories, tags = state.affinities_at(now_ms, half_life_s)
    combined = dict(categories)
    for tag, value in tags.items():
        combined[tag] = combined.get(tag, 0.0) + value
    return normalized(combined)


def user_features(*, is_search: bool, interactions: int, max_len: int) -> list[float]:
    """``is_search``; ``activity``: log1p(item interactions so far) / 10, capped at 1;
    ``history_fill``: the share of the model's history window in use."""
    return [
        1.0 if is_search else 0.0,
        min(1.0, math.log1p(interactions) / 10.0),
        min(interactions, max_len) / max_len,
    ]


def genre_match(
    index: CatalogIndex, rows: NDArray[np.int32], affinity: dict[str, float]
) -> NDArray[np.float32]:
    """Per row, the mean of the user's (scaled) affinity over the item's genres; 0 for an
    item without genres or a user without affinities."""
    out = np.zeros(rows.shape[0], dtype=np.float32)
    codes = index.genre_code
    known = sorted((codes[g], a) for g, a in affinity.items() if g in codes)
    if not known or rows.shape[0] == 0:
        return out
    user_codes = np.array([c for c, _ in known], dtype=np.int32)
    values = np.array([a for _, a in known], dtype=np.float32)
    starts = index.genre_offsets[rows]
    lengths = index.genre_offsets[rows + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return out
    # Every (row, genre) pair at once: entry j of row r is genre_members[starts[r] + j].
    owner = np.repeat(np.arange(rows.shape[0]), lengths)
    entry = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    member = index.genre_members[entry + np.repeat(starts, lengths)]
    pos = np.minimum(np.searchsorted(user_codes, member), user_codes.size - 1)
    hit = np.where(user_codes[pos] == member, values[pos], np.float32(0.0))
    sums = np.bincount(owner, weights=hit / lengths[owner], minlength=rows.shape[0])
    out[:] = sums
    return out


def genre_match_batch(
    index: CatalogIndex,
    rows: Sequence[NDArray[np.int32]],
    affinities: Sequence[dict[str, float]],
) -> NDArray[np.float32]:
    """:func:`genre_match` of each request's candidate ``rows`` and ``affinities``, for a whole
    batch in one pass (the lists concatenated, in order): a handful of numpy calls per batch
    instead of per event. tests/unit/test_features_batch.py checks it equals the per-request
    function."""
    sizes = np.fromiter((r.shape[0] for r in rows), dtype=np.int64, count=len(rows))
    total_rows = int(sizes.sum())
    out = np.zeros(total_rows, dtype=np.float32)
    codes = index.genre_code
    n_codes = max(1, len(codes))
    # Each request's known genres as keys b * n_codes + code, sorted, with their affinities.
    keys: list[int] = []
    values: list[float] = []
    for b, affinity in enumerate(affinities):
        base = b * n_codes
        for genre, value in affinity.items():
            code = codes.get(genre)
            if code is not None:
                keys.append(base + code)
                values.append(value)
    if not keys or total_rows == 0:
        return out
    user_keys = np.array(keys, dtype=np.int64)
    order = np.argsort(user_keys, kind="stable")
    user_keys = user_keys[order]
    user_values = np.array(values, dtype=np.float32)[order]
    flat = np.concatenate(rows).astype(np.int64)
    request_of = np.repeat(np.arange(len(rows), dtype=np.int64), sizes)
    starts = index.genre_offsets[flat]
    lengths = index.genre_offsets[flat + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return out
    # Every (candidate, genre) pair at once, as in genre_match.
    owner = np.repeat(np.arange(total_rows), lengths)
    entry = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    member = index.genre_members[entry + np.repeat(starts, lengths)]
    wanted = request_of[owner] * n_codes + member
    pos = np.minimum(np.searchsorted(user_keys, wanted), user_keys.size - 1)
    hit = np.where(user_keys[pos] == wanted, user_values[pos], np.float32(0.0))
    out[:] = np.bincount(owner, weights=hit / lengths[owner], minlength=total_rows)
    return out
