"""The docs hold together: every relative link and #anchor in README.md and docs/*.md resolves,
README.md stays short, and docs/configuration.md is what its generator writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.dev import config_docs, markdown_links
from app.dev.markdown_links import broken_links, github_anchors, links

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_MAX_LINES = 250


def _docs() -> list[Path]:
    """README.md, docs/*.md, and the READMEs of deploy/ and scripts/ that link into them."""
    others = sorted(ROOT.glob("deploy/*/README.md")) + [ROOT / "scripts" / "README.md"]
    return [README, *sorted((ROOT / "docs").glob("*.md")), *others]


def test_every_link_and_anchor_resolves() -> None:
    problems = broken_links(_docs(), ROOT)
    assert problems == [], "broken links:\n" + "\n".join(problems)


def test_the_readme_is_short() -> None:
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= README_MAX_LINES, (
        f"README.md has {lines} lines, at most {README_MAX_LINES}: move detail into docs/"
    )


def test_the_configuration_reference_is_generated() -> None:
    committed = config_docs.CONFIGURATION_MD.read_text(encoding="utf-8")
    assert committed == config_docs.render(), (
        "docs/configuration.md is out of date: run `.venv/bin/python -m app.dev.config_docs`"
    )


def test_the_generator_writes_and_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "configuration.md"
    assert config_docs.main(["--check", "--output", str(out)]) == 1  # missing
    assert "run python -m app.dev.config_docs" in capsys.readouterr().err
    assert config_docs.main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == config_docs.render()
    assert config_docs.main(["--check", "--output", str(out)]) == 0
    out.write_text(config_docs.render().replace("| `LIVERANK_TOP_K` | int | `10` |", "| x |"))
    assert config_docs.main(["--check", "--output", str(out)]) == 1  # edited by hand


def test_broken_links_and_anchors_are_reported(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other\n\n## Under load: `scripts/bench`\n")
    (tmp_path / "code.py").write_text("")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Two commands\n\n"
        "[fine](docs/other.md#under-load-scriptsbench), [fine too](#two-commands),\n"
        "[a file](code.py#L1), [external](https://example.com/x#y), ![picture](docs/other.md)\n"
        "[gone](docs/missing.md) and ![gone too](docs/missing.png)\n"
        "[wrong anchor](docs/other.md#under-load) and [wrong here](#two-command)\n"
        "`[code](is-not-a-link.md)`\n"
        "```md\n[fenced](is-not-a-link-either.md)\n```\n"
        "[ref]: docs/nowhere.md\n"
    )
    assert broken_links([page], tmp_path) == [
        "page.md:7: docs/missing.md: no such file",
        "page.md:7: docs/missing.png: no such file",
        "page.md:8: docs/other.md#under-load: other.md has no such heading",
        "page.md:8: #two-command: page.md has no such heading",
        "page.md:13: docs/nowhere.md: no such file",
    ]


def test_the_checker_fails_on_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[broken](#nowhere)\n")
    assert markdown_links.main([str(page)]) == 1
    assert "#nowhere: page.md has no such heading" in capsys.readouterr().out
    page.write_text("# Page\n\n[fine](#page)\n")
    assert markdown_links.main([str(page)]) == 0


@pytest.mark.parametrize(
    ("heading", "anchor"),
    [
        ("## Measured figures", "measured-figures"),
        ("## Online quality, measured: `scripts/replay`", "online-quality-measured-scriptsreplay"),
        ("## Migrate partitions (N to M)", "migrate-partitions-n-to-m"),
        ("### The storefront: `scripts/demo --web`", "the-storefront-scriptsdemo---web"),
        ("## Layout of `app/`", "layout-of-app"),
        ("## See [the docs](docs/x.md)", "see-the-docs"),
        ("## snake_case and CAPS", "snake_case-and-caps"),
        ("## Closed ##", "closed"),
    ],
)
def test_anchors_follow_githubs_rules(heading: str, anchor: str) -> None:
    assert github_anchors(heading) == {anchor}


def test_repeated_headings_are_numbered_and_fences_are_not_headings() -> None:
    text = "# A\n## Scale\n```sh\n# a comment\n```\n## Scale\n~~~\n## Scale\n~~~\n#nospace\n"
    assert github_anchors(text) == {"a", "scale", "scale-1"}


def test_links_are_found_with_their_lines() -> None:
    text = 'x [a](b.md) y [c](<d e.md> "title")\n\n![i](p.png)\n'
    assert list(links(text)) == [(1, "b.md"), (1, "d e.md"), (3, "p.png")]
