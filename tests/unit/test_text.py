"""Tokenization for Latin and CJK text."""

from __future__ import annotations

from app.core.text import tokenize


def test_latin_tokens_are_casefolded_and_deduplicated() -> None:
    assert tokenize("Jazz PIANO jazz, Piano!") == ("jazz", "piano")


def test_single_latin_letters_are_dropped_but_digits_kept() -> None:
    assert tokenize("a 7 b song") == ("7", "song")


def test_cjk_gets_characters_and_bigrams() -> None:
    assert tokenize("爵士乐") == ("爵", "士", "乐", "爵士", "士乐")


def test_mixed_scripts() -> None:
    tokens = tokenize("jazz爵士 live")
    assert tokens[:1] == ("jazz",)
    assert {"爵", "士", "爵士", "live"} <= set(tokens)


def test_full_width_forms_are_normalized() -> None:
    assert tokenize("ＪＡＺＺ") == ("jazz",)
