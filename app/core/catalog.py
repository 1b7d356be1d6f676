"""The in-memory item catalog: ``Catalog`` (mutable) publishes ``CatalogIndex`` snapshots."""

from __future__ import annotations

import ctypes
import dataclasses
import gc
import threading
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
from numpy.typing import NDArray

from app.core.item_neighbours import NEIGHBOURS, WARM_ROWS, ItemNeighbours
from app.core.records import Item
from app.core.settings import Settings
from app.core.text import tokenize
from app.core.vector_index import VectorIndex, build_vector_index

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
    # Rows per item-to-item neighbour list (app.core.item_neighbours); 0: none.
    item_neighbours: int = NEIGHBOURS


def index_options(settings: Settings) -> IndexOptions:
    return IndexOptions(
        posting_limit=settings.posting_limit,
        exact_below=settings.ann_exact_below,
        nprobe=settings.ann_nprobe,
        item_neighbours=settings.item_neighbours,
    )


def _searches(
    vectors: NDArray[np.float32], options: IndexOptions, popular_rows: NDArray[np.int32]
) -> tuple[VectorIndex, ItemNeighbours | None]:
    """The search over ``vectors`` and the neighbour lists built with it (small catalogs: every
    list now, in the building thread; large ones: the most popular rows' now, the rest on
    first use)."""
    search = build_vector_index(
        vectors, exact_below=options.exact_below, nprobe=options.nprobe or None
    )
    lists = None
    if options.item_neighbours > 0 and len(vectors):
        lists = ItemNeighbours(
            vectors, search, options.item_neighbours, warm=popular_rows[:WARM_ROWS]
        )
    return search, lists


# Strings are stored as UTF-8; "surrogatepass" keeps any Python str (a JSON "\ud800" escape
# decodes to a lone surrogate) round-tripping exactly. Its byte order is the str order.
_UTF8 = "utf-8"
_ERRORS = "surrogatepass"
# Rows encoded, tokenized (or copied) per step while a snapshot is built: bounds the Item
# objects alive at once, and so the peak memory of a build.
BUILD_BATCH = 8192
# Pending changes folded into a columnar chunk once this many accumulate: a preload of a
# million records never holds a million Item objects.
STAGE_AT = 50_000


def _encode(text: str) -> bytes:
    return text.encode(_UTF8, _ERRORS)


def _cells(values: NDArray[Any]) -> memoryview:
    # Indexing a memoryview gives Python ints and floats, without numpy scalars in between.
    return values.data


def _readonly(array: NDArray[Any]) -> NDArray[Any]:
    array.setflags(write=False)
    return array


class StringColumn(Sequence[str]):
    """Strings packed into one UTF-8 blob: string ``i`` is ``blob[offsets[i]:offsets[i + 1]]``.

    A million short strings cost their bytes plus 8 per offset, not a Python object each.

    >>> column = StringColumn.of(["b", "a"])
    >>> list(column), column[1], column == ("b", "a")
    (['b', 'a'], 'a', True)
    """

    __slots__ = ("_blob", "_offsets", "_starts")

    def __init__(self, blob: bytes, offsets: NDArray[np.int64]) -> None:
        self._blob = blob
        self._offsets = _readonly(offsets)
        self._starts = _cells(offsets)  # Python ints per item, without numpy scalars

    @classmethod
    def of(cls, strings: Iterable[str]) -> StringColumn:
        blob = bytearray()
        ends = array("q", [0])
        for text in strings:
            blob += _encode(text)
            ends.append(len(blob))
        return cls(bytes(blob), np.frombuffer(ends, dtype=np.int64).copy())

    def __len__(self) -> int:
        return len(self._starts) - 1

    def raw(self, i: int) -> bytes:
        starts = self._starts
        return self._blob[starts[i] : starts[i + 1]]

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[str, ...]: ...

    def __getitem__(self, i: int | slice) -> str | tuple[str, ...]:
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(len(self))))
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("string column index out of range")
        starts = self._starts
        return self._blob[starts[i] : starts[i + 1]].decode(_UTF8, _ERRORS)

    def __iter__(self) -> Iterator[str]:
        blob, starts = self._blob, self._starts
        for i in range(len(self)):
            yield blob[starts[i] : starts[i + 1]].decode(_UTF8, _ERRORS)

    def __eq__(self, other: object) -> bool:
        # Compares equal to any sequence of the same strings (the snapshot's ids were a tuple).
        if isinstance(other, StringColumn):
            return self._blob == other._blob and np.array_equal(self._offsets, other._offsets)
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to tuples, so it cannot hash like one

    def __repr__(self) -> str:
        return f"StringColumn({len(self)} strings, {len(self._blob)} bytes)"

    def take(self, positions: NDArray[np.int64]) -> StringColumn:
        """The strings at ``positions``, in that order."""
        starts, ends = self._offsets[positions], self._offsets[positions + 1]
        offsets = np.zeros(positions.shape[0] + 1, dtype=np.int64)
        np.cumsum(ends - starts, out=offsets[1:])
        source = np.frombuffer(self._blob, dtype=np.uint8)
        out = np.empty(int(offsets[-1]), dtype=np.uint8)
        # A step at a time: the byte-index array of a whole column would be 8x its size.
        for lo in range(0, positions.shape[0], BUILD_BATCH * 8):
            hi = min(lo + BUILD_BATCH * 8, positions.shape[0])
            lengths = ends[lo:hi] - starts[lo:hi]
            base = offsets[lo:hi]
            index = np.arange(int(offsets[hi] - offsets[lo]), dtype=np.int64) + offsets[lo]
            index += np.repeat(starts[lo:hi] - base, lengths)
            out[offsets[lo] : offsets[hi]] = source[index]
        return StringColumn(out.tobytes(), offsets)

    @staticmethod
    def concat(columns: Sequence[StringColumn]) -> StringColumn:
        parts = [
            c._offsets[:-1] + shift for c, shift in zip(columns, _shifts(columns), strict=True)
        ]
        total = sum(len(c._blob) for c in columns)
        offsets = np.concatenate([*parts, np.array([total], dtype=np.int64)])
        return StringColumn(b"".join(c._blob for c in columns), offsets)


