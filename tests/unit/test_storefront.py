"""The storefront's pure parts and its HTTP pages (no broker: the websocket is the integration
test's)."""

from __future__ import annotations

import re
from importlib.resources import files

import pytest
from aiohttp.test_utils import TestClient, TestServer

from app.core.records import Item, RankedItem, Recommendation
from app.core.settings import Settings
from app.dev.storefront import Storefront
from app.dev.storefront.shop import BadAction, Click, Search, Shelf, parse_action, ranked_doc

ITEMS = [
    Item("j1", "Blue Train", "jazz", ("bebop",), price=9.5, popularity=5.0),
    Item("j2", "Kind of Blue", "jazz", popularity=8.0),
    Item("r1", "Paranoid", "rock", popularity=9.0),
    Item("gone", "Withdrawn", "rock", popularity=99.0, withdrawn=True),
]


def test_actions_are_parsed_and_bad_ones_refused() -> None:
    assert parse_action({"id": "a1", "action": "search", "query": "  jazz "}) == Search(
        "a1", "jazz"
    )
    assert parse_action({"id": "a2", "action": "click", "item_id": "j1"}) == Click("a2", "j1")
    for bad in [
        [],
        {"action": "search", "query": "jazz"},
        {"id": "", "action": "search", "query": "jazz"},
        {"id": "x" * 65, "action": "search", "query": "jazz"},
        {"id": "a", "action": "search", "query": "   "},
        {"id": "a", "action": "click"},
        {"id": "a", "action": "purchase", "item_id": "j1"},
    ]:
        with pytest.raises(BadAction):
            parse_action(bad)


def test_the_shelf_lists_the_popular_first_and_leaves_withdrawn_items_out() -> None:
    shelf = Shelf(ITEMS)
    assert len(shelf) == 3
    assert shelf.get("gone") is None
    assert [i.item_id for i in shelf.popular(10)] == ["r1", "j2", "j1"]
    assert [i.item_id for i in shelf.popular(1, genre="jazz")] == ["j2"]
    assert shelf.popular(10, genre="polka") == []
    assert shelf.genres() == ["jazz", "rock"]


def test_a_ranked_list_carries_the_catalog_entries() -> None:
    rec = Recommendation(
        "e1",
        "u1",
        "next_items",
        (RankedItem("j2", 0.91234, "model"), RankedItem("new", 0.5, "popular")),
        "1.1.0",
        "2026-01-01T00:00:00.000Z",
        0,
    )
    doc = ranked_doc(Click("a7", "j1"), rec, Shelf(ITEMS), 8.25)
    assert (doc["id"], doc["event_id"], doc["kind"], doc["item_id"]) == (
        "a7",
        "e1",
        "next_items",
        "j1",
    )
    assert doc["items"][0] == {
        "item_id": "j2",
        "title": "Kind of Blue",
        "genre": "jazz",
        "tags": [],
        "price": None,
        "score": 0.9123,
        "source": "model",
    }
    # An item the storefront's catalog does not know is still shown, by its id.
    assert doc["items"][1]["title"] == "new"
    assert doc["pipeline_ms"] == 8.25


def test_the_page_is_package_data_and_loads_nothing_from_elsewhere() -> None:
    static = files("app.dev.storefront") / "static"
    for name in ["index.html", "storefront.js", "storefront.css"]:
        text = (static / name).read_text(encoding="utf-8")
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), name
        assert "@import" not in text, name


async def test_the_pages_and_the_catalog_are_served() -> None:
    # The HTTP side needs no broker; start() (reader, publisher) is the integration test's.
    shop = Storefront(Settings(), ITEMS)
    async with TestClient(TestServer(shop.application())) as client:
        for path in ["/", "/item/j1"]:
            page = await client.get(path)
            assert page.status == 200
            assert page.content_type == "text/html"
            assert "/static/storefront.js" in await page.text()
        script = await client.get("/static/storefront.js")
        assert script.status == 200
        catalog = await (await client.get("/api/catalog")).json()
        assert catalog["size"] == 3
        assert [i["item_id"] for i in catalog["items"]] == ["r1", "j2", "j1"]
        jazz = await (await client.get("/api/catalog", params={"genre": "jazz"})).json()
        assert [i["item_id"] for i in jazz["items"]] == ["j2", "j1"]
        item = await client.get("/api/items/j1")
        assert (await item.json())["tags"] == ["bebop"]
        assert (await client.get("/api/items/gone")).status == 404
