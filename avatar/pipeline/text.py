"""Turning a language model's raw text into something a voice should say."""

from __future__ import annotations

import re

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(])")
_MARKUP = re.compile(r"[*_`#>~]|\[[^\]]*\]\([^)]*\)|\(\s*(?:laughs|smiles|pauses)[^)]*\)", re.IGNORECASE)
_ROLE_PREFIX = re.compile(r"^\s*(?:assistant|[A-Z][a-z]+)\s*:\s*")
_NON_SPEECH = re.compile(r"[^\w\s.,!?;:'\"()\-–—%$€£&/]", re.UNICODE)


def split_sentences(text: str) -> list[str]:
    """Sentences of running text (a sentence ends in . ! or ? followed by a capital or digit)."""
    return [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]


def clean_reply(text: str, max_sentences: int = 2) -> str:
    """Strip markup, emoji and role prefixes; keep at most ``max_sentences`` whole sentences.

    A trailing fragment cut off by the token limit is dropped when at least one whole sentence exists.
    """
    text = _MARKUP.sub("", text)
    text = _NON_SPEECH.sub("", text)
    text = _ROLE_PREFIX.sub("", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s+([.,!?;:])", r"\1", text)
    sentences = split_sentences(text)
    whole = [s for s in sentences if re.search(r"[.!?][\"')\]]*$", s)]
    if whole:
        kept = []
        for s in sentences:
            if not re.search(r"[.!?][\"')\]]*$", s):
                break
            kept.append(s)
        sentences = kept or whole
    return " ".join(sentences[:max_sentences]).strip()


_ALLOWED_CONTROLS = frozenset("\t\n\r")


def invalid_characters(text: str) -> str | None:
    """What makes ``text`` unfit for any text field (NUL and other control characters, lone UTF-16
    surrogates, Unicode non-characters), as the end of a sentence for the user; None when it is fine."""
    for ch in text:
        code = ord(ch)
        if code == 0:
            return "holds a NUL character"
        if (code < 0x20 or 0x7F <= code < 0xA0) and ch not in _ALLOWED_CONTROLS:
            return f"holds the control character U+{code:04X}"
        if 0xD800 <= code <= 0xDFFF:
            return f"holds a lone surrogate (U+{code:04X}), which is not text"
        if 0xFDD0 <= code <= 0xFDEF or code & 0xFFFE == 0xFFFE:
            return f"holds the non-character U+{code:04X}"
    return None


def unspeakable_reason(text: str) -> str | None:
    """Why a voice cannot say ``text`` (a sentence for the user), or None when it can be spoken: it must
    be valid text and hold at least one letter or digit once markup and emoji are set aside."""
    problem = invalid_characters(text)
    if problem is not None:
        return f"The text {problem}; send plain text."
    spoken = _NON_SPEECH.sub("", _MARKUP.sub("", text))
    if not any(ch.isalnum() for ch in spoken):
        return "The text has nothing to say aloud: it holds no letters or digits (only emoji, symbols or punctuation)."
    return None
