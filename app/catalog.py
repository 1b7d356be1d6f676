"""The in-memory item catalog: ``Catalog`` (mutable) publishes ``CatalogIndex`` snapshots."""

from __future__ import annotations

import gc
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from app.records import Item, item_genres
from app.settings import Settings
from app.text import tokenize
from app.vector_index import VectorIndex, build_vector_index

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
class IndexOptions:
    """How a snapshot is indexed: posting-list bound and similarity-search index choice."""

    posting_limit: int = 2000
    exact_below: int = 50_000
    nprobe: int = 0  # 0: the IVF index's own default


def index_options(settings: Settings) -> IndexOptions:
    return IndexOptions(
        posting_limit=settings.posting_limit,
        exact_below=settings.ann_exact_below,
        nprobe=settings.ann_nprobe,
    )


@dataclass(frozen=True, slots=True)
class CatalogIndex:
    """One consistent, read-only view of the active catalog, shared by all readers.

    Rows are active (not withdrawn) items; ``known`` also holds withdrawn items, whose
    category and tags still update a user's affinities. ``vectors`` is one contiguous float32
    matrix, row-aligned with ``ids``; ``neighbours`` searches it.
    """

    version: int
    ids: tuple[str, ...]
    row_of: dict[str, int]
    known: dict[str, Item]
    vectors: NDArray[np.float32]
    neighbours: VectorIndex
    category_codes: NDArray[np.int32]
    category_code: dict[str, int]
    popularity: NDArray[np.float32]
    popular_rows: NDArray[np.int32]
    token_rows: dict[str, NDArray[np.int32]]
    category_rows: dict[str, NDArray[np.int32]]
    # Every row's genres (item_genres), compressed: row r's genre codes are
    # genre_members[genre_offsets[r]:genre_offsets[r + 1]].
    genre_code: dict[str, int]
    genre_offsets: NDArray[np.int64]
    genre_members: NDArray[np.int32]
    # Which item encoder made ``vectors`` (a model version): a model must rank with the item
    # vectors of its own encoder, so a hot reload switches when the index says so.
    encoder_tag: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def item(self, item_id: str) -> Item | None:
        return self.known.get(item_id)

    def rows_for_token(self, token: str) -> NDArray[np.int32]:
        """Active rows whose text has ``token``, most popular first (at most posting_limit)."""
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
        tokens_of: Callable[[Item], tuple[str, ...]] = item_tokens,
        options: IndexOptions = IndexOptions(),  # noqa: B008 - frozen, shared safely
        encoder_tag: str = "",
    ) -> CatalogIndex:
        """Index the active items; ``vectors_of`` gives their vectors, one row per item."""
        known = {item.item_id: item for item in items}
        active = sorted((i for i in known.values() if not i.withdrawn), key=lambda i: i.item_id)
        n = len(active)
        vectors = np.ascontiguousarray(vectors_of(active), dtype=np.float32)
        # float64 until the log: a hostile popularity of 1e308 is finite there, not inf (whose
        # inf / inf would put NaN into the model's features).
        raw_pop = np.fromiter((i.popularity for i in active), dtype=np.float64, count=n)
        log_pop = np.log1p(raw_pop)
        top = float(log_pop.max()) if n else 0.0
        popularity = (log_pop / top if top > 0 else log_pop).astype(np.float32)
        # Stable sort: equal popularity keeps item-id order, so rankings are deterministic.
        popular_rows = np.argsort(-popularity, kind="stable").astype(np.int32)
        # Rank of each row in popularity order: posting lists sort by it, so they come out most
        # popular first with the same tie-break as popular_rows.
        pop_rank = np.empty(n, dtype=np.int64)
        pop_rank[popular_rows] = np.arange(n)
        category_code: dict[str, int] = {}
        codes = np.fromiter(
            (category_code.setdefault(i.category, len(category_code)) for i in active),
            dtype=np.int32,
            count=n,
        )
        genre_code: dict[str, int] = {}
        members = [
            [genre_code.setdefault(g, len(genre_code)) for g in item_genres(i)] for i in active
        ]
        genre_offsets = np.zeros(n + 1, dtype=np.int64)
        genre_offsets[1:] = np.cumsum(np.fromiter(map(len, members), dtype=np.int64, count=n))
        genre_members = np.fromiter(
            (c for m in members for c in m), dtype=np.int32, count=int(genre_offsets[-1])
        )
        token_lists: dict[str, list[int]] = {}
        for row, item in enumerate(active):
            for token in tokens_of(item):
                token_lists.setdefault(token, []).append(row)
        limit = options.posting_limit

        def by_popularity(rows: NDArray[np.int64], cap: int | None) -> NDArray[np.int32]:
            ordered = rows[np.argsort(pop_rank[rows], kind="stable")]
            return ordered[:cap].astype(np.int32)

        category_rows: dict[str, NDArray[np.int32]] = {}
        if n:
            by_code = np.argsort(codes, kind="stable")
            bounds = np.searchsorted(codes[by_code], np.arange(len(category_code) + 1))
            for name, code in category_code.items():
                rows = by_code[bounds[code] : bounds[code + 1]]
                category_rows[name] = by_popularity(rows, None)
        return cls(
            version=version,
            ids=tuple(i.item_id for i in active),
            row_of={i.item_id: row for row, i in enumerate(active)},
            known=known,
            vectors=vectors,
            neighbours=build_vector_index(
                vectors, exact_below=options.exact_below, nprobe=options.nprobe or None
            ),
            category_codes=codes,
            category_code=category_code,
            popularity=popularity,
            popular_rows=popular_rows,
            token_rows={
                t: by_popularity(np.array(r, dtype=np.int64), limit) for t, r in token_lists.items()
            },
            category_rows=category_rows,
            genre_code=genre_code,
            genre_offsets=genre_offsets,
            genre_members=genre_members,
            encoder_tag=encoder_tag,
        )


