"""Which text a field may hold, and which a voice can say (pure functions)."""

from __future__ import annotations

import pytest

from avatar.pipeline.text import invalid_characters, unspeakable_reason


@pytest.mark.parametrize(
    "text",
    ["Hello!", "What is 2 + 2?", "Привет", "你好", "١٢٣", "Tab\tand\nnewline", "Hi 😀", "**bold** answer", "é"],
)
def test_speakable(text: str) -> None:
    assert invalid_characters(text) is None
    assert unspeakable_reason(text) is None


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("😀😀", "nothing to say"),
        ("...", "nothing to say"),
        ("?!", "nothing to say"),
        ("*#~", "nothing to say"),
        ("\u0301", "nothing to say"),  # a lone combining accent
        ("a\x00b", "NUL"),
        ("\ud800", "surrogate"),
        ("x\udfff", "surrogate"),
        ("bell\x07", "control character U+0007"),
        ("c1\x85", "control character U+0085"),
        ("\ufdd0", "non-character"),
        ("end\U0010ffff", "non-character"),
    ],
)
def test_unspeakable(text: str, fragment: str) -> None:
    reason = unspeakable_reason(text)
    assert reason is not None and fragment in reason


def test_invalid_characters_name_the_character() -> None:
    assert invalid_characters("ok") is None
    assert invalid_characters("a\x1bb") == "holds the control character U+001B"
