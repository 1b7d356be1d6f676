"""The catalog's columnar storage: string columns, their lookup, and staged changes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import pytest

import app.core.catalog
from app.core.catalog import Catalog, CatalogIndex, ItemTable, StringColumn, StringLookup
from app.core.records import Item


def test_a_string_column_round_trips_any_str() -> None:
    strings = ["", "a", "Ünïcode", "爵士乐", "lone \ud800 surrogate", "a"]
    column = StringColumn.of(strings)
    assert list(column) == strings and column == tuple(strings)
    assert column[-1] == "a" and column[1:3] == ("a", "Ünïcode")
    with pytest.raises(IndexError):
        column[len(strings)]
    taken = column.take(np.array([4, 0, 2], dtype=np.int64))
    assert list(taken) == [strings[4], "", "Ünïcode"]


def test_a_lookup_finds_every_string_and_nothing_else() -> None:
    strings = [f"item-{i}" for i in range(5000)] + ["", "\ud800"]
    lookup = StringLookup(StringColumn.of(strings))
    assert [lookup.find(s) for s in strings] == list(range(len(strings)))
    assert lookup.find("item-5000") == -1 and lookup.find("x") == -1


def test_an_item_reads_back_equal(item_factory: Callable[..., Item]) -> None:
    items = [
        item_factory("a", tags=("x", "x", "")),
        replace(item_factory("b"), price=None, withdrawn=True),
        replace(item_factory("c"), price=0.1 + 0.2, popularity=1e308),
    ]
    index = CatalogIndex.build(items)
    assert [index.item(i.item_id) for i in items] == items
    assert index.item("d") is None
    assert dict(index.known) == {i.item_id: i for i in items}
    assert dict(index.row_of) == {"a": 0, "c": 1}
    assert "b" not in index.row_of and "b" in index.known


def test_changes_folded_into_chunks_publish_like_unstaged_ones(
    item_factory: Callable[..., Item], monkeypatch: pytest.MonkeyPatch
) -> None:
    def final_index(stage_at: int) -> CatalogIndex:
        monkeypatch.setattr(app.core.catalog, "STAGE_AT", stage_at)
        catalog = Catalog()
        for i in range(40):
            catalog.upsert(item_factory(f"i{i:02d}", popularity=float(i)))
        catalog.remove("i03")
        catalog.upsert(item_factory("i05", "rock"))
        catalog.remove("i05")
        catalog.upsert(item_factory("i05", "folk"))
        catalog.upsert(replace(item_factory("i07"), withdrawn=True))
        catalog.publish()
        catalog.upsert(item_factory("i01", "rock"))
        catalog.remove("i02")
        catalog.publish()
        return catalog.index

    staged, unstaged = final_index(3), final_index(10_000)
    assert staged.ids == unstaged.ids
    assert dict(staged.known) == dict(unstaged.known)
    assert np.array_equal(staged.vectors, unstaged.vectors)
    assert staged.item("i05") == item_factory("i05", "folk")
    assert staged.item("i03") is None and staged.item("i02") is None


def test_an_empty_chunk_table_concatenates() -> None:
    table = ItemTable.concat([ItemTable.of(()), ItemTable.of(())])
    assert len(table.latest()[0]) == 0


@pytest.mark.parametrize("materialize_below", [0, 10**9])
def test_large_and_small_catalogs_answer_alike(
    monkeypatch: pytest.MonkeyPatch, materialize_below: int
) -> None:
    """Small catalogs keep ids, rows and items as Python objects, large ones read them from
    the columns: both answer every lookup the same."""
    from app.dev.synthetic import make_catalog

    items = make_catalog(300, seed=5)
    items[7] = replace(items[7], withdrawn=True)
    reference = CatalogIndex.build(items)  # the default: small, so objects
    monkeypatch.setattr(app.core.catalog, "MATERIALIZE_BELOW", materialize_below)
    index = CatalogIndex.build(items)
    assert isinstance(index.ids, tuple) == (materialize_below > 0)
    assert list(index.ids) == list(reference.ids) and len(index) == len(reference)
    assert dict(index.row_of) == dict(reference.row_of)
    assert items[7].item_id not in index.row_of and index.item(items[7].item_id) == items[7]
    for item in items:
        assert index.item(item.item_id) == reference.item(item.item_id) == item
        assert index.row_of.get(item.item_id) == reference.row_of.get(item.item_id)
    assert index.item("missing") is None and index.row_of.get("missing") is None


def test_posting_lists_match_a_plain_sort_of_their_pairs() -> None:
    # _postings packs (token, popularity rank) into one key and sorts that in place; a plain
    # Python sort of the pairs, cut at the limit, is the reference. Pairs repeat on purpose.
    from array import array

    rng = np.random.default_rng(7)
    for _ in range(50):
        n, n_tokens, pairs = int(rng.integers(1, 200)), int(rng.integers(1, 30)), 800
        popularity = rng.integers(0, 4, n)
        popular_rows = np.argsort(-popularity, kind="stable").astype(np.int32)
        pop_rank = np.empty(n, dtype=np.int64)
        pop_rank[popular_rows] = np.arange(n)
        codes = rng.integers(0, n_tokens, pairs).tolist()
        rows = rng.integers(0, n, pairs).tolist()
        limit = int(rng.integers(1, 40))
        offsets, members = app.core.catalog._postings(
            array("i", codes), array("i", rows), pop_rank, popular_rows, n_tokens, limit
        )
        assert members.dtype == np.int32 and offsets.shape == (n_tokens + 1,)
        for token in range(n_tokens):
            mine = sorted(
                (int(pop_rank[r]), r) for c, r in zip(codes, rows, strict=True) if c == token
            )
            want = [r for _, r in mine[:limit]]
            assert members[offsets[token] : offsets[token + 1]].tolist() == want
