"""Exact and IVF top-k search: true results, ordering, padding, recall and index choice."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from numpy.typing import NDArray

from app.core.vector_index import (
    ExactIndex,
    IvfIndex,
    VectorIndex,
    build_vector_index,
    default_nlist,
    default_nprobe,
    recall_at_k,
)

DIM = 64


def clustered(n: int, *, centres: int = 100, seed: int = 0) -> NDArray[np.float32]:
    """Gaussian clusters around random unit centres, normalised then scaled a little, like item
    embeddings that are only roughly L2-normalised."""
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((centres, DIM)).astype(np.float32)
    c /= np.linalg.norm(c, axis=1, keepdims=True)
    x = c[rng.integers(centres, size=n)] + 0.1 * rng.standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x *= rng.uniform(0.95, 1.05, size=(n, 1)).astype(np.float32)
    return x


def noisy_copies(x: NDArray[np.float32], batch: int, seed: int = 1) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    q = x[rng.integers(len(x), size=batch)]
    q = q + 0.05 * rng.standard_normal(q.shape, dtype=np.float32)
    unit: NDArray[np.float32] = (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)
    return unit


@pytest.fixture(scope="module")
def vectors() -> NDArray[np.float32]:
    return clustered(20_000)


@pytest.fixture(scope="module")
def ivf(vectors: NDArray[np.float32]) -> IvfIndex:
    return IvfIndex(vectors)


def test_exact_returns_true_top_k_in_order() -> None:
    x = clustered(500, centres=5)
    q = noisy_copies(x, 4)
    rows, scores = ExactIndex(x).search(q, 10)
    sims = q @ x.T
    expected = np.argsort(-sims, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(rows, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(sims, expected, axis=1), rtol=1e-6)
    assert (np.diff(scores, axis=1) <= 0).all()


@pytest.mark.parametrize("k", [2, 4, 6, 10])
def test_exact_breaks_ties_by_row_number(k: int) -> None:
    x = np.zeros((10, 4), dtype=np.float32)
    x[:, 1] = 0.5
    x[[7, 2, 9, 5], 0] = 1.0  # four rows tie for the best score
    rows, scores = ExactIndex(x).search(np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32), k)
    expected = [2, 5, 7, 9, 0, 1, 3, 4, 6, 8][:k]
    assert rows[0].tolist() == expected
    assert scores[0].tolist() == [1.0] * min(k, 4) + [0.0] * (k - 4)


def test_exact_keeps_the_callers_matrix_when_already_float32() -> None:
    x = clustered(100)
    assert ExactIndex(x).vectors is x
    converted = ExactIndex(x.astype(np.float64)).vectors
    assert converted.dtype == np.float32 and converted.flags.c_contiguous


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_fewer_rows_than_k_are_padded(kind: str) -> None:
    x = clustered(80, centres=2)
    index: VectorIndex = ExactIndex(x) if kind == "exact" else IvfIndex(x, nlist=2, nprobe=1)
    rows, scores = index.search(noisy_copies(x, 3), 100)
    assert rows.shape == scores.shape == (3, 100)
    found = rows >= 0
    assert found[:, 0].all()
    # Each row is its results, best first, then padding only.
    assert (np.diff(found.astype(np.int8), axis=1) <= 0).all()
    assert (scores[~found] == -np.inf).all()
    assert np.isfinite(scores[found]).all()
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    if kind == "exact":
        assert found.sum(axis=1).tolist() == [80, 80, 80]


def test_empty_catalog_finds_nothing() -> None:
    index = build_vector_index(np.zeros((0, DIM), dtype=np.float32))
    assert index.kind == "exact" and index.size == 0 and index.dim == DIM
    rows, scores = index.search(noisy_copies(clustered(10), 2), 5)
    assert rows.tolist() == [[-1] * 5] * 2
    assert (scores == -np.inf).all()


def test_ivf_recall_against_exact(vectors: NDArray[np.float32], ivf: IvfIndex) -> None:
    q = noisy_copies(vectors, 64)
    truth, _ = ExactIndex(vectors).search(q, 50)
    found, _ = ivf.search(q, 50)
    assert recall_at_k(found, truth) >= 0.9


def test_ivf_returns_catalog_rows_with_their_scores(
    vectors: NDArray[np.float32], ivf: IvfIndex
) -> None:
    q = vectors[::997]
    found, scores = ivf.search(q, 5)
    best, _ = ExactIndex(vectors).search(q, 1)
    assert found[:, 0].tolist() == best[:, 0].tolist()
    np.testing.assert_allclose(scores, np.einsum("bd,bkd->bk", q, vectors[found]), rtol=1e-5)


def test_ivf_builds_are_reproducible(vectors: NDArray[np.float32], ivf: IvfIndex) -> None:
    q = noisy_copies(vectors, 16, seed=5)
    again = IvfIndex(vectors)
    for got, want in zip(again.search(q, 20), ivf.search(q, 20), strict=True):
        np.testing.assert_array_equal(got, want)


def test_ivf_built_in_a_background_thread_searches_elsewhere(
    vectors: NDArray[np.float32],
) -> None:
    sample = vectors[:4000]
    with ThreadPoolExecutor(max_workers=1) as pool:
        index = pool.submit(IvfIndex, sample, nlist=20).result()
    rows, _ = index.search(sample[:3], 1)
    assert rows.tolist() == ExactIndex(sample).search(sample[:3], 1)[0].tolist()


def test_build_picks_exact_below_threshold_and_ivf_above() -> None:
    small = build_vector_index(clustered(999), exact_below=1000)
    large = build_vector_index(clustered(2000), exact_below=1000, nprobe=3)
    assert isinstance(small, ExactIndex) and small.kind == "exact"
    assert isinstance(large, IvfIndex) and large.kind == "ivf"
    assert large.size == 2000 and large.dim == DIM
    assert large.nlist == default_nlist(2000) and large.nprobe == 3


def test_build_stays_exact_when_too_few_rows_to_train() -> None:
    assert build_vector_index(clustered(10), exact_below=0).kind == "exact"
    with pytest.raises(ValueError, match="too few"):
        IvfIndex(clustered(10))


@pytest.mark.parametrize("kind", ["exact", "ivf"])
@pytest.mark.parametrize(("batch", "k"), [(1, 7), (5, 1), (0, 3), (2, 0)])
def test_result_types_and_shapes(
    kind: str, batch: int, k: int, vectors: NDArray[np.float32], ivf: IvfIndex
) -> None:
    index: VectorIndex = ExactIndex(vectors) if kind == "exact" else ivf
    rows, scores = index.search(noisy_copies(vectors, batch), k)
    assert rows.dtype == np.int32 and scores.dtype == np.float32
    assert rows.shape == scores.shape == (batch, k)


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_bad_queries_are_rejected(kind: str, vectors: NDArray[np.float32], ivf: IvfIndex) -> None:
    index: VectorIndex = ExactIndex(vectors) if kind == "exact" else ivf
    with pytest.raises(ValueError, match="q\\[None, :\\]"):
        index.search(vectors[0], 3)  # one vector, not a batch of one
    with pytest.raises(ValueError, match="shape"):
        index.search(np.zeros((2, DIM + 1), dtype=np.float32), 3)
    with pytest.raises(ValueError, match="finite"):
        index.search(np.full((1, DIM), np.nan, dtype=np.float32), 3)
    with pytest.raises(ValueError, match="negative"):
        index.search(vectors[:1], -1)


def test_float64_queries_are_converted(vectors: NDArray[np.float32], ivf: IvfIndex) -> None:
    q = noisy_copies(vectors, 3)
    for index in (ExactIndex(vectors), ivf):
        got = index.search(q.astype(np.float64), 4)
        want = index.search(q, 4)
        np.testing.assert_array_equal(got[0], want[0])


def test_defaults() -> None:
    assert (default_nlist(1_000_000), default_nprobe(default_nlist(1_000_000))) == (2000, 16)
    assert default_nlist(100) == 2  # capped by the training points each list needs
    assert default_nprobe(5) == 5


def test_recall_ignores_padding_in_the_truth() -> None:
    found = np.array([[1, 2, 3], [4, 5, -1]], dtype=np.int32)
    truth = np.array([[3, 2, 9], [4, -1, -1]], dtype=np.int32)
    assert recall_at_k(found, truth) == pytest.approx((2 / 3 + 1) / 2)
