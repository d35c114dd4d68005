"""Rule-based checks of one persona reply: what a visitor would notice is wrong with it.

Pure functions on text, so each rule is unit-tested on hand-written good and bad replies. A check
answers True (passed), False (failed) or None (does not apply to this question).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from avatar.bench.normalize import normalize
from avatar.pipeline.text import REPEATS_QUESTION, echoes, off_the_rails, split_sentences, words
from avatar.types import ChatMessage

# Words that only a speaker talking about themself uses, per language. Spanish drops its pronouns, so
# its common first-person verb forms count too.
FIRST_PERSON: dict[str, frozenset[str]] = {
    "en": frozenset("i i'm i've i'd i'll me my mine myself we we're we've our ours us".split()),
    "fr": frozenset("je j'ai j'étais j'adore j'aime me m'a moi mon ma mes nous notre nos".split()),
    "de": frozenset("ich mich mir mein meine meinen meiner wir uns unser unsere".split()),
    "es": frozenset("yo me mi mis mí conmigo nosotros nuestro nuestra soy estoy fui tengo he era estaba".split()),
}
# Frequent short words of each language: enough to tell which of these a sentence or two is written in.
STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        "the a an and is are was were it i you to of in on for with that this what my me be have do not but so".split()
    ),
    "fr": frozenset(
        "le la les un une et est sont était je tu vous il elle de du des en dans pour avec que qui ce ça "
        "mon ma mes pas mais très c'est j'ai oui bien".split()
    ),
    "de": frozenset(
        "der die das ein eine und ist sind war ich du sie er es zu von in im mit für dass nicht aber sehr "
        "mein meine ja auch wie".split()
    ),
    "es": frozenset(
        "el la los las un una y es son era yo tú usted de del en con para que qué por muy mi mis no pero "
        "sí fue como".split()
    ),
}
_NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand "
    "million billion".split()
)
_LIST_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+", re.MULTILINE)
_MARKDOWN = re.compile(r"\*\*|__|`|^\s*#+\s|\[[^\]]+\]\([^)]+\)", re.MULTILINE)
_STAGE_DIRECTION = re.compile(
    r"\*[^*\n]{1,60}\*|\((?:[^)]*\b(?:laugh|smil|sigh|paus|grin|nod|wink|chuckl)\w*)[^)]*\)|\[[^\]\n]{1,60}\]",
    re.IGNORECASE,
)
_SELF_INTRODUCTION = r"(?:i'm|i am|my name is|my name's|call me|it's|this is|je suis|je m'appelle|ich bin|soy|me llamo)"


@dataclass(frozen=True)
class ReplyCase:
    """What a reply is checked against: the question, and what the persona is."""

    question: str
    language: str = "en"
    about_self: bool = True  # a question to the persona about itself: the reply speaks in the first person
    answer: int | None = None  # arithmetic: the number the reply must give
    remember: str | None = None  # a word from earlier in the conversation the reply must use


def guess_language(text: str) -> str | None:
    """Which of en, fr, de, es ``text`` is written in, by its frequent short words; None if unclear."""
    said = words(text)
    scores = {lang: sum(w in stop for w in said) for lang, stop in STOPWORDS.items()}
    best = max(scores, key=lambda lang: scores[lang])
    if scores[best] == 0 or list(scores.values()).count(scores[best]) > 1:
        return None
    return best


def first_person(reply: str, language: str) -> bool:
    said = words(reply)
    if language == "fr" and any(w.startswith(("j'", "m'")) for w in said):  # j'espère, m'appelle
        return True
    return bool(FIRST_PERSON.get(language, FIRST_PERSON["en"]).intersection(said))


def third_person_self(reply: str, persona_name: str) -> bool:
    """True when the reply speaks of the persona by name other than to introduce itself ("Eileen loved
    flying" rather than "I loved flying"; "I'm Eileen" is fine)."""
    name = re.escape(persona_name)
    mentions = len(re.findall(rf"\b{name}\b", reply, re.IGNORECASE))
    introductions = len(re.findall(rf"\b{_SELF_INTRODUCTION}\s+{name}\b", reply, re.IGNORECASE))
    return mentions > introductions


def has_emoji(text: str) -> bool:
    return any(unicodedata.category(ch) == "So" or 0x1F000 <= ord(ch) <= 0x1FAFF for ch in text)


def markup(raw: str) -> str | None:
    """What in the model's raw text a voice cannot say: a list, markdown, an emoji, a stage direction."""
    if _LIST_LINE.search(raw):
        return "list"
    if _MARKDOWN.search(raw):
        return "markdown"
    if has_emoji(raw):
        return "emoji"
    if _STAGE_DIRECTION.search(raw):
        return "stage direction"
    return None


def gives_number(reply: str, answer: int) -> bool:
    """The reply states ``answer``, in digits or in words ("56", "fifty-six"), as a whole number: the
    run of number words must be exactly the answer's ("one hundred fifty six" is not 56)."""
    runs: list[list[str]] = [[]]
    for word in normalize(reply).split():
        if word in _NUMBER_WORDS:
            runs[-1].append(word)
        elif runs[-1]:
            runs.append([])
    return normalize(str(answer)).split() in runs


def sentence_count_ok(reply: str) -> bool:
    """One or two sentences, the last one finished."""
    sentences = split_sentences(reply)
    return 1 <= len(sentences) <= 2 and reply.rstrip().endswith((".", "!", "?", '"', "'", ")"))


def copies(reply: str, question: str, system_prompt: str) -> bool:
    """The reply reads back the system prompt (10 words in a row, or 6 with words of its instructions:
    a persona may describe itself in its prompt's words) or is the question itself."""
    messages = [ChatMessage("system", system_prompt), ChatMessage("user", question)]
    reads_back = off_the_rails(reply, messages) in ("reads back the system prompt", REPEATS_QUESTION)
    return reads_back or echoes(reply, system_prompt, 10)


def language_ok(reply: str, language: str) -> bool | None:
    """The reply is in ``language``; None when too short to tell ("7 times 8 equals 56.")."""
    found = guess_language(reply)
    return None if found is None else found == language


def check_reply(
    case: ReplyCase, reply: str, raw: str, *, fallback: bool, persona_name: str, system_prompt: str
) -> dict[str, bool | None]:
    """Every rule for one reply (``raw``: the model's own text, before the clean-up)."""
    return {
        "answered": not fallback,
        "first_person": first_person(reply, case.language) if case.about_self and not fallback else None,
        "no_third_person": not third_person_self(reply, persona_name),
        "no_markup": markup(raw) is None,
        "one_or_two_sentences": sentence_count_ok(reply),
        "arithmetic": gives_number(reply, case.answer) if case.answer is not None else None,
        "remembers": case.remember.lower() in reply.lower() if case.remember else None,
        "language": language_ok(reply, case.language) if not fallback else None,
        "not_a_copy": not copies(reply, case.question, system_prompt),
    }


CHECKS: tuple[str, ...] = (
    "answered",
    "first_person",
    "no_third_person",
    "no_markup",
    "one_or_two_sentences",
    "arithmetic",
    "remembers",
    "language",
    "not_a_copy",
)