def _shifts(columns: Sequence[StringColumn]) -> list[int]:
    shifts, at = [], 0
    for c in columns:
        shifts.append(at)
        at += len(c._blob)
    return shifts


class StringLookup:
    """Position of a string in a :class:`StringColumn`: an open-addressing hash table of int32
    positions (about 8 bytes per string) instead of a dict (about 100 with its key objects).

    Keyed by Python's ``hash``, which is salted per process: the table is built, and only used,
    in the process that holds it.

    >>> StringLookup(StringColumn.of(["x", "y"])).find("y")
    1
    """

    __slots__ = ("_blob", "_column", "_mask", "_slots", "_starts")

    def __init__(self, column: StringColumn) -> None:
        n = len(column)
        size = 1 << max(3, (2 * n).bit_length())  # at most half full: short probe runs
        mask = size - 1
        slots = np.full(size, -1, dtype=np.int32)
        at = np.fromiter((hash(s) for s in column), dtype=np.int64, count=n) & mask
        waiting = np.arange(n, dtype=np.int64)
        # Linear probing, all strings at once: each round, every string still waiting claims
        # its slot if free (the first claimant wins) and the rest move one slot on. A string
        # only passes slots that stay occupied, so a lookup walking from its hash finds it.
        while waiting.size:
            here = at[waiting]
            free = np.flatnonzero(slots[here] < 0)
            taken, first = np.unique(here[free], return_index=True)
            winners = free[first]
            slots[taken] = waiting[winners]
            left = np.ones(waiting.size, dtype=np.bool_)
            left[winners] = False
            waiting = waiting[left]
            at[waiting] = (at[waiting] + 1) & mask
        self._column = column
        self._blob = column._blob
        self._starts = column._starts
        self._slots = _cells(slots)
        self._mask = mask

    def find(self, key: str) -> int:
        """The position of ``key``, or -1."""
        slots, starts, blob, mask = self._slots, self._starts, self._blob, self._mask
        i = hash(key) & mask
        raw: bytes | None = None
        while True:
            p = slots[i]
            if p < 0:
                return -1
            if raw is None:
                raw = _encode(key)
            if blob[starts[p] : starts[p + 1]] == raw:
                return int(p)
            i = (i + 1) & mask


