"""README.md and the docs it links stay true: the front page keeps its commands, its picture and
its links, and the contracts and tables in docs/ match the code."""

from __future__ import annotations

import json
import re
from pathlib import Path

from app.core.features import CANDIDATE_FEATURES, USER_FEATURES
from app.core.settings import Settings
from app.training.report import markdown_table

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _section(markdown: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = markdown.index(heading + "\n")
    rest = markdown[start + len(heading) + 1 :]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.M)
    return rest[: end.start()] if end else rest


def test_the_two_commands_come_first() -> None:
    section = _section(README, "## Two commands")
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, "the two commands are a shell block under '## Two commands'"
    commands = [line.split()[0] for line in block.group(1).splitlines() if line.strip()]
    assert commands == ["scripts/demo", "scripts/test"]
    # Prominent: the first section after the introduction.
    assert re.findall(r"^## .*", README, re.M)[0] == "## Two commands"


def test_the_storefront_command_and_its_picture_are_there() -> None:
    assert "scripts/demo --web" in README
    assert "](docs/storefront.png)" in README


def test_the_data_flow_picture_names_every_part() -> None:
    diagram = re.search(r"```mermaid\n(.*?)```", README, re.S)
    assert diagram is not None, "README.md draws the data flow in a mermaid block"
    for part in (
        "events topic",
        "RocksDB",
        "candidate retrieval",
        "ONNX ranker",
        "recommendations topic",
        "feedback",
        "model-updates topic",
        "hot reload",
        "dead-letter topic",
    ):
        assert part in diagram.group(1), part


def test_the_readme_links_every_doc() -> None:
    for doc in sorted(DOCS.glob("*.md")):
        assert f"](docs/{doc.name})" in README, f"README.md does not link docs/{doc.name}"


def test_the_headline_figures_are_the_benchmarks_own() -> None:
    # The same table on the front page and in docs/benchmarks.md: one cannot drift alone.
    table = re.search(r"^\| what \| command \| machine \| result \|\n(?:\|.*\n)+", README, re.M)
    assert table is not None
    assert table.group(0) in _doc("benchmarks.md")


def test_configuration_table_is_current() -> None:
    assert Settings().markdown_table() in _doc("configuration.md")


def test_model_contract_lists_the_features_in_order() -> None:
    contracts = _doc("contracts.md")
    assert ", ".join(f"`{n}`" for n in USER_FEATURES) in contracts
    assert ", ".join(f"`{n}`" for n in CANDIDATE_FEATURES) in contracts


def test_model_table_matches_the_default_package() -> None:
    manifest = json.loads((ROOT / "models" / "seqrank-1" / "manifest.json").read_text())
    assert markdown_table(manifest["metrics"]) in _doc("model.md")


def test_the_client_example_uses_the_client_library() -> None:
    example = re.search(r"## Client library\n.*?```python\n(.*?)```", README, re.S)
    assert example is not None
    code = example.group(1)
    assert "from app.client import" in code
    compile(code, "README.md", "exec")  # valid Python, as ruff format also checks
