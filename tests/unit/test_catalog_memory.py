"""The catalog memory benchmark runs (a smoke run: tiny sizes, nothing about speed asserted)."""

from __future__ import annotations

import pytest

from app.dev.bench import catalog_memory


def test_the_memory_benchmark_reports_each_size(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--items", "200,400", "--events", "100", "--batch", "50"]
    assert catalog_memory.main(argv) == 0
    out = capsys.readouterr().out
    assert "| items | RSS after build (MiB) | peak RSS (MiB) |" in out
    rows = [line for line in out.splitlines() if line.startswith(("| 200 |", "| 400 |"))]
    assert len(rows) == 2


def test_synthetic_items_are_distinct_across_chunks() -> None:
    items = list(catalog_memory.synthetic_items(catalog_memory.CHUNK + 5, seed=1))
    assert len({i.item_id for i in items}) == len(items)
    assert items[-1].title.endswith(f" {catalog_memory.CHUNK + 4}")