@dataclass(frozen=True, slots=True)
class ItemTable:
    """Items as columns, sorted by id (no Python object per item); ``gone`` marks tombstones
    in a chunk of pending changes (a published table has none)."""

    ids: StringColumn
    titles: StringColumn
    category: NDArray[np.int32]  # codes into ``categories``
    categories: tuple[str, ...]
    tag_offsets: NDArray[np.int64]  # row i's tags: tag_codes[tag_offsets[i]:tag_offsets[i + 1]]
    tag_codes: NDArray[np.int32]  # codes into ``tags``
    tags: tuple[str, ...]
    price: NDArray[np.float64]
    has_price: NDArray[np.bool_]
    popularity: NDArray[np.float64]
    withdrawn: NDArray[np.bool_]
    gone: NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def of(cls, changes: Iterable[tuple[str, Item | None]]) -> ItemTable:
        """A table of ``(item_id, item)`` pairs in the given order; None is a tombstone."""
        ids: list[str] = []
        titles: list[str] = []
        category, tag_codes = array("i"), array("i")
        tag_ends = array("q", [0])
        price, popularity = array("d"), array("d")
        has_price, withdrawn, gone = array("b"), array("b"), array("b")
        category_code: dict[str, int] = {}
        tag_code: dict[str, int] = {}
        for item_id, item in changes:
            ids.append(item_id)
            if item is None:
                titles.append("")
                category.append(category_code.setdefault("", len(category_code)))
                price.append(0.0)
                popularity.append(0.0)
                has_price.append(0)
                withdrawn.append(0)
                gone.append(1)
            else:
                titles.append(item.title)
                category.append(category_code.setdefault(item.category, len(category_code)))
                tag_codes.extend(tag_code.setdefault(t, len(tag_code)) for t in item.tags)
                price.append(0.0 if item.price is None else item.price)
                has_price.append(item.price is not None)
                popularity.append(item.popularity)
                withdrawn.append(item.withdrawn)
                gone.append(0)
            tag_ends.append(len(tag_codes))
        return cls(
            ids=StringColumn.of(ids),
            titles=StringColumn.of(titles),
            category=np.frombuffer(category, dtype=np.int32).copy(),
            categories=tuple(category_code),
            tag_offsets=np.frombuffer(tag_ends, dtype=np.int64).copy(),
            tag_codes=np.frombuffer(tag_codes, dtype=np.int32).copy(),
            tags=tuple(tag_code),
            price=np.frombuffer(price, dtype=np.float64).copy(),
            has_price=np.frombuffer(has_price, dtype=np.int8).astype(np.bool_),
            popularity=np.frombuffer(popularity, dtype=np.float64).copy(),
            withdrawn=np.frombuffer(withdrawn, dtype=np.int8).astype(np.bool_),
            gone=np.frombuffer(gone, dtype=np.int8).astype(np.bool_),
        )

    def take(self, positions: NDArray[np.int64]) -> ItemTable:
        starts = self.tag_offsets[positions]
        lengths = self.tag_offsets[positions + 1] - starts
        tag_offsets = np.zeros(positions.shape[0] + 1, dtype=np.int64)
        np.cumsum(lengths, out=tag_offsets[1:])
        entry = np.arange(int(tag_offsets[-1]), dtype=np.int64)
        entry += np.repeat(starts - tag_offsets[:-1], lengths)
        return ItemTable(
            ids=self.ids.take(positions),
            titles=self.titles.take(positions),
            category=self.category[positions],
            categories=self.categories,
            tag_offsets=tag_offsets,
            tag_codes=self.tag_codes[entry],
            tags=self.tags,
            price=self.price[positions],
            has_price=self.has_price[positions],
            popularity=self.popularity[positions],
            withdrawn=self.withdrawn[positions],
            gone=self.gone[positions],
        )

    @staticmethod
    def concat(tables: Sequence[ItemTable]) -> ItemTable:
        """The tables one after another, their category and tag codes made one vocabulary."""
        category_code: dict[str, int] = {}
        tag_code: dict[str, int] = {}
        categories, tag_codes, tag_offsets = [], [], [np.zeros(1, dtype=np.int64)]
        shift = 0
        for t in tables:
            remap = np.array(
                [category_code.setdefault(c, len(category_code)) for c in t.categories] or [0],
                dtype=np.int32,
            )
            categories.append(remap[t.category])
            remap = np.array(
                [tag_code.setdefault(g, len(tag_code)) for g in t.tags] or [0], dtype=np.int32
            )
            tag_codes.append(remap[t.tag_codes])
            tag_offsets.append(t.tag_offsets[1:] + shift)
            shift += int(t.tag_offsets[-1])
        return ItemTable(
            ids=StringColumn.concat([t.ids for t in tables]),
            titles=StringColumn.concat([t.titles for t in tables]),
            category=np.concatenate(categories),
            categories=tuple(category_code),
            tag_offsets=np.concatenate(tag_offsets),
            tag_codes=np.concatenate(tag_codes),
            tags=tuple(tag_code),
            price=np.concatenate([t.price for t in tables]),
            has_price=np.concatenate([t.has_price for t in tables]),
            popularity=np.concatenate([t.popularity for t in tables]),
            withdrawn=np.concatenate([t.withdrawn for t in tables]),
            gone=np.concatenate([t.gone for t in tables]),
        )

    def latest(self) -> tuple[ItemTable, NDArray[np.int64]]:
        """Each id once, sorted: its last row, tombstones dropped; and where each row came from."""
        n = len(self)
        ids = self.ids
        keys = [ids.raw(i) for i in range(n)]
        gone = self.gone.tolist()
        # Stable, and quick on the sorted runs that concatenated tables are.
        order = sorted(range(n), key=keys.__getitem__)
        keep = [
            p
            for k, p in enumerate(order)
            if (k + 1 == n or keys[order[k + 1]] != keys[p]) and not gone[p]
        ]
        del keys, order, gone
        positions = np.array(keep, dtype=np.int64)
        return self.take(positions), positions


_EMPTY_TABLE = ItemTable.of(())


