"""A fixed corpus of hostile event payloads (tests/corpus/events): each has one known outcome."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core.catalog import Catalog
from app.core.processor import DEAD_LETTERS, Processor
from app.core.records import Item, Source
from app.core.scoring.package import LoadedModel
from app.core.settings import Settings
from tests.conftest import T0

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "events"
# File name -> the dead-letter error; or "processed" (duplicate JSON keys: the last one wins),
# "processed:<rule>" for events applied under a documented rule, or "forgotten".
EXPECTED: dict[str, str] = json.loads((CORPUS / "expected.json").read_text())


def test_every_corpus_file_has_an_expectation() -> None:
    assert sorted(p.name for p in CORPUS.glob("*.bin")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_payload_gets_its_documented_outcome(
    name: str, model: LoadedModel, settings: Settings
) -> None:
    catalog = Catalog()
    catalog.upsert(Item("jazz-0", "Jazz record", "jazz", tags=("jazz",)))
    catalog.upsert(Item("gone-1", "Withdrawn record", "jazz", withdrawn=True))
    catalog.publish()
    processor = Processor(catalog, model.ranker, model.spec, settings, clock=lambda: T0)
    raw = (CORPUS / name).read_bytes()
    store: dict[bytes, bytes] = {}
    outcome = processor.handle(raw, Source("events", 0, 7, b"u1"), store.get)
    status, _, rule = EXPECTED[name].partition(":")
    if status in ("processed", "forgotten"):
        assert outcome.status == status
        assert outcome.rules == ((rule,) if rule else ())
        return
    assert outcome.status == "dead_letter"
    (letter,) = [o.document() for o in outcome.outputs if o.role == DEAD_LETTERS]
    assert letter["error"] == EXPECTED[name]
    assert letter["reason"] and letter["offset"] == 7
