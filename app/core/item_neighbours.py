"""Item-to-item neighbour lists: each catalog row's nearest rows by the item vectors.

"More like the user's recent items" needs the rows whose vectors score best against the user's
profile (a recency-weighted sum of the recent items' vectors). A search over the whole catalog
per event finds them exactly but costs a matrix product over every row. The profile's score of a
row is the weighted sum of the recent items' scores of it, so the rows that score best against
the profile are, nearly always, among the rows that score best against one of the recent items:
the union of the recent items' neighbour lists. :func:`similar_rows` scores that union (tens to
hundreds of rows) exactly against the profile, in the exact search's order; what it misses is
measured against the exact search by ``python -m app.dev.bench.neighbours`` (recall@k).

Small catalogs get every row's list at build time, off the event loop (the catalog is indexed in
the catalog follower's thread). For large ones that would take minutes, so a row's list is
computed on first use, with one batched search (the catalog's IVF index) for the rows a batch
needs, and kept in a bounded table: the items users touch are a small, slowly changing set.
"""

from __future__ import annotations

from typing import Final

import faiss
import numpy as np
from numpy.typing import NDArray

from app.core.vector_index import FAISS_THREADS, VectorIndex

# Rows per list. ``python -m app.dev.bench.neighbours`` (docs/benchmarks.md#similar-items) on
# 10,000 synthetic items, 850 users: recall@100 against the exact search 0.35 at 32, 0.58 at
# 64, 0.83 at 128, 0.91 at 200; the retrieval of a batch of 64 events 2.5x, 1.9x, 1.5x and 1.2x
# faster than the exact search. A user with one recent item needs a list as long as the quota
# (100) for full recall; 128 keeps most of it at half the search's cost.
NEIGHBOURS: Final = 128
# Below this many rows every list is built ahead (10,000 rows: about 0.5 s on one core); above
# it, on first use.
EAGER_BELOW: Final = 20_000
# Above EAGER_BELOW, the lists of this many of the most popular rows are built ahead (16,384
# rows at 1,000,000 items: about 4 s of IVF searches in the catalog thread, which faiss runs
# without the GIL), so traffic that follows popularity rarely waits for a list.
WARM_ROWS: Final = 16_384
# Lists kept when built on first use (rows x NEIGHBOURS x 4 bytes: 32 MiB at 128), reset when
# full. Pages never touched are never resident.
CACHE_ROWS: Final = 65_536
# Queries per search while building ahead: bounds the (chunk x catalog) score matrix.
_CHUNK: Final = 512

_NONE: NDArray[np.int32] = np.zeros(0, dtype=np.int32)


