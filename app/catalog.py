"""The in-memory item catalog: ``Catalog`` (mutable) publishes ``CatalogIndex`` snapshots."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.records import Item
from app.text import tokenize

VECTOR_DIM = 64
_EMPTY_ROWS: NDArray[np.int32] = np.zeros(0, dtype=np.int32)


def _bucket(token: str) -> int:
    # crc32 rather than hash(): Python's str hash is salted per process, vectors must not be.
    return zlib.crc32(token.encode("utf-8")) % VECTOR_DIM


def item_vector(item: Item) -> NDArray[np.float32]:
    """A hashed bag of the item's category, tags and title words, L2-normalized.

    Two items share direction when they share category, tags or title words.
    """
    vec = np.zeros(VECTOR_DIM, dtype=np.float32)
    vec[_bucket("c:" + item.category.casefold())] += 2.0
    for tag in item.tags:
        vec[_bucket("t:" + tag.casefold())] += 1.0
    for word in tokenize(item.title):
        vec[_bucket("w:" + word)] += 0.5
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


def item_tokens(item: Item) -> tuple[str, ...]:
    """The searchable tokens of an item: its title, category and tags."""
    return tokenize(" ".join((item.title, item.category, *item.tags)))


Vectorizer = Callable[[Sequence[Item]], NDArray[np.float32]]


def hashed_vectors(items: Sequence[Item]) -> NDArray[np.float32]:
    """The model-free vectorizer: hashed bags of words (used when no model is given)."""
    if not items:
        return np.zeros((0, VECTOR_DIM), dtype=np.float32)
    return np.stack([item_vector(i) for i in items])


@dataclass(frozen=True, slots=True)
class CatalogIndex:
    """One consistent, read-only view of the active catalog, shared by all readers.

    Rows are active (not withdrawn) items; ``known`` also holds withdrawn items, whose
    category and tags still update a user's affinities.
    """

    version: int
    ids: tuple[str, ...]
    row_of: dict[str, int]
    known: dict[str, Item]
    vectors: NDArray[np.float32]
    categories: tuple[str, ...]
    tags: tuple[tuple[str, ...], ...]
    popularity: NDArray[np.float32]
    popular_rows: NDArray[np.int32]
    token_rows: dict[str, NDArray[np.int32]]
    category_rows: dict[str, NDArray[np.int32]]

    def __len__(self) -> int:
        return len(self.ids)

    def item(self, item_id: str) -> Item | None:
        return self.known.get(item_id)

    def rows_for_token(self, token: str) -> NDArray[np.int32]:
        return self.token_rows.get(token, _EMPTY_ROWS)

    def rows_for_category(self, category: str) -> NDArray[np.int32]:
        """Active rows of a category, most popular first."""
        return self.category_rows.get(category, _EMPTY_ROWS)

    @classmethod
    def build(
        cls,
        items: Iterable[Item],
        version: int = 0,
        vectors_of: Callable[[list[Item]], NDArray[np.float32]] = hashed_vectors,
    ) -> CatalogIndex:
        """Index the active items; ``vectors_of`` gives their vectors, one row per item."""
        known = {item.item_id: item for item in items}
        active = sorted((i for i in known.values() if not i.withdrawn), key=lambda i: i.item_id)
        n = len(active)
        vectors = np.ascontiguousarray(vectors_of(active), dtype=np.float32)
        raw_pop = np.zeros(n, dtype=np.float32)
        token_lists: dict[str, list[int]] = {}
        cat_lists: dict[str, list[int]] = {}
        for row, item in enumerate(active):
            raw_pop[row] = item.popularity
            for token in item_tokens(item):
                token_lists.setdefault(token, []).append(row)
            cat_lists.setdefault(item.category, []).append(row)
        log_pop = np.log1p(raw_pop)
        top = float(log_pop.max()) if n else 0.0
        popularity = (log_pop / top if top > 0 else log_pop).astype(np.float32)
        # Stable sort: equal popularity keeps item-id order, so rankings are deterministic.
        popular_rows = np.argsort(-popularity, kind="stable").astype(np.int32)
        category_rows = {
            cat: np.array(sorted(rows, key=lambda r: -popularity[r]), dtype=np.int32)
            for cat, rows in cat_lists.items()
        }
        return cls(
            version=version,
            ids=tuple(i.item_id for i in active),
            row_of={i.item_id: row for row, i in enumerate(active)},
            known=known,
            vectors=vectors,
            categories=tuple(i.category for i in active),
            tags=tuple(i.tags for i in active),
            popularity=popularity,
            popular_rows=popular_rows,
            token_rows={t: np.array(r, dtype=np.int32) for t, r in token_lists.items()},
            category_rows=category_rows,
        )


class Catalog:
    """Thread-safe holder of the catalog: a follower thread writes, the worker reads snapshots.

    Writers call :meth:`upsert`/:meth:`remove`; :meth:`publish` rebuilds the index when something
    changed. Readers take :attr:`index`, a reference swap, so they never see a half-built index.
    """

    def __init__(self, vectorizer: Vectorizer = hashed_vectors) -> None:
        self._items: dict[str, Item] = {}
        self._vectorizer = vectorizer
        # Vectors are cached per item value, so a publish only encodes new or changed items.
        self._vectors: dict[Item, NDArray[np.float32]] = {}
        self._lock = threading.Lock()
        self._dirty = False
        self._version = 0
        self._index = CatalogIndex.build((), version=0, vectors_of=self._vectors_of)

    def _vectors_of(self, items: list[Item]) -> NDArray[np.float32]:
        missing = [i for i in items if i not in self._vectors]
        if missing:
            for item, vector in zip(missing, self._vectorizer(missing), strict=True):
                self._vectors[item] = vector
        if not items:
            return self._vectorizer([])
        return np.stack([self._vectors[i] for i in items])

    @property
    def index(self) -> CatalogIndex:
        return self._index

    def upsert(self, item: Item) -> None:
        with self._lock:
            if self._items.get(item.item_id) != item:
                self._items[item.item_id] = item
                self._dirty = True

    def remove(self, item_id: str) -> None:
        """A tombstone: the item is gone, from recommendations and from affinity updates."""
        with self._lock:
            if self._items.pop(item_id, None) is not None:
                self._dirty = True

    def publish(self) -> bool:
        """Rebuild and swap in the index if anything changed since the last publish."""
        with self._lock:
            if not self._dirty:
                return False
            self._dirty = False
            self._version += 1
            snapshot = list(self._items.values())
            version = self._version
        index = CatalogIndex.build(snapshot, version=version, vectors_of=self._vectors_of)
        live = {i for i in snapshot}
        self._vectors = {i: v for i, v in self._vectors.items() if i in live}
        self._index = index
        return True