class _Items:
    """Reads items back out of a published table, building an :class:`Item` only on demand."""

    __slots__ = (
        "_category",
        "_has_price",
        "_lookup",
        "_popularity",
        "_price",
        "_table",
        "_tag_codes",
        "_tag_ends",
        "_withdrawn",
    )

    def __init__(self, table: ItemTable) -> None:
        self._table = table
        self._lookup = StringLookup(table.ids)
        self._category = _cells(table.category)
        self._tag_ends = _cells(table.tag_offsets)
        self._tag_codes = _cells(table.tag_codes)
        self._price = _cells(table.price)
        self._has_price = _cells(table.has_price.view(np.uint8))
        self._popularity = _cells(table.popularity)
        self._withdrawn = _cells(table.withdrawn.view(np.uint8))

    def find(self, item_id: str) -> int:
        return self._lookup.find(item_id)

    def at(self, p: int) -> Item:
        t = self._table
        ends = self._tag_ends
        tag_codes, tags = self._tag_codes, t.tags
        return Item(
            t.ids[p],
            t.titles[p],
            t.categories[self._category[p]],
            tuple([tags[c] for c in tag_codes[ends[p] : ends[p + 1]]]),
            float(self._price[p]) if self._has_price[p] else None,
            float(self._popularity[p]),
            bool(self._withdrawn[p]),
        )


class KnownItems(Mapping[str, Item]):
    """Every known item (withdrawn ones too) by id; each :class:`Item` is built when asked for."""

    __slots__ = ("_items",)

    def __init__(self, items: _Items) -> None:
        self._items = items

    def __getitem__(self, item_id: str) -> Item:
        p = self._items.find(item_id)
        if p < 0:
            raise KeyError(item_id)
        return self._items.at(p)

    def get(self, item_id: str, default: Any = None) -> Any:
        p = self._items.find(item_id)
        return default if p < 0 else self._items.at(p)

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and self._items.find(item_id) >= 0

    def __len__(self) -> int:
        return len(self._items._table)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items._table.ids)


class RowOf(Mapping[str, int]):
    """The row of each active item id (a read-only mapping over the columnar table)."""

    __slots__ = ("_ids", "_items", "_row")

    def __init__(self, items: _Items, row_of_position: NDArray[np.int32], ids: Sequence[str]):
        self._items = items
        self._row = _cells(_readonly(row_of_position))
        self._ids = ids

    def __getitem__(self, item_id: str) -> int:
        row: int = self.get(item_id, -1)
        if row < 0:
            raise KeyError(item_id)
        return row

    def get(self, item_id: str, default: Any = None) -> Any:
        p = self._items.find(item_id)
        if p < 0:
            return default
        row = int(self._row[p])
        return default if row < 0 else row

    def __contains__(self, item_id: object) -> bool:
        return isinstance(item_id, str) and self.get(item_id, -1) >= 0

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)


class ActiveIds(Sequence[str]):
    """The active rows' ids, row-aligned with the snapshot's matrices."""

    __slots__ = ("_ids", "_position")

    def __init__(self, ids: StringColumn, position: NDArray[np.int64]) -> None:
        self._ids = ids
        self._position = _cells(_readonly(position))

    def __len__(self) -> int:
        return len(self._position)

    @overload
    def __getitem__(self, row: int) -> str: ...

    @overload
    def __getitem__(self, row: slice) -> tuple[str, ...]: ...

    def __getitem__(self, row: int | slice) -> str | tuple[str, ...]:
        if isinstance(row, slice):
            return tuple(self[r] for r in range(*row.indices(len(self))))
        return self._ids[self._position[row]]

    def __iter__(self) -> Iterator[str]:
        ids = self._ids
        return (ids[p] for p in self._position)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to tuples, so it cannot hash like one

    def __repr__(self) -> str:
        return f"ActiveIds({len(self)} rows)"


# Catalogs of up to this many items (withdrawn ones included) also keep the hot lookups as
# Python objects: ids by row, rows by id and items by id, tens of MiB at this size. Larger ones
# keep only the columns: a million items as objects cost gigabytes.
MATERIALIZE_BELOW = 250_000


