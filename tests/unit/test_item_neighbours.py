"""Item-to-item neighbour lists (app.core.item_neighbours) and the similar-items retriever built on
them: exact where the lists are long enough, the same candidates as the whole-catalog search."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from app.core import item_neighbours
from app.core.catalog import Catalog, IndexOptions
from app.core.item_neighbours import ItemNeighbours, similar_rows
from app.core.records import Event, EventType, Item
from app.core.retrieval import Request, retrieve_batch
from app.core.settings import Settings
from app.core.state import Interaction, UserState
from app.core.vector_index import ExactIndex, IvfIndex
from app.dev.bench import neighbours as bench


def _vectors(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    x: np.ndarray = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _brute(x: np.ndarray, m: int) -> np.ndarray:
    sims = x @ x.T
    np.fill_diagonal(sims, -np.inf)
    return np.argsort(-sims, axis=1, kind="stable")[:, :m].astype(np.int32)


def test_lists_built_ahead_are_each_rows_nearest_rows_without_itself() -> None:
    x = _vectors(300)
    lists = ItemNeighbours(x, ExactIndex(x), 10)
    assert lists.computed == 300
    got = lists.lists(np.arange(300, dtype=np.int32))
    np.testing.assert_array_equal(got, _brute(x, 10))
    assert not (got == np.arange(300)[:, None]).any()


def test_lists_computed_on_first_use_match_and_are_computed_once() -> None:
    x = _vectors(300, seed=1)
    ahead = ItemNeighbours(x, ExactIndex(x), 8, eager=True)
    lazy = ItemNeighbours(x, ExactIndex(x), 8, eager=False)
    assert lazy.computed == 0
    rows = np.array([5, 7, 5, 299], dtype=np.int32)
    np.testing.assert_array_equal(lazy.lists(rows), ahead.lists(rows))
    assert lazy.computed == 3  # 5 asked twice, computed once
    lazy.lists(np.array([7, 299], dtype=np.int32))
    assert lazy.computed == 3


def test_a_full_cache_starts_again_and_stays_right(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(item_neighbours, "CACHE_ROWS", 4)
    x = _vectors(50, seed=2)
    lazy = ItemNeighbours(x, ExactIndex(x), 5, eager=False)
    want = _brute(x, 5)
    for rows in ([0, 1, 2], [3, 4], [1, 40, 41], [49]):
        asked = np.array(rows, dtype=np.int32)
        np.testing.assert_array_equal(lazy.lists(asked), want[asked])


def test_short_catalogs_pad_with_minus_one() -> None:
    x = _vectors(3, seed=3)
    got = ItemNeighbours(x, ExactIndex(x), 5).lists(np.arange(3, dtype=np.int32))
    assert got.shape == (3, 5)
    assert (got[:, 2:] == -1).all()
    assert sorted(got[0, :2].tolist()) == [1, 2]


def test_ivf_lists_on_first_use_find_most_of_the_exact_lists() -> None:
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(40, 16))
    x = (centres[rng.integers(0, 40, 6000)] + rng.normal(scale=0.3, size=(6000, 16))).astype(
        np.float32
    )
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    asked = np.arange(0, 6000, 60, dtype=np.int32)
    got = ItemNeighbours(x, IvfIndex(x, nlist=40, nprobe=8), 20, eager=False).lists(asked)
    want = _brute(x, 20)[asked]
    recall = np.mean([np.isin(w, g).mean() for g, w in zip(got, want, strict=True)])
    assert recall >= 0.9


def test_similar_rows_order_the_pool_as_the_exact_profile_search() -> None:
    x = _vectors(200, seed=5)
    lists = ItemNeighbours(x, ExactIndex(x), 199)  # every row: the pool is the catalog
    recent = np.array([3, 17, 42], dtype=np.int32)
    weights = np.linspace(0.5, 1.0, 3, dtype=np.float32)
    profile = weights @ x[recent]
    want, _ = ExactIndex(x).search((profile / np.linalg.norm(profile))[None, :], 200)
    np.testing.assert_array_equal(similar_rows(lists, x, recent, weights), want[0])
    short = similar_rows(ItemNeighbours(x, ExactIndex(x), 5), x, recent, weights)
    assert len(short) <= 3 + 3 * 5 and set(recent.tolist()) <= set(short.tolist())


def _catalog(n: int, item_neighbours: int) -> Catalog:
    catalog = Catalog(options=IndexOptions(item_neighbours=item_neighbours))
    for i in range(n):
        catalog.upsert(
            Item(
                f"i{i}",
                f"item {i} {'jazz' if i % 3 else 'rock'}",
                f"c{i % 4}",
                popularity=float(i % 17),
            )
        )
    catalog.publish()
    return catalog


def test_retrieval_with_full_lists_proposes_what_the_catalog_search_does() -> None:
    index = _catalog(120, item_neighbours=119).index
    assert index.item_lists is not None
    searched = dataclasses.replace(index, item_lists=None)
    requests = []
    for u in range(6):
        history = tuple(
            Interaction(f"i{(u * 7 + j * 5) % 120}", "view", 1_000 + j) for j in range(u + 1)
        )
        state = UserState(f"u{u}", history=history)
        event = Event(f"e{u}", f"u{u}", EventType.VIEW, 2_000, "t", item_id=history[-1].item_id)
        requests.append(Request(state, event, (), ("c1",), {}))
    with_lists = retrieve_batch(index, requests, limit=40)
    with_search = retrieve_batch(searched, requests, limit=40)
    for a, b in zip(with_lists, with_search, strict=True):
        np.testing.assert_array_equal(a.rows, b.rows)
        assert a.sources == b.sources
        assert "similar" in a.sources


def test_no_lists_when_turned_off() -> None:
    assert _catalog(30, item_neighbours=0).index.item_lists is None
    assert _catalog(30, item_neighbours=4).index.item_lists is not None


def test_the_recall_benchmark_runs_small_and_is_exact_with_full_lists() -> None:
    settings = Settings()
    index, pairs = bench.user_states(settings, 400, 60, 6, seed=1)
    rows = bench.measure(settings, index, pairs, [8, len(index) - 1], repeats=1)
    assert [r.m for r in rows] == [8, len(index) - 1]
    assert all(0.0 <= r.recall_next <= 1.0 and r.users > 0 for r in rows)
    assert rows[-1].recall_next == pytest.approx(1.0)
    assert rows[-1].recall_search == pytest.approx(1.0)
    assert rows[0].recall_next < 1.0  # 8 rows per list cannot hold a 100-row answer
    assert "| 400 | 8 |" in bench.table(rows, settings.candidates)


def test_warm_rows_are_built_ahead_when_the_rest_wait_for_first_use() -> None:
    x = _vectors(200, seed=6)
    warm = np.array([9, 3, 150], dtype=np.int32)
    lazy = ItemNeighbours(x, ExactIndex(x), 6, eager=False, warm=warm)
    assert lazy.computed == 3
    np.testing.assert_array_equal(lazy.lists(warm), _brute(x, 6)[warm])
    assert lazy.computed == 3