class Catalog:
    """Thread-safe holder of the catalog: a follower thread writes, the worker reads snapshots.

    Writers call :meth:`upsert`/:meth:`remove`; :meth:`publish` rebuilds the index when something
    changed. Readers take :attr:`index`, a reference swap, so they never see a half-built index.
    """

    def __init__(
        self,
        vectorizer: Vectorizer = hashed_vectors,
        options: IndexOptions = IndexOptions(),  # noqa: B008 - frozen, shared safely
        encoder_tag: str = "",
    ) -> None:
        self._items: dict[str, Item] = {}
        self._vectorizer = vectorizer
        self._encoder_tag = encoder_tag
        self._options = options
        # Tokens are cached per item value and vectors are taken over from the previous
        # snapshot's matrix, so a publish only encodes new or changed items (and no per-item
        # array objects are kept: at a million items they would cost hundreds of MB).
        self._tokens: dict[Item, tuple[str, ...]] = {}
        self._lock = threading.Lock()
        self._dirty = False
        self._version = 0
        self._index = self._build([], 0, vectorizer, encoder_tag)

    def _build(
        self, items: list[Item], version: int, vectorizer: Vectorizer, encoder_tag: str
    ) -> CatalogIndex:
        def vectors_of(active: list[Item]) -> NDArray[np.float32]:
            return self._vectors_of(active, vectorizer, encoder_tag)

        return CatalogIndex.build(
            items,
            version=version,
            vectors_of=vectors_of,
            tokens_of=self._tokens_of,
            options=self._options,
            encoder_tag=encoder_tag,
        )

    def _tokens_of(self, item: Item) -> tuple[str, ...]:
        tokens = self._tokens.get(item)
        if tokens is None:
            tokens = self._tokens[item] = item_tokens(item)
        return tokens

    def _vectors_of(
        self, items: list[Item], vectorizer: Vectorizer, encoder_tag: str
    ) -> NDArray[np.float32]:
        # The first (empty) snapshot is built before there is a previous one.
        previous = getattr(self, "_index", None)
        if previous is None or not len(previous) or previous.encoder_tag != encoder_tag:
            return vectorizer(items)  # nothing to reuse, or another encoder's vectors
        # Rows of the previous snapshot whose item is unchanged keep their vector.
        reuse = np.fromiter(
            (
                previous.row_of.get(i.item_id, -1) if previous.known.get(i.item_id) == i else -1
                for i in items
            ),
            dtype=np.int64,
            count=len(items),
        )
        fresh = np.flatnonzero(reuse < 0)
        if fresh.size == len(items):
            return vectorizer(items)
        matrix = np.empty((len(items), previous.vectors.shape[1]), dtype=np.float32)
        kept = np.flatnonzero(reuse >= 0)
        matrix[kept] = previous.vectors[reuse[kept]]
        if fresh.size:
            matrix[fresh] = vectorizer([items[i] for i in fresh.tolist()])
        return matrix

    @property
    def index(self) -> CatalogIndex:
        return self._index

    def set_vectorizer(self, vectorizer: Vectorizer, encoder_tag: str) -> None:
        """Re-encode every item with another model's encoder at the next :meth:`publish`;
        until then readers keep the current index, whose tag names the encoder it was made
        with."""
        with self._lock:
            self._vectorizer = vectorizer
            self._encoder_tag = encoder_tag
            self._dirty = True

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
            vectorizer, encoder_tag = self._vectorizer, self._encoder_tag
        index = self._build(snapshot, version, vectorizer, encoder_tag)
        live = set(snapshot)
        self._tokens = {i: t for i, t in self._tokens.items() if i in live}
        self._index = index
        # The index holds millions of long-lived objects on a big catalog; the cyclic garbage
        # collector would walk them all on every full collection (pauses of seconds, and CPU
        # while events wait). They are freed by reference counting when a snapshot is
        # replaced; only cycles among them (there are none) would need the collector.
        gc.freeze()
        return True