class ItemNeighbours:
    """The ``m`` rows nearest each row (by inner product, itself left out, best first, ``-1``
    where the catalog has fewer), ahead of time or on first use.

    Lists built on first use are written by the caller's thread: call :meth:`lists` from one
    thread at a time (the worker's event loop; each process has its own catalog)."""

    __slots__ = ("_index", "_lists", "_m", "_next", "_scratch", "_slot", "_vectors", "computed")

    def __init__(
        self,
        vectors: NDArray[np.float32],
        index: VectorIndex,
        m: int = NEIGHBOURS,
        *,
        eager: bool | None = None,
        warm: NDArray[np.int32] | None = None,
    ) -> None:
        """``index`` searches ``vectors`` (the catalog's matrix, row-aligned). ``warm``: rows
        whose lists to build now when the rest are built on first use."""
        if m < 1:
            raise ValueError(f"a neighbour list needs at least one row, got m={m}")
        n = index.size
        if vectors.shape[0] != n:
            raise ValueError(f"{vectors.shape[0]} vectors for an index of {n} rows")
        self._vectors = vectors
        self._index = index
        self._scratch: NDArray[np.int32] | None = None
        self._m = m
        # Rows whose lists were computed (ahead or on first use): a count for tests and logs.
        self.computed = 0
        if eager is None:
            eager = n < EAGER_BELOW
        if eager:
            self._slot = np.arange(n, dtype=np.int32)
            self._lists = np.empty((n, m), dtype=np.int32)
            # faiss's exact search keeps a heap per query instead of partitioning a full row of
            # scores (2.5x faster here at 10,000 rows), and it releases the GIL, so building in
            # the catalog thread does not hold up the event loop.
            flat = faiss.IndexFlatIP(vectors.shape[1])
            flat.add(vectors)
            faiss.omp_set_num_threads(FAISS_THREADS)
            for lo in range(0, n, _CHUNK):
                rows = np.arange(lo, min(n, lo + _CHUNK), dtype=np.int32)
                _, found = flat.search(vectors[rows], min(n, m + 1))
                self._lists[lo : lo + rows.shape[0]] = self._drop_self(rows, found)
            self._next = n
        else:
            self._slot = np.full(n, -1, dtype=np.int32)
            # np.empty: a page is only made resident when a list is written to it.
            self._lists = np.empty((min(n, CACHE_ROWS), m), dtype=np.int32)
            self._next = 0
            if warm is not None and warm.size:
                self.lists(np.asarray(warm[: self._lists.shape[0]], dtype=np.int32))

    @property
    def scratch(self) -> NDArray[np.int32]:
        """A row-sized work array for :func:`similar_rows` (made on first use; its contents are
        meaningless between calls)."""
        if self._scratch is None:
            self._scratch = np.zeros(self._index.size, dtype=np.int32)
        return self._scratch

    def lists(self, rows: NDArray[np.int32]) -> NDArray[np.int32]:
        """``(len(rows), m)``: each row's neighbour list, computing those not known yet."""
        rows = np.asarray(rows, dtype=np.int32)
        slots = self._slot[rows]
        if (slots < 0).any():
            missing = np.unique(rows[slots < 0])
            if self._next + missing.shape[0] > self._lists.shape[0]:
                # Full: start again (the lists still needed come back on their next use).
                self._slot[:] = -1
                self._next = 0
            for lo in range(0, missing.shape[0], _CHUNK):
                part = missing[lo : lo + _CHUNK]
                at = self._next
                self._lists[at : at + part.shape[0]] = self._search(part)
                self._slot[part] = np.arange(at, at + part.shape[0], dtype=np.int32)
                self._next += part.shape[0]
            slots = self._slot[rows]
        return self._lists[slots]

    def _search(self, rows: NDArray[np.int32]) -> NDArray[np.int32]:
        found, _ = self._index.search(self._vectors[rows], min(self._index.size, self._m + 1))
        return self._drop_self(rows, found)

    def _drop_self(self, rows: NDArray[np.int32], found: NDArray[np.integer]) -> NDArray[np.int32]:
        m = self._m
        self.computed += int(rows.shape[0])
        # Leave each row itself out; where the search did not return it (a vector that scores
        # another row higher than itself), drop the last instead.
        own = found == rows[:, None]
        own[~own.any(axis=1), -1] = True
        kept = found[~own].reshape(rows.shape[0], found.shape[1] - 1)
        out = np.full((rows.shape[0], m), -1, dtype=np.int32)
        out[:, : kept.shape[1]] = kept
        return out


def similar_rows(
    neighbours: ItemNeighbours,
    vectors: NDArray[np.float32],
    recent: NDArray[np.int32],
    weights: NDArray[np.float32],
    lists: NDArray[np.int32] | None = None,
) -> NDArray[np.int32]:
    """Rows by their score against the profile ``weights @ vectors[recent]``, best first (ties:
    lower row first, as the exact search), among the recent rows and their neighbour lists.

    ``lists``: ``neighbours.lists(recent)`` when the caller fetched it for a whole batch."""
    if recent.size == 0:
        return _NONE
    if lists is None:
        lists = neighbours.lists(recent)
    pool = np.concatenate((recent, lists.ravel()))
    pool = pool[pool >= 0]
    # Each row once, cheaper than np.unique: stamp each row with a position that mentions it,
    # keep the entries that find their own position; then sort the (shorter) rest by row.
    stamp = neighbours.scratch
    at = np.arange(pool.shape[0], dtype=np.int32)
    stamp[pool] = at
    pool = pool[stamp[pool] == at]
    pool.sort()
    profile = weights @ vectors[recent]
    scores = vectors[pool] @ profile
    ordered: NDArray[np.int32] = pool[np.argsort(-scores, kind="stable")]
    return ordered
