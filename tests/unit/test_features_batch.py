"""The batched genre match (app.core.features.genre_match_batch, what the ranker serves) equals
the per-request genre_match (what training and the parity tests use), request by request."""

from __future__ import annotations

import numpy as np

from app.core.catalog import Catalog
from app.core.features import genre_match, genre_match_batch
from app.core.records import Item


def _index() -> Catalog:
    catalog = Catalog()
    genres = [f"g{k}" for k in range(12)]
    for i in range(80):
        tags = tuple(genres[(i * j) % 12] for j in range(i % 4))  # 0 to 3 tags, some repeated
        catalog.upsert(Item(f"i{i}", f"item {i}", genres[i % 5], tags=tags))
    catalog.publish()
    return catalog


def test_batched_genre_match_equals_the_per_request_one() -> None:
    index = _index().index
    rng = np.random.default_rng(0)
    rows = []
    affinities = []
    for b in range(9):
        rows.append(
            rng.choice(len(index), size=int(rng.integers(0, 30)), replace=False).astype(np.int32)
        )
        known = {f"g{k}": float(rng.random()) for k in rng.choice(12, size=b % 5, replace=False)}
        if b % 3 == 0:
            known["not-a-genre"] = 1.0
        affinities.append(known)
    batched = genre_match_batch(index, rows, affinities)
    assert batched.shape == (sum(r.shape[0] for r in rows),)
    at = 0
    for r, a in zip(rows, affinities, strict=True):
        np.testing.assert_allclose(
            batched[at : at + r.shape[0]], genre_match(index, r, a), rtol=1e-6
        )
        at += r.shape[0]
    assert batched.max() > 0  # the comparison covered real matches


def test_batched_genre_match_without_rows_or_affinities() -> None:
    index = _index().index
    empty = np.zeros(0, dtype=np.int32)
    assert genre_match_batch(index, [], []).shape == (0,)
    assert genre_match_batch(index, [empty, empty], [{"g1": 1.0}, {}]).shape == (0,)
    some = np.arange(5, dtype=np.int32)
    assert not genre_match_batch(index, [some], [{}]).any()
