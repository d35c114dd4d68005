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
