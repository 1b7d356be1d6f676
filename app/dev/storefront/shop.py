"""The storefront's pure parts: the catalog as shown, the page's actions, and ranked lists."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app.core.records import Item, Recommendation

JsonDoc = dict[str, Any]

# The longest query the page sends; the event schema has its own (larger) limit.
MAX_QUERY = 200


class BadAction(ValueError):
    """A message from the page that is not an action the storefront knows."""


@dataclass(frozen=True, slots=True)
class Search:
    """The shopper searched for ``query``; ``action_id`` is the page's own tag, echoed with the
    answer so the page can match (and time) it."""

    action_id: str
    query: str


@dataclass(frozen=True, slots=True)
class Click:
    """The shopper opened ``item_id``'s page."""

    action_id: str
    item_id: str


Action = Search | Click


def parse_action(doc: object) -> Action:
    """A page message as an :class:`Action`, or :class:`BadAction`.

    >>> parse_action({"id": "a1", "action": "search", "query": " jazz "})
    Search(action_id='a1', query='jazz')
    >>> parse_action({"id": "a2", "action": "click", "item_id": "item-7"})
    Click(action_id='a2', item_id='item-7')
    """
    if not isinstance(doc, Mapping):
        raise BadAction("an action is a JSON object")
    action_id = doc.get("id")
    if not isinstance(action_id, str) or not 0 < len(action_id) <= 64:
        raise BadAction("id must be a string of 1 to 64 characters")
    kind = doc.get("action")
    if kind == "search":
        query = doc.get("query")
        if not isinstance(query, str) or not query.strip():
            raise BadAction("a search needs a query")
        return Search(action_id, query.strip()[:MAX_QUERY])
    if kind == "click":
        item_id = doc.get("item_id")
        if not isinstance(item_id, str) or not item_id:
            raise BadAction("a click needs an item_id")
        return Click(action_id, item_id)
    raise BadAction(f"unknown action {kind!r}: search or click")


class Shelf:
    """The catalog as the storefront shows it: items by id, most popular first, by genre.

    Withdrawn items are left out, as the worker never recommends them.

    >>> shelf = Shelf([Item("a", "A", "jazz", popularity=1.0),
    ...                Item("b", "B", "rock", popularity=9.0),
    ...                Item("c", "C", "jazz", popularity=5.0)])
    >>> [i.item_id for i in shelf.popular(2)], [i.item_id for i in shelf.popular(5, genre="jazz")]
    (['b', 'c'], ['c', 'a'])
    >>> shelf.genres()
    ['jazz', 'rock']
    """

    def __init__(self, items: Iterable[Item]) -> None:
        shown = [item for item in items if not item.withdrawn]
        self.by_id = {item.item_id: item for item in shown}
        self._ranked = sorted(self.by_id.values(), key=lambda i: (-i.popularity, i.item_id))
        counts = Counter(item.category for item in self._ranked)
        self._genres = [g for g, _ in sorted(counts.items(), key=lambda gc: (-gc[1], gc[0]))]

    def __len__(self) -> int:
        return len(self.by_id)

    def get(self, item_id: str) -> Item | None:
        return self.by_id.get(item_id)

    def popular(self, limit: int, genre: str | None = None) -> list[Item]:
        """The ``limit`` most popular items, of ``genre`` only when given."""
        ranked = self._ranked if genre is None else [i for i in self._ranked if i.category == genre]
        return ranked[: max(0, limit)]

    def genres(self) -> list[str]:
        """Every genre (item category), the largest first."""
        return list(self._genres)


def item_doc(item: Item) -> JsonDoc:
    """An item as the page renders it."""
    return {
        "item_id": item.item_id,
        "title": item.title,
        "genre": item.category,
        "tags": list(item.tags),
        "price": item.price,
    }


def ranked_doc(action: Action, rec: Recommendation, shelf: Shelf, pipeline_ms: float) -> JsonDoc:
    """The answer to ``action`` as the page renders it: each ranked item with its catalog
    entry (an item the shelf does not know keeps its id as its title), and ``pipeline_ms``,
    the time from the event's publication to the list's arrival at the server.

    >>> from app.core.records import RankedItem
    >>> rec = Recommendation("e1", "u1", "search", (RankedItem("x", 0.5, "text"),), "v1",
    ...                      "2026-01-01T00:00:00.000Z", 0, query="jazz")
    >>> doc = ranked_doc(Search("a1", "jazz"), rec, Shelf([]), 12.3456)
    >>> doc["items"][0]["title"], doc["pipeline_ms"]
    ('x', 12.35)
    """
    items = []
    for ranked in rec.items:
        known = shelf.get(ranked.item_id)
        doc = item_doc(known) if known is not None else {"item_id": ranked.item_id}
        doc.setdefault("title", ranked.item_id)
        doc.setdefault("genre", "")
        items.append({**doc, "score": round(ranked.score, 4), "source": ranked.source})
    return {
        "type": "recommendation",
        "id": action.action_id,
        "event_id": rec.event_id,
        "kind": rec.kind,
        "query": rec.query,
        "item_id": action.item_id if isinstance(action, Click) else None,
        "items": items,
        "model_version": rec.model_version,
        "degraded": rec.degraded,
        "pipeline_ms": round(pipeline_ms, 2),
    }