@dataclass(frozen=True, slots=True)
class CatalogIndex:
    """One consistent, read-only view of the active catalog, shared by all readers.

    Rows are active (not withdrawn) items; ``known`` also holds withdrawn items, whose
    category and tags still update a user's affinities. Items are kept as columns
    (:class:`ItemTable`), and :meth:`item` builds an :class:`Item` when asked: a million items
    as Python objects cost gigabytes. ``vectors`` is one contiguous float32 matrix, row-aligned
    with ``ids``; ``neighbours`` searches it.
    """

    version: int
    table: ItemTable
    # Tuples and dicts up to MATERIALIZE_BELOW items, views over the columns above.
    ids: Sequence[str]
    row_of: Mapping[str, int]
    known: Mapping[str, Item]
    # Row r is table row positions[r].
    positions: NDArray[np.int64]
    vectors: NDArray[np.float32]
    neighbours: VectorIndex
    category_codes: NDArray[np.int32]
    category_code: dict[str, int]
    popularity: NDArray[np.float32]
    popular_rows: NDArray[np.int32]
    # Posting lists, compressed: token t's rows (most popular first, at most posting_limit)
    # are token_members[token_offsets[t]:token_offsets[t + 1]]; ``tokens`` finds t.
    tokens: StringLookup
    token_offsets: NDArray[np.int64]
    token_members: NDArray[np.int32]
    category_rows: dict[str, NDArray[np.int32]]
    # Every row's genres (item_genres), compressed: row r's genre codes are
    # genre_members[genre_offsets[r]:genre_offsets[r + 1]].
    genre_code: dict[str, int]
    genre_offsets: NDArray[np.int64]
    genre_members: NDArray[np.int32]
    # Which item encoder made ``vectors`` (a model version): a model must rank with the item
    # vectors of its own encoder, so a hot reload switches when the index says so.
    encoder_tag: str = ""
    # The same rows with the shadow model's item vectors (Catalog.set_shadow), published with
    # them in one swap: the shadow ranks a batch against the catalog the serving model sees.
    shadow: CatalogIndex | None = None
    # Each row's nearest rows by ``vectors`` (app.core.item_neighbours): "similar items" from
    # the recent items' lists; None: a search of the whole matrix per event (ITEM_NEIGHBOURS=0).
    item_lists: ItemNeighbours | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def item(self, item_id: str) -> Item | None:
        item: Item | None = self.known.get(item_id)
        return item

    def rows_for_token(self, token: str) -> NDArray[np.int32]:
        """Active rows whose text has ``token``, most popular first (at most posting_limit)."""
        t = self.tokens.find(token)
        if t < 0:
            return _EMPTY_ROWS
        return self.token_members[self.token_offsets[t] : self.token_offsets[t + 1]]

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
        """Index the active items; ``vectors_of`` gives their vectors, one row per item (it is
        called a batch of items at a time)."""
        known = {item.item_id: item for item in items}
        table, _ = ItemTable.of(known.items()).latest()
        del known
        return cls.from_table(
            table,
            version=version,
            vectors_of=vectors_of,
            tokens_of=tokens_of,
            options=options,
            encoder_tag=encoder_tag,
        )

    @classmethod
    def from_table(
        cls,
        table: ItemTable,
        *,
        version: int,
        vectors_of: Callable[[list[Item]], NDArray[np.float32]],
        tokens_of: Callable[[Item], tuple[str, ...]] = item_tokens,
        options: IndexOptions,
        encoder_tag: str,
        reuse: tuple[NDArray[np.int64], NDArray[np.float32]] | None = None,
    ) -> CatalogIndex:
        """Index a sorted, tombstone-free table. ``reuse``: per active row, a row of the given
        matrix whose vector it keeps (-1: encode it)."""
        items = _Items(table)
        positions = np.flatnonzero(~table.withdrawn).astype(np.int64)
        n = positions.shape[0]
        row_of_position = np.full(len(table), -1, dtype=np.int32)
        row_of_position[positions] = np.arange(n, dtype=np.int32)
        # float64 until the log: a hostile popularity of 1e308 is finite there, not inf (whose
        # inf / inf would put NaN into the model's features).
        log_pop = np.log1p(table.popularity[positions])
        top = float(log_pop.max()) if n else 0.0
        popularity = (log_pop / top if top > 0 else log_pop).astype(np.float32)
        # Stable sort: equal popularity keeps item-id order, so rankings are deterministic.
        popular_rows = np.argsort(-popularity, kind="stable").astype(np.int32)
        # Rank of each row in popularity order: posting lists sort by it, so they come out most
        # popular first with the same tie-break as popular_rows.
        pop_rank = np.empty(n, dtype=np.int64)
        pop_rank[popular_rows] = np.arange(n)
        codes, category_code = _first_seen_codes(table.category[positions], table.categories)
        genre_code, genre_offsets, genre_members = _genres(table, positions)
        vectors, token_codes, token_rows, vocabulary = _encode_rows(
            items, positions, vectors_of, tokens_of, reuse
        )
        token_offsets, token_members = _postings(
            token_codes, token_rows, pop_rank, popular_rows, len(vocabulary), options.posting_limit
        )
        del token_codes, token_rows
        token_column = StringColumn.of(vocabulary)
        del vocabulary
        # The token pairs and the vocabulary's strings were the build's largest temporaries:
        # hand their memory back before the lookup and the searches below allocate theirs.
        _release_free_memory()
        # Before the search index exists: the lookup's temporaries then add to less.
        tokens = StringLookup(token_column)
        category_rows: dict[str, NDArray[np.int32]] = {}
        if n:
            by_code = np.lexsort((pop_rank, codes))
            bounds = np.searchsorted(codes[by_code], np.arange(len(category_code) + 1))
            for name, code in category_code.items():
                category_rows[name] = _readonly(
                    by_code[bounds[code] : bounds[code + 1]].astype(np.int32)
                )
        search, lists = _searches(vectors, options, popular_rows)
        ids: Sequence[str]
        row_of: Mapping[str, int]
        known: Mapping[str, Item]
        if len(table) <= MATERIALIZE_BELOW:
            # Per event the processor and the ranker look items and rows up by id: a dict
            # answers in a tenth of a microsecond, the columns in a few.
            ids = tuple(ActiveIds(table.ids, positions))
            row_of = {item_id: row for row, item_id in enumerate(ids)}
            known = {item_id: items.at(p) for p, item_id in enumerate(table.ids)}
        else:
            ids = ActiveIds(table.ids, positions)
            row_of = RowOf(items, row_of_position, ids)
            known = KnownItems(items)
        return cls(
            version=version,
            table=table,
            ids=ids,
            row_of=row_of,
            known=known,
            positions=positions,
            vectors=vectors,
            neighbours=search,
            item_lists=lists,
            category_codes=codes,
            category_code=category_code,
            popularity=popularity,
            popular_rows=popular_rows,
            tokens=tokens,
            token_offsets=token_offsets,
            token_members=_readonly(token_members),
            category_rows=category_rows,
            genre_code=genre_code,
            genre_offsets=genre_offsets,
            genre_members=genre_members,
            encoder_tag=encoder_tag,
        )


