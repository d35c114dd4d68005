"""Turning a language model's raw text into something a voice should say, and telling when it is not
worth saying at all."""

from __future__ import annotations

import re
from collections.abc import Sequence

from avatar.types import ChatMessage

_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+(?=[A-Z0-9\"'(])")
_MARKUP = re.compile(r"[*_`#>~]|\[[^\]]*\]\([^)]*\)|\(\s*(?:laughs|smiles|pauses)[^)]*\)", re.IGNORECASE)
_ROLE_PREFIX = re.compile(r"^\s*(?:assistant|[A-Z][a-z]+)\s*:\s*")
_NON_SPEECH = re.compile(r"[^\w\s.,!?;:'\"()\-–—%$€£&/]", re.UNICODE)
# Arithmetic signs between numbers, which the clean-up would otherwise drop ("7 × 8 = 56" → "7 8 56").
# A minus needs spaces around it: 1990-2000 is a range.
_ARITHMETIC = (
    (re.compile(r"(?<=\d)\s*[×*]\s*(?=\d)"), " times "),
    (re.compile(r"(?<=\d)\s*\+\s*(?=\d)"), " plus "),
    (re.compile(r"(?<=\d)\s+[-−]\s+(?=\d)"), " minus "),
    (re.compile(r"(?<=\d)\s*÷\s*(?=\d)"), " divided by "),
    (re.compile(r"(?<=\d)\s*=\s*(?=-?\d)"), " equals "),
)


def split_sentences(text: str) -> list[str]:
    """Sentences of running text (a sentence ends in . ! or ? followed by a capital or digit)."""
    return [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]


def clean_reply(text: str, max_sentences: int = 2) -> str:
    """Strip markup, emoji and role prefixes; keep at most ``max_sentences`` whole sentences.

    A trailing fragment cut off by the token limit is dropped when at least one whole sentence exists.
    """
    text = speakable_arithmetic(text)
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


def speakable_arithmetic(text: str) -> str:
    """Arithmetic signs between numbers as words: "7 × 8 = 56" → "7 times 8 equals 56"."""
    for sign, words in _ARITHMETIC:
        text = sign.sub(words, text)
    return text


# ------------------------------------------------------------------------------- off the rails

_TEMPLATE_LEAK = re.compile(r"<\||\|>|\bim_(?:start|end)\b|\b(?:user|assistant|system|visitor)\s*:", re.IGNORECASE)
_OUT_OF_CHARACTER = re.compile(
    r"\b(?:as an ai|an ai(?: language)? model|language model|artificial intelligence|ai assistant|"
    r"virtual assistant|chatbot|can(?:no|'|’)t assist\b|qwen|alibaba cloud|smollm|hugging ?face|openai|chatgpt|"
    r"(?:i am|i['’]m)(?: just| only| merely)? an? (?:ai|computer program|machine)|"
    r"i don['’]t have (?:a body|feelings))\b",
    re.IGNORECASE,
)
# A call: a name and its parenthesis with no space between, as code writes it and prose does not.
_CODE = re.compile(r"\b[A-Za-z_][\w.]*\([^()]*\)")
_STUCK = re.compile(r"\b(\w+)(?:\W+\1\b){3,}", re.IGNORECASE)  # the same word four times running
ECHO_WORDS = 6
# Words of a system prompt's instructions: a persona may describe itself in its prompt's words ("a
# retired astronaut who flew the Space Shuttle"), but a run that includes these reads the orders back.
_INSTRUCTION_WORDS = frozenset(
    "you your you're yourself reply replies answer sentence sentences visitor visitor's never lists emoji "
    "directions language instructions".split()
)
_WORD = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    """The lower-case words of ``text`` (apostrophes kept: "I'm" is one word)."""
    return _WORD.findall(text.lower())


def shared_runs(text: str, source: str, run: int = ECHO_WORDS) -> list[tuple[str, ...]]:
    """Every ``run`` consecutive words of ``text`` that also appear, in order, in ``source``."""
    said, seen = words(text), words(source)
    grams = {tuple(seen[i : i + run]) for i in range(len(seen) - run + 1)}
    return [gram for i in range(len(said) - run + 1) if (gram := tuple(said[i : i + run])) in grams]


PARROT_WORDS = 4  # a piece that is the question's first words, this many or more, parrots it
REPEATS_QUESTION = "repeats the question"


def echoes(text: str, source: str, run: int = ECHO_WORDS) -> bool:
    """True when ``text`` repeats ``run`` or more consecutive words of ``source``."""
    return bool(shared_runs(text, source, run))


def off_the_rails(piece: str, messages: Sequence[ChatMessage]) -> str | None:
    """Why a cleaned piece of a reply should not be spoken, or None when it may be.

    Off the rails: the chat template's markers or role names leaking out, the model speaking as an AI
    assistant instead of the persona, code, a word stuck on repeat, or the instructions of the system
    prompt (or the visitor's words) read back.
    """
    if _TEMPLATE_LEAK.search(piece):
        return "template markers"
    if _OUT_OF_CHARACTER.search(piece):
        return "out of character"
    if _CODE.search(piece):
        return "code"
    if _STUCK.search(piece):
        return "stuck on repeat"
    system = next((m.content for m in messages if m.role == "system"), "")
    if any(_INSTRUCTION_WORDS.intersection(run) for run in shared_runs(piece, system)):
        return "reads back the system prompt"
    question = messages[-1].content if messages and messages[-1].role == "user" else ""
    said, asked = words(piece), words(question)
    if said and (said == asked or (len(said) >= PARROT_WORDS and asked[: len(said)] == said)):
        return REPEATS_QUESTION  # whole, or its opening (a first piece is cut before a phrase)
    return None


def usable_piece(piece: str, messages: Sequence[ChatMessage]) -> bool:
    """A cleaned piece worth speaking: it has words and is not off the rails."""
    return any(ch.isalpha() for ch in piece) and off_the_rails(piece, messages) is None
