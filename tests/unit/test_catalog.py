"""The in-memory catalog: index building, updates, withdrawals and tombstones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from app.catalog import Catalog, CatalogIndex, item_vector
from app.records import Item


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
