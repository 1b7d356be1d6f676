"""The examples in ``app/``'s docstrings are run: an example that nobody runs can be wrong
without anyone noticing. Every module whose source has an example is found, none listed."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

APP = Path(__file__).resolve().parents[2] / "app"
# Modules that need the train extra (torch) are skipped where it is not installed.
NEEDS_TORCH = ("app.training.",)


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted(APP.rglob("*.py")):
        if path.name != "__main__.py" and ">>> " in path.read_text(encoding="utf-8"):
            names.append(".".join(path.relative_to(APP.parent).with_suffix("").parts))
    return names


MODULES = _modules_with_examples()


def test_the_search_finds_the_modules_with_examples() -> None:
    assert {"app.core.settings", "app.ops.health", "app.dev.markdown_links"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_the_docstring_examples_hold(name: str) -> None:
    if name.startswith(NEEDS_TORCH):
        pytest.importorskip("torch", reason="the train extra")
    result = doctest.testmod(importlib.import_module(name))
    assert result.failed == 0
    # A module whose only examples are marked +SKIP attempts none.
    if result.attempted == 0:
        source = (APP.parent / Path(*name.split("."))).with_suffix(".py").read_text("utf-8")
        assert "# doctest: +SKIP" in source, f"{name}: examples found in its source, none run"
