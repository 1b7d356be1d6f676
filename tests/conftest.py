"""Shared fixtures: a clean environment and factories for events, items and user state."""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core.catalog import Catalog
from app.core.codec import format_time_ms
from app.core.ranking import model_vectorizer
from app.core.records import Event, EventType, Item
from app.core.scoring.package import LoadedModel, load_package
from app.core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "seqrank-1"
T0 = 1_790_000_000_000  # a fixed event time (2026-09) so tests never depend on the clock


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings tests must not see the developer's LIVERANK_* variables."""
    for key in list(os.environ):
        if key.startswith("LIVERANK_"):
            monkeypatch.delenv(key)
    yield


@pytest.fixture
def event_factory() -> Callable[..., Event]:
    counter = itertools.count()

    def make(
        type: str = "click",
        user_id: str = "u1",
        item_id: str | None = "i1",
        query: str | None = None,
        time_ms: int | None = None,
        event_id: str | None = None,
    ) -> Event:
        n = next(counter)
        t = time_ms if time_ms is not None else T0 + n * 1000
        kind = EventType(type)
        return Event(
            event_id=event_id or f"e{n}",
            user_id=user_id,
            type=kind,
            event_time_ms=t,
            event_time=format_time_ms(t),
            item_id=None if kind is EventType.SEARCH else item_id,
            query=query if kind is EventType.SEARCH else None,
        )

    return make


@pytest.fixture
def item_factory() -> Callable[..., Item]:
    def make(item_id: str, category: str = "jazz", **kw: Any) -> Item:
        kw.setdefault("title", f"{category.title()} record {item_id}")
        kw.setdefault("tags", (category,))
        return Item(item_id=item_id, category=category, **kw)

    return make


@pytest.fixture(scope="session")
def model() -> LoadedModel:
    """The default model package, as the worker loads it (CPU: the FP32 ranker)."""
    return load_package(MODEL)


@pytest.fixture
def music_catalog(item_factory: Callable[..., Item], model: LoadedModel) -> Catalog:
    """40 items the model has never seen: jazz, rock and classical; rock is the most popular."""
    catalog = Catalog(model_vectorizer(model.encoder, model.spec))
    for i in range(40):
        category = ("jazz", "rock", "classical")[i % 3]
        popularity = {"jazz": 10.0, "rock": 1000.0, "classical": 50.0}[category] + i
        catalog.upsert(
            item_factory(
                f"{category}-{i}",
                category,
                popularity=popularity,
                tags=(category, "vinyl" if i % 2 else "cd"),
            )
        )
    catalog.publish()
    return catalog


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", model_path=MODEL)
