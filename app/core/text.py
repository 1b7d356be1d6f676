"""Query and title tokenization that works for Latin and CJK text alike."""

from __future__ import annotations

import re
import unicodedata
import zlib
from functools import lru_cache

_WORD = re.compile(r"\w+", re.UNICODE)


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF  # Hiragana, Katakana
        or 0x3400 <= code <= 0x4DBF  # CJK extension A
        or 0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0xAC00 <= code <= 0xD7AF  # Hangul syllables
        or 0xF900 <= code <= 0xFAFF  # CJK compatibility ideographs
    )


def _split_cjk(word: str) -> list[str]:
    """CJK has no spaces: emit each ideograph run as its characters and their bigrams."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            out.extend(run)
            out.extend(a + b for a, b in zip(run, run[1:], strict=False))
            run.clear()

    latin: list[str] = []
    for ch in word:
        if _is_cjk(ch):
            if latin:
                out.append("".join(latin))
                latin.clear()
            run.append(ch)
        else:
            flush()
            latin.append(ch)
    flush()
    if latin:
        out.append("".join(latin))
    return out


@lru_cache(maxsize=65536)
def tokenize(text: str) -> tuple[str, ...]:
    """Lower-cased, NFKC-normalized, de-duplicated tokens in first-seen order (cached).

    >>> tokenize("Kind of Blue, kind of JAZZ")
    ('kind', 'of', 'blue', 'jazz')
    >>> tokenize("爵士乐")
    ('爵', '士', '乐', '爵士', '士乐')
    """
    normalized = unicodedata.normalize("NFKC", text).casefold()
    seen: dict[str, None] = {}
    for word in _WORD.findall(normalized):
        for token in _split_cjk(word) if any(_is_cjk(c) for c in word) else (word,):
            if len(token) > 1 or _is_cjk(token) or token.isdigit():
                seen.setdefault(token, None)
    return tuple(seen)


def term_ids(tokens: tuple[str, ...], buckets: int, limit: int) -> list[int]:
    """Hash tokens into ``1..buckets-1`` (0 pads), at most ``limit`` of them.

    crc32, not ``hash()``: Python salts str hashes per process; the model's buckets must not move.

    >>> term_ids(("jazz", "piano"), 8192, 8) == term_ids(("jazz", "piano"), 8192, 8)
    True
    """
    return [zlib.crc32(t.encode("utf-8")) % (buckets - 1) + 1 for t in tokens[:limit]]
