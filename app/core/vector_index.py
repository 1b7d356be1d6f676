"""Top-k inner-product search over the item matrix: exact for small catalogs, IVF for large."""

from __future__ import annotations

import math
from typing import Final, Protocol

import faiss
import numpy as np
from numpy.typing import NDArray

# Defaults, measured by an ad-hoc script (kept out of the repo) on the 2-core development VM (AMD
# EPYC with AVX-512, KVM, shared with other jobs), faiss-cpu 1.15.1, numpy 2.4, one faiss thread.
# Data: dim 64, 300 gaussian centres with log-normal cluster sizes, per-dimension noise 0.1, then
# L2-normalised and scaled by U(0.95, 1.05). Queries: item vectors plus noise 0.05, normalised,
# a fresh random batch per timing (repeating one batch keeps its lists in cache). k = 200; times
# are medians; recall@200 is over 256 queries against ExactIndex, which numpy runs on 2 threads.
#
#                              IVF search ms             ExactIndex ms
#   n          nlist nprobe  build s  B=1   B=16  B=64  recall@200   B=1    B=64
#   10,000       200     16     0.03  0.04  0.43   1.7       0.81     0.07     2.4
#   50,000       447     16     0.15  0.07  0.63   2.4       0.97     0.20     9.4
#   100,000      632     18     0.34  0.08  1.14   4.7       0.98     0.56    22
#   1,000,000   2000     32     5.43  0.27  4.27  16.9       1.00     8.1    230-380
#
# Three runs at 1M gave build 4.9-5.4 s, IVF B=64 15.9-16.9 ms and exact B=64 230-380 ms. At 10,000
# rows IVF does not pay: its lists are short, 16 of them hold too few candidates for k = 200, and
# exact search is cheap. EXACT_BELOW = 50,000 keeps results exact while exact B=64 costs about
# 10 ms; IVF is 4x faster there. Recall depends on the data, so check the defaults
# against real embeddings with ``recall_at_k``. At 1M with 3,000 centres (the top 200 spread over
# many small clusters) recall@200 was 0.97 at nprobe 32; with 30 wide clusters (noise 0.15, nearly
# uniform inside each, the hard case) it was 0.68 at nprobe 32, 0.83 at 64 and 0.95 at 128
# (B=64 in 60 ms), so pass a larger nprobe for embeddings like that.
#
# The table was measured with 4-byte codes (IndexIVFFlat). With the 8-bit codes used since (a
# quarter of the memory) and exact scores for the rows found, tests/unit/test_vector_index.py's
# ``clustered`` data (300 centres) gave recall@200 0.996 at 100,000 rows (B=64 in 4.9 ms) and
# 0.989 at 1,000,000 (B=64 in 12.7 ms, build 7.6 s).

EXACT_BELOW: Final = 50_000
# Lists of about sqrt(n)/2 rows: for k = 200 the probed lists must hold thousands of candidates
# anyway. At 1M, 2*sqrt(n) lists at nprobe 32 (recall 0.997, B=64 in 16 ms, build 5 s) beat
# 4*sqrt(n) lists at nprobe 48 (0.992, 15 ms, build 13 s): k-means cost grows as nlist^2.
NLIST_PER_SQRT_N: Final = 2.0
# faiss's k-means warns below 39 training points per centroid; more points only slow training
# (the sample, not n, bounds it), and 40 per list gave the recall above.
MIN_TRAIN_POINTS_PER_LIST: Final = 39
TRAIN_POINTS_PER_LIST: Final = 40
# Probe at least 16 lists, and more as the catalog grows so recall holds: 0.35*sqrt(nlist) passes
# 16 above about 2M items. A fixed share of the lists would make the scan grow linearly with n;
# with nprobe and the list length both growing as powers of n, a query costs about n^0.75.
# At 1M (2,000 lists, the data above) nprobe 16 had recall@200 0.962 and B=64 in 9.7 ms, 24 had
# 0.990 in 12.2 ms and 32 had 0.997 in 14.9 ms: the similar-items retriever fills at most half of
# the 200 candidates and the model re-ranks them, so 16 is the default; ANN_NPROBE raises it.
MIN_NPROBE: Final = 16
NPROBE_PER_SQRT_NLIST: Final = 0.35
# The service shares 2 cores with a Kafka broker and the event loop: more faiss threads would
# fight them for the CPU (and OpenMP spin-waits), to gain little on batches this small.
FAISS_THREADS: Final = 1