def _first_seen_codes(
    codes: NDArray[np.int32], names: tuple[str, ...]
) -> tuple[NDArray[np.int32], dict[str, int]]:
    """``codes`` renumbered 0, 1, ... in order of first appearance, and the names' new codes."""
    if codes.size == 0:
        return codes.astype(np.int32), {}
    used, first = np.unique(codes, return_index=True)
    order = used[np.argsort(first)]
    remap = np.zeros(len(names), dtype=np.int32)
    remap[order] = np.arange(order.size, dtype=np.int32)
    return remap[codes], {names[c]: i for i, c in enumerate(order.tolist())}


def _genres(
    table: ItemTable, positions: NDArray[np.int64]
) -> tuple[dict[str, int], NDArray[np.int64], NDArray[np.int32]]:
    """Each row's :func:`item_genres` (its category, then its tags, each once) as codes, numbered
    in order of first appearance."""
    n = positions.shape[0]
    name_code: dict[str, int] = {}
    of_category = np.array(
        [name_code.setdefault(c, len(name_code)) for c in table.categories] or [0], dtype=np.int64
    )
    of_tag = np.array(
        [name_code.setdefault(t, len(name_code)) for t in table.tags] or [0], dtype=np.int64
    )
    names = tuple(name_code)
    starts = table.tag_offsets[positions]
    lengths = table.tag_offsets[positions + 1] - starts
    # One entry per (row, category or tag), in row order, the category first.
    per_row = lengths + 1
    total = int(per_row.sum())
    row = np.repeat(np.arange(n, dtype=np.int64), per_row)
    first = np.zeros(n, dtype=np.int64)
    if n:
        np.cumsum(per_row[:-1], out=first[1:])
    slot = np.arange(total, dtype=np.int64) - first[row]
    name = np.empty(total, dtype=np.int64)
    name[first] = of_category[table.category[positions]]
    is_tag = slot > 0
    tag_entry = starts[row[is_tag]] + slot[is_tag] - 1
    name[is_tag] = of_tag[table.tag_codes[tag_entry]]
    # Drop repeats within a row, keeping the first.
    by = np.lexsort((slot, name, row))
    repeat = np.zeros(total, dtype=np.bool_)
    repeat[by[1:]] = (row[by[1:]] == row[by[:-1]]) & (name[by[1:]] == name[by[:-1]])
    keep = ~repeat
    name = name[keep]
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(np.bincount(row[keep], minlength=n))
    members, genre_code = _first_seen_codes(name.astype(np.int32), names)
    return genre_code, offsets, members.astype(np.int32)


