"""The in-process path benchmark runs (a smoke run: tiny sizes, no speed asserted)."""

from __future__ import annotations

import pytest

from app.dev.bench import paths


def test_the_path_benchmark_runs_both_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert paths.main(["--items", "300", "--events", "200", "--batch", "50", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert (
        "| model |" in out
        and "| cheap |" in out
        and "cheap / model:" in out
        and "ranking step" in out
    )