class VectorIndex(Protocol):
    """Finds the catalog rows with the largest inner product with each query vector."""

    @property
    def kind(self) -> str:
        """``"exact"`` or ``"ivf"``, for logs and metric labels."""
        ...

    @property
    def size(self) -> int:
        """Rows in the matrix the index was built from."""
        ...

    @property
    def dim(self) -> int: ...

    def search(
        self, queries: NDArray[np.float32], k: int
    ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        """Rows and scores of the ``k`` best rows for each query of a ``(batch, dim)`` array.

        Both results are ``(batch, k)``, best first. Where fewer than ``k`` rows are found, the
        rest of the row is ``-1`` with score ``-inf``. A single vector must be passed as
        ``q[None, :]``: a 1-D array raises ``ValueError``.
        """
        ...


class ExactIndex:
    """Brute force, one matrix product per batch; ties go to the lower row number.

    Its cost grows with the catalog, so it is meant for catalogs below ``EXACT_BELOW`` rows.
    Searches use numpy's BLAS, whose threads faiss's setting does not govern.

    >>> index = ExactIndex(np.eye(3, dtype=np.float32))
    >>> rows, scores = index.search(np.array([[0.0, 2.0, 1.0]], dtype=np.float32), 2)
    >>> rows.tolist(), scores.tolist()
    ([[1, 2]], [[2.0, 1.0]])
    """

    __slots__ = ("_vectors",)

    def __init__(self, vectors: NDArray[np.floating]) -> None:
        self._vectors = _as_matrix(vectors)

    @property
    def kind(self) -> str:
        return "exact"

    @property
    def size(self) -> int:
        return int(self._vectors.shape[0])

    @property
    def dim(self) -> int:
        return int(self._vectors.shape[1])

    @property
    def vectors(self) -> NDArray[np.float32]:
        """The searched matrix: the caller's own array when it was C-contiguous float32."""
        return self._vectors

    def search(
        self, queries: NDArray[np.float32], k: int
    ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        q = _as_queries(queries, self.dim)
        rows, scores = _empty_results(q.shape[0], k)
        take = min(k, self.size)
        if take == 0 or q.shape[0] == 0:
            return rows, scores
        sims = q @ self._vectors.T
        top = _top_k(sims, take)
        rows[:, :take] = top
        scores[:, :take] = np.take_along_axis(sims, top, axis=1)
        return rows, scores

    def __repr__(self) -> str:
        return f"ExactIndex(size={self.size}, dim={self.dim})"


class IvfIndex:
    """Approximate search with a faiss inverted-file index (``IndexIVFScalarQuantizer``, 8-bit
    codes, inner product).

    k-means splits the rows into ``nlist`` lists; a search scans the ``nprobe`` lists whose
    centroids score best, so with the default sizes its cost grows as about n^0.75, not n.
    Training and adding happen here, in the constructor: faiss releases the GIL while it trains,
    adds and searches, so a background thread can build a new index while the worker keeps
    searching the old one, and concurrent searches of one index are safe. The index holds its own
    8-bit copy of the vectors (a byte per dimension plus an 8-byte id per row) to search, and a
    reference to ``vectors`` (no copy) to score what it found exactly. ``threads`` is faiss's
    OpenMP thread count, which OpenMP keeps per calling thread: it is set in the building thread
    and again in each searching one. Equal scores keep faiss's order, which is deterministic for
    a given build but not by row number.
    """

    __slots__ = (
        "_dim",
        "_index",
        "_nlist",
        "_nprobe",
        "_quantizer",
        "_size",
        "_threads",
        "_vectors",
    )

    def __init__(
        self,
        vectors: NDArray[np.floating],
        nlist: int | None = None,
        nprobe: int | None = None,
        seed: int = 0,
        *,
        threads: int = FAISS_THREADS,
    ) -> None:
        x = _as_matrix(vectors)
        n, dim = int(x.shape[0]), int(x.shape[1])
        nlist = default_nlist(n) if nlist is None else nlist
        if nlist < 1:
            raise ValueError(f"nlist must be at least 1, got {nlist}")
        if n < MIN_TRAIN_POINTS_PER_LIST * nlist:
            raise ValueError(
                f"{n} vectors are too few to train {nlist} IVF lists (need "
                f"{MIN_TRAIN_POINTS_PER_LIST} per list); use ExactIndex"
            )
        nprobe = default_nprobe(nlist) if nprobe is None else nprobe
        if nprobe < 1:
            raise ValueError(f"nprobe must be at least 1, got {nprobe}")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        _set_threads(threads)
        quantizer = faiss.IndexFlatIP(dim)
        # Rows are stored as 8-bit codes, a byte per dimension instead of four: at a million
        # rows of 64 dimensions, 64 MB next to the catalog's own float matrix instead of 256.
        # The candidates found are scored by the model anyway; recall is in the tests.
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
        index.cp.seed = seed
        index.train(_training_sample(x, nlist, seed))
        # Implicit ids 0..n-1 are the row numbers of ``vectors``.
        index.add(x)
        index.nprobe = min(nprobe, nlist)
        self._index = index
        # The catalog's own float matrix (not a copy), for exact scores of the rows found.
        self._vectors = x
        # The IVF index points at the quantizer without owning it; keep it alive as long.
        self._quantizer = quantizer
        self._dim = dim
        self._size = n
        self._nlist = nlist
        self._nprobe = index.nprobe
        self._threads = threads

    @property
    def kind(self) -> str:
        return "ivf"

    @property
    def size(self) -> int:
        return self._size

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def nlist(self) -> int:
        return self._nlist

    @property
    def nprobe(self) -> int:
        return self._nprobe

    def search(
        self, queries: NDArray[np.float32], k: int
    ) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
        q = _as_queries(queries, self._dim)
        if k <= 0 or q.shape[0] == 0:
            return _empty_results(q.shape[0], k)  # raises for k < 0; faiss would assert
        # The thread count is per calling thread, and the worker searching is not the thread that
        # built the index; setting it is a cheap store.
        _set_threads(self._threads)
        _codes_scores, labels = self._index.search(q, k)
        # The 8-bit codes only approximate the scores: score the rows found exactly against the
        # float matrix and order them by that (faiss pads with id -1: "none", -inf).
        missing = labels < 0
        rows = np.where(missing, 0, labels)
        scores = np.einsum("bkd,bd->bk", self._vectors[rows], q).astype(np.float32)
        scores[missing] = -np.inf
        order = np.argsort(-scores, axis=1, kind="stable")
        labels = np.take_along_axis(labels, order, axis=1)
        return labels.astype(np.int32), np.take_along_axis(scores, order, axis=1)

    def __repr__(self) -> str:
        return (
            f"IvfIndex(size={self._size}, dim={self._dim}, nlist={self._nlist}, "
            f"nprobe={self._nprobe})"
        )


def build_vector_index(
    vectors: NDArray[np.floating], *, exact_below: int = EXACT_BELOW, nprobe: int | None = None
) -> VectorIndex:
    """An exact index for catalogs under ``exact_below`` rows, else an IVF one.

    ``nprobe`` (None: :func:`default_nprobe`) applies only to IVF. Building IVF takes seconds for
    a million rows, so call this off the event loop.
    """
    x = _as_matrix(vectors)
    # IVF needs enough rows to train even one list, whatever the threshold says.
    if x.shape[0] < max(exact_below, MIN_TRAIN_POINTS_PER_LIST):
        return ExactIndex(x)
    return IvfIndex(x, nprobe=nprobe)


def default_nlist(n: int) -> int:
    """IVF lists for ``n`` rows: about 2*sqrt(n), with enough rows to train each.

    >>> default_nlist(1_000_000), default_nlist(100_000), default_nlist(1_000)
    (2000, 632, 25)
    """
    return max(1, min(round(NLIST_PER_SQRT_N * math.sqrt(n)), n // TRAIN_POINTS_PER_LIST))


def default_nprobe(nlist: int) -> int:
    """Lists probed per query: 0.35*sqrt(nlist), at least ``MIN_NPROBE``, at most all.

    >>> default_nprobe(2000), default_nprobe(10_000), default_nprobe(10)
    (16, 35, 10)
    """
    return min(nlist, max(MIN_NPROBE, math.ceil(NPROBE_PER_SQRT_NLIST * math.sqrt(nlist))))


def recall_at_k(found: NDArray[np.int32], truth: NDArray[np.int32]) -> float:
    """Mean share of each query's true rows (``truth``, ``-1`` ignored) that ``found`` has.

    For checking an approximate index against :class:`ExactIndex` on a sample of queries.

    >>> found = np.array([[1, 2, 3], [4, 5, -1]])
    >>> round(recall_at_k(found, np.array([[3, 2, 9], [4, -1, -1]])), 3)
    0.833
    """
    if found.shape[0] != truth.shape[0]:
        raise ValueError(f"{found.shape[0]} result rows for {truth.shape[0]} queries")
    shares = []
    for got, want in zip(found, truth, strict=True):
        real = want[want >= 0]
        if real.size:
            shares.append(np.isin(real, got).mean())
    return float(np.mean(shares)) if shares else 1.0


def _set_threads(threads: int) -> None:
    # OpenMP keeps the count per thread: a thread that never set it uses every core.
    faiss.omp_set_num_threads(threads)


def _as_matrix(vectors: NDArray[np.floating]) -> NDArray[np.float32]:
    # No copy when the catalog already holds C-contiguous float32, which faiss needs too.
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"vectors must be a (rows, dim) matrix, got shape {x.shape}")
    if x.shape[1] < 1:
        raise ValueError("vectors must have at least one dimension")
    if not np.isfinite(x).all():
        raise ValueError("vectors must be finite")
    return x


def _as_queries(queries: NDArray[np.float32], dim: int) -> NDArray[np.float32]:
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != dim:
        # A 1-D query is refused rather than guessed at, so results are always (batch, k).
        raise ValueError(
            f"queries must have shape (batch, {dim}), got {q.shape}; pass one as q[None, :]"
        )
    if not np.isfinite(q).all():
        raise ValueError("queries must be finite")
    return q


def _empty_results(batch: int, k: int) -> tuple[NDArray[np.int32], NDArray[np.float32]]:
    if k < 0:
        raise ValueError(f"k must not be negative, got {k}")
    return (
        np.full((batch, k), -1, dtype=np.int32),
        np.full((batch, k), -np.inf, dtype=np.float32),
    )


def _top_k(sims: NDArray[np.float32], k: int) -> NDArray[np.intp]:
    """Column numbers of the ``k`` largest values of each row, largest first, ties by column."""
    n = sims.shape[1]
    if k >= n:
        return np.argsort(-sims, axis=1, kind="stable")
    part = np.argpartition(sims, n - k, axis=1)[:, n - k :]
    part_sims = np.take_along_axis(sims, part, axis=1)
    top = np.take_along_axis(part, np.lexsort((part, -part_sims), axis=1), axis=1)
    # argpartition picks arbitrarily among columns tied with the k-th value; for the (rare) rows
    # where such a tie crosses the cut, choose again so the lowest columns win.
    kth = part_sims.min(axis=1)
    for i in np.flatnonzero(np.count_nonzero(sims >= kth[:, None], axis=1) > k):
        tied = np.flatnonzero(sims[i] >= kth[i])
        top[i] = tied[np.argsort(-sims[i, tied], kind="stable")[:k]]
    return top


def _training_sample(x: NDArray[np.float32], nlist: int, seed: int) -> NDArray[np.float32]:
    # A seeded sample keeps builds reproducible and training cost bounded by nlist, not n.
    size = TRAIN_POINTS_PER_LIST * nlist
    if x.shape[0] <= size:
        return x
    picked = np.random.default_rng(seed).choice(x.shape[0], size=size, replace=False)
    picked.sort()
    return x[picked]
