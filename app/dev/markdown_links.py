"""Check Markdown links: every relative link names a file that exists, every #anchor a heading.

Anchors follow GitHub's rules for headings (github-slugger): the heading's text as rendered,
lower-cased, with punctuation dropped and spaces turned into hyphens; a repeated heading gets
``-1``, ``-2``, ... Run ``python -m app.dev.markdown_links README.md docs/*.md``; the exit status
is 1 when a link is broken. ``tests/unit/test_docs.py`` runs it over the repository's docs.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_HEADING = re.compile(r"^ {0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1")
_INLINE_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\(\s*(<[^>]*>|[^\s)]+)(?:\s+[^)]*)?\)")
_REFERENCE = re.compile(r"^ {0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
# github-slugger drops every character that is not a letter, a digit, "_", "-" or a space.
_NOT_SLUG = re.compile(r"[^\w\- ]")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def _outside_fences(markdown: str) -> Iterator[tuple[int, str]]:
    """(line number, line) for every line that is not inside a fenced code block."""
    fence = ""
    for number, line in enumerate(markdown.splitlines(), start=1):
        match = _FENCE.match(line)
        if fence:
            if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence):
                fence = ""
            continue
        if match:
            fence = match.group(1)
            continue
        yield number, line


def _rendered_text(heading: str) -> str:
    """What a heading shows: code spans' text, links' text, no images' targets."""
    text = _CODE_SPAN.sub(lambda m: m.group(2).strip(), heading)
    return _INLINE_LINK.sub(lambda m: m.group(1), text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading's text (before numbering repeats).

    >>> slug("Under load: `scripts/bench`")
    'under-load-scriptsbench'
    >>> slug("Endpoints, metrics, exit codes")
    'endpoints-metrics-exit-codes'
    """
    return _NOT_SLUG.sub("", _rendered_text(heading).strip().lower()).replace(" ", "-")


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings (fenced code is not a heading).

    >>> sorted(github_anchors("# liverank\\n## Operations\\n### Under load: `scripts/bench`"))
    ['liverank', 'operations', 'under-load-scriptsbench']
    >>> sorted(github_anchors("## Scale\\n```sh\\n# not a heading\\n```\\n## Scale"))
    ['scale', 'scale-1']
    """
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for _, line in _outside_fences(markdown):
        match = _HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(1) or "")
        count = seen.get(base, 0)
        seen[base] = count + 1
        anchors.add(base if count == 0 else f"{base}-{count}")
    return anchors


def links(markdown: str) -> Iterator[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition outside
    code.

    >>> list(links("See [the docs](docs/a.md#x) and `[not](a link)`.\\n[ref]: <b.md>"))
    [(1, 'docs/a.md#x'), (2, 'b.md')]
    """
    for number, line in _outside_fences(markdown):
        text = _CODE_SPAN.sub("", line)
        for match in _INLINE_LINK.finditer(text):
            yield number, match.group(2).strip("<>")
        reference = _REFERENCE.match(text)
        if reference:
            yield number, reference.group(1).strip("<>")


def broken_links(files: Iterable[Path], root: Path) -> list[str]:
    """``path:line: target: why`` for each relative link in ``files`` that does not resolve:
    a file that does not exist, or an anchor that is not a heading of the Markdown file it
    names. External links (``https:``, ``mailto:``) are not checked; nor are anchors into
    files that are not Markdown (GitHub's ``#L10`` line anchors)."""
    problems: list[str] = []
    anchors: dict[Path, set[str]] = {}

    def anchors_of(path: Path) -> set[str]:
        if path not in anchors:
            anchors[path] = github_anchors(path.read_text(encoding="utf-8"))
        return anchors[path]

    for file in files:
        for number, target in links(file.read_text(encoding="utf-8")):
            if _EXTERNAL.match(target):
                continue
            path_part, _, anchor = target.partition("#")
            path = (file.parent / path_part).resolve() if path_part else file.resolve()
            if not path.exists():
                problems.append(f"{_shown(file, root)}:{number}: {target}: no such file")
            elif anchor and path.suffix == ".md" and anchor not in anchors_of(path):
                problems.append(
                    f"{_shown(file, root)}:{number}: {target}: {path.name} has no such heading"
                )
    return problems


def _shown(file: Path, root: Path) -> str:
    """``file`` relative to ``root`` where it lies below it, as given otherwise."""
    try:
        return str(file.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("files", nargs="+", type=Path, help="Markdown files to check")
    args = parser.parse_args(argv)
    problems = broken_links(args.files, Path.cwd())
    for problem in problems:
        print(problem)
    print(f"{len(args.files)} file(s): {len(problems)} broken link(s)" if problems else "ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
