"""The in-memory catalog: index building, updates, withdrawals and tombstones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np
from numpy.typing import NDArray

from app.core.catalog import Catalog, CatalogIndex, IndexOptions, hashed_vectors, item_vector
from app.core.records import Item
from app.dev.synthetic import make_catalog


def test_index_holds_active_items_only(item_factory: Callable[..., Item]) -> None:
    index = CatalogIndex.build(
        [item_factory("a"), item_factory("b", withdrawn=True), item_factory("c", "rock")]
    )
    assert index.ids == ("a", "c")
    assert index.item("b") is not None  # still known, for affinity updates
    assert index.vectors.shape == (2, 64)
    assert np.allclose(np.linalg.norm(index.vectors, axis=1), 1.0)
    assert list(index.rows_for_token("rock")) == [index.row_of["c"]]


def test_popular_rows_are_ordered(item_factory: Callable[..., Item]) -> None:
    index = CatalogIndex.build(
        [
            item_factory("a", popularity=1),
            item_factory("b", popularity=100),
            item_factory("c", popularity=10),
        ]
    )
    assert [index.ids[r] for r in index.popular_rows] == ["b", "c", "a"]
    assert index.popularity.max() == 1.0


def test_an_absurd_popularity_cannot_put_nan_into_features(
    item_factory: Callable[..., Item],
) -> None:
    """1e308 is valid JSON and passes the schema (minimum 0), but overflows float32."""
    index = CatalogIndex.build(
        [item_factory("a", popularity=1e308), item_factory("b", popularity=5.0)]
    )
    assert np.isfinite(index.popularity).all()
    assert [index.ids[r] for r in index.popular_rows] == ["a", "b"]


def test_similar_items_share_direction(item_factory: Callable[..., Item]) -> None:
    jazz1 = item_vector(item_factory("a", "jazz", tags=("piano",)))
    jazz2 = item_vector(item_factory("b", "jazz", tags=("piano",)))
    rock = item_vector(item_factory("c", "rock", tags=("guitar",), title="Loud"))
    assert float(jazz1 @ jazz2) > float(jazz1 @ rock)


def test_catalog_publishes_only_on_change(item_factory: Callable[..., Item]) -> None:
    catalog = Catalog()
    first = catalog.index
    catalog.upsert(item_factory("a"))
    assert catalog.publish()
    second = catalog.index
    assert second is not first and second.ids == ("a",)
    catalog.upsert(item_factory("a"))  # unchanged
    assert not catalog.publish()
    catalog.upsert(replace(item_factory("a"), withdrawn=True))
    assert catalog.publish()
    assert catalog.index.ids == ()
    catalog.remove("a")
    assert catalog.publish()
    assert catalog.index.item("a") is None
    assert second.ids == ("a",)  # readers of an old snapshot are undisturbed


def test_posting_lists_keep_the_most_popular_items(item_factory: Callable[..., Item]) -> None:
    items = [item_factory(f"j{i:02d}", popularity=float(i)) for i in range(30)]
    index = CatalogIndex.build(items, options=IndexOptions(posting_limit=5))
    rows = index.rows_for_token("jazz")
    assert [index.ids[r] for r in rows] == ["j29", "j28", "j27", "j26", "j25"]
    # Categories are not capped: the category retriever pages through them.
    assert len(index.rows_for_category("jazz")) == 30


def test_large_catalogs_get_an_approximate_index() -> None:
    items = make_catalog(3000, seed=1)
    small = CatalogIndex.build(items)
    approximate = CatalogIndex.build(items, options=IndexOptions(exact_below=1000))
    assert small.neighbours.kind == "exact"
    assert approximate.neighbours.kind == "ivf"
    # The approximate index finds most of the exact top 50 (hashed vectors cluster by genre).
    queries = small.vectors[:32]
    truth, _ = small.neighbours.search(queries, 50)
    found, _ = approximate.neighbours.search(queries, 50)
    overlap = np.mean([len(set(t) & set(f)) / 50 for t, f in zip(truth, found, strict=True)])
    assert overlap > 0.8


def test_a_publish_encodes_only_new_and_changed_items(item_factory: Callable[..., Item]) -> None:
    encoded: list[str] = []

    def vectorizer(items: Sequence[Item]) -> NDArray[np.float32]:
        encoded.extend(i.item_id for i in items)
        return hashed_vectors(items)

    catalog = Catalog(vectorizer)
    for i in range(5):
        catalog.upsert(item_factory(f"i{i}"))
    catalog.publish()
    before = catalog.index.vectors[catalog.index.row_of["i1"]].copy()
    encoded.clear()
    catalog.upsert(item_factory("i2", "rock"))  # changed
    catalog.upsert(item_factory("i9"))  # new
    catalog.remove("i0")
    catalog.publish()
    assert sorted(encoded) == ["i2", "i9"]
    index = catalog.index
    assert index.ids == ("i1", "i2", "i3", "i4", "i9")
    assert np.array_equal(index.vectors[index.row_of["i1"]], before)
    assert np.allclose(index.vectors, hashed_vectors([index.known[i] for i in index.ids]))
