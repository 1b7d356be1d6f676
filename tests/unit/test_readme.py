"""README.md stays true: its configuration table and ONNX contract match the code."""

from __future__ import annotations

import json
from pathlib import Path

from app.core.features import CANDIDATE_FEATURES, USER_FEATURES
from app.core.settings import Settings
from app.training.report import markdown_table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_configuration_table_is_current() -> None:
    assert Settings().markdown_table() in README


def test_model_contract_lists_the_features_in_order() -> None:
    assert ", ".join(f"`{n}`" for n in USER_FEATURES) in README
    assert ", ".join(f"`{n}`" for n in CANDIDATE_FEATURES) in README


def test_model_table_matches_the_default_package() -> None:
    manifest = json.loads((ROOT / "models" / "seqrank-1" / "manifest.json").read_text())
    assert markdown_table(manifest["metrics"]) in README


def test_the_two_commands_are_there() -> None:
    assert "scripts/demo" in README and "scripts/test" in README