def _encode_rows(
    items: _Items,
    positions: NDArray[np.int64],
    vectors_of: Callable[[list[Item]], NDArray[np.float32]],
    tokens_of: Callable[[Item], tuple[str, ...]],
    reuse: tuple[NDArray[np.int64], NDArray[np.float32]] | None,
) -> tuple[NDArray[np.float32], array[int], array[int], list[str]]:
    """The vectors and (token, row) pairs of the active rows, a batch of items at a time."""
    n = positions.shape[0]
    if n == 0:
        return np.ascontiguousarray(vectors_of([]), dtype=np.float32), array("i"), array("i"), []
    vocabulary: dict[str, int] = {}
    token_codes, token_rows = array("i"), array("i")
    matrix: NDArray[np.float32] | None = None
    if reuse is not None:
        previous_rows, previous = reuse
        matrix = np.empty((n, previous.shape[1]), dtype=np.float32)
        kept = np.flatnonzero(previous_rows >= 0)
        matrix[kept] = previous[previous_rows[kept]]
        fresh_mask = previous_rows < 0
    else:
        fresh_mask = np.ones(n, dtype=np.bool_)
    for lo in range(0, n, BUILD_BATCH):
        hi = min(lo + BUILD_BATCH, n)
        batch = [items.at(p) for p in positions[lo:hi].tolist()]
        for row, item in enumerate(batch, start=lo):
            for token in tokens_of(item):
                token_codes.append(vocabulary.setdefault(token, len(vocabulary)))
                token_rows.append(row)
        fresh = np.flatnonzero(fresh_mask[lo:hi])
        if fresh.size:
            vectors = np.asarray(vectors_of([batch[i] for i in fresh.tolist()]), dtype=np.float32)
            if matrix is None:
                matrix = np.empty((n, vectors.shape[1]), dtype=np.float32)
            matrix[lo + fresh] = vectors
    assert matrix is not None  # noqa: S101 - every row is either reused or fresh
    return matrix, token_codes, token_rows, list(vocabulary)


def _postings(
    token_codes: array[int],
    token_rows: array[int],
    pop_rank: NDArray[np.int64],
    popular_rows: NDArray[np.int32],
    n_tokens: int,
    limit: int,
) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """Each token's rows, most popular first (ties by row), at most ``limit``, as CSR arrays.

    One packed key per (token, row) pair, the token's code over the row's popularity rank,
    sorted in place: at a million items there are millions of pairs, and a lexsort's index
    arrays and gathered copies were the build's peak memory.
    """
    codes = np.frombuffer(token_codes, dtype=np.int32) if token_codes else np.zeros(0, np.int32)
    rows = np.frombuffer(token_rows, dtype=np.int32) if token_rows else np.zeros(0, np.int32)
    counts = np.bincount(codes, minlength=n_tokens)
    key = codes.astype(np.int64)
    del codes
    key <<= 32
    # Ranks are below 2**31 (rows are int32), so they fit the key's low half.
    key |= pop_rank.astype(np.int32)[rows]
    del rows
    key.sort()
    kept = np.minimum(counts, limit)
    offsets = np.zeros(n_tokens + 1, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    starts = np.zeros(n_tokens, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    # Entry j of token t's kept rows is key[starts[t] + j].
    take = np.arange(int(offsets[-1]), dtype=np.int64)
    take += np.repeat(starts - offsets[:-1], kept)
    ranks = key[take] & 0xFFFFFFFF
    return _readonly(offsets), popular_rows[ranks]


def _shadow_of(
    index: CatalogIndex,
    shadow: tuple[Vectorizer, str],
    reuse: tuple[NDArray[np.int64], NDArray[np.float32]] | None,
    options: IndexOptions,
) -> CatalogIndex:
    """``index`` with the shadow encoder's vectors (and a search over them): the same rows,
    ids, features and posting lists. ``reuse`` as for :meth:`CatalogIndex.from_table`."""
    vectorizer, tag = shadow
    items = _Items(index.table)
    n = len(index)
    matrix: NDArray[np.float32] | None = None
    fresh = np.arange(n)
    if reuse is not None:
        previous_rows, previous = reuse
        matrix = np.empty((n, previous.shape[1]), dtype=np.float32)
        kept = np.flatnonzero(previous_rows >= 0)
        matrix[kept] = previous[previous_rows[kept]]
        fresh = np.flatnonzero(previous_rows < 0)
    positions = index.positions
    for lo in range(0, fresh.shape[0], BUILD_BATCH):
        rows = fresh[lo : lo + BUILD_BATCH]
        vectors = np.asarray(
            vectorizer([items.at(p) for p in positions[rows].tolist()]), dtype=np.float32
        )
        if matrix is None:
            matrix = np.empty((n, vectors.shape[1]), dtype=np.float32)
        matrix[rows] = vectors
    if matrix is None:  # an empty catalog
        matrix = np.ascontiguousarray(vectorizer([]), dtype=np.float32)
    search, lists = _searches(matrix, options, index.popular_rows)
    return dataclasses.replace(
        index,
        vectors=matrix,
        neighbours=search,
        item_lists=lists,
        encoder_tag=tag,
        shadow=None,
    )


def _release_free_memory() -> None:
    # A build frees hundreds of MB of temporaries; glibc keeps much of it in its heap (its mmap
    # threshold rises after big frees), so the worker's RSS would stay at the build's level.
    # malloc_trim hands it back (about 60 MB at a million items). Not glibc: nothing to do.
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Catalog:
    """Thread-safe holder of the catalog: a follower thread writes, the worker reads snapshots.

    Writers call :meth:`upsert`/:meth:`remove`; :meth:`publish` rebuilds the index when something
    changed. Readers take :attr:`index`, a reference swap, so they never see a half-built index.
    The catalog itself is the published snapshot's columnar table plus the changes since then:
    a few as :class:`Item` objects, more folded into columnar chunks (``STAGE_AT``).
    """

    def __init__(
        self,
        vectorizer: Vectorizer = hashed_vectors,
        options: IndexOptions = IndexOptions(),  # noqa: B008 - frozen, shared safely
        encoder_tag: str = "",
    ) -> None:
        self._vectorizer = vectorizer
        self._encoder_tag = encoder_tag
        self._options = options
        self._pending: dict[str, Item | None] = {}
        self._staged: list[ItemTable] = []
        self._lock = threading.Lock()
        self._dirty = False
        self._version = 0
        # The shadow model's encoder (None: no shadow), and whether its vectors need building.
        self._shadow: tuple[Vectorizer, str] | None = None
        self._shadow_dirty = False
        self._index = CatalogIndex.from_table(
            _EMPTY_TABLE,
            version=0,
            vectors_of=vectorizer,
            options=options,
            encoder_tag=encoder_tag,
        )

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

    def set_shadow(self, vectorizer: Vectorizer | None, encoder_tag: str = "") -> None:
        """Encode every item with a shadow model's encoder too, at the next :meth:`publish`
        (``index.shadow``); None drops the shadow vectors there."""
        with self._lock:
            self._shadow = None if vectorizer is None else (vectorizer, encoder_tag)
            self._shadow_dirty = True

    def _current(self, item_id: str) -> Item | None | bool:
        # The item as the catalog has it now; True when that is unknown without merging the
        # staged chunks (an item staged since the last publish may differ from the index's).
        if item_id in self._pending:
            return self._pending[item_id]
        if self._staged:
            return True
        return self._index.item(item_id)

    def upsert(self, item: Item) -> None:
        with self._lock:
            if self._current(item.item_id) != item:
                self._pending[item.item_id] = item
                self._dirty = True
                self._stage()

    def remove(self, item_id: str) -> None:
        """A tombstone: the item is gone, from recommendations and from affinity updates."""
        with self._lock:
            if self._current(item_id) is not None:
                self._pending[item_id] = None
                self._dirty = True
                self._stage()

    def _stage(self) -> None:
        if len(self._pending) >= STAGE_AT:
            self._staged.append(ItemTable.of(sorted(self._pending.items())))
            self._pending = {}

    def publish(self) -> bool:
        """Rebuild and swap in the index if anything changed since the last publish."""
        with self._lock:
            shadow = self._shadow
            if not self._dirty:
                if not self._shadow_dirty:
                    return False
                # Only the shadow changed: the same index, with (or without) its vectors.
                self._shadow_dirty = False
                current = self._index
                self._index = dataclasses.replace(
                    current,
                    shadow=None
                    if shadow is None
                    else _shadow_of(current, shadow, None, self._options),
                )
                return True
            self._dirty = self._shadow_dirty = False
            self._version += 1
            changes = [*self._staged, ItemTable.of(sorted(self._pending.items()))]
            self._pending, self._staged = {}, []
            version = self._version
            vectorizer, encoder_tag = self._vectorizer, self._encoder_tag
        previous = self._index
        base = previous.table
        table, source = ItemTable.concat([base, *changes]).latest()
        del changes
        previous_rows = None
        if len(previous):
            # An unchanged item's row came from the previous table: it keeps its vector.
            active = source[~table.withdrawn]
            from_base = active < len(base)
            previous_rows = np.full(active.shape[0], -1, dtype=np.int64)
            old_row = np.full(len(base), -1, dtype=np.int64)
            old_row[previous.positions] = np.arange(len(previous))
            previous_rows[from_base] = old_row[active[from_base]]
        reuse = None
        if previous_rows is not None and previous.encoder_tag == encoder_tag:
            reuse = (previous_rows, previous.vectors)
        index = CatalogIndex.from_table(
            table,
            version=version,
            vectors_of=vectorizer,
            options=self._options,
            encoder_tag=encoder_tag,
            reuse=reuse,
        )
        if shadow is not None:
            kept = previous.shadow
            shadow_reuse = None
            if previous_rows is not None and kept is not None and kept.encoder_tag == shadow[1]:
                shadow_reuse = (previous_rows, kept.vectors)
            index = dataclasses.replace(
                index, shadow=_shadow_of(index, shadow, shadow_reuse, self._options)
            )
        self._index = index
        del previous, table, source, reuse
        _release_free_memory()
        # Few long-lived objects remain, but the worker's own (decoded states, caches) are many;
        # frozen, the cyclic garbage collector does not walk the index's on every full pass.
        gc.freeze()
        return True
