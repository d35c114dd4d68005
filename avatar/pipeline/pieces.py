"""Cutting a reply into pieces of speech while the model is still writing it.

Pieces are whole sentences, except that the first sentence is handed on at its first break (a comma,
semicolon, colon, dash or conjunction after at least ``FIRST_CLAUSE_WORDS`` words, a preposition that
opens a phrase after ``FIRST_PHRASE_WORDS``, an article or the like after ``FIRST_LONG_WORDS``, an
ellipsis after ``FIRST_PAUSE_WORDS``): the voice and
the face start on it while the model finishes the sentence. A sentence counts as finished once the next
one has begun.

A slow voice (one that says so: ``quick_start``) is handed a shorter first piece still (``quick_opening``:
a clause mark after ``QUICK_WORDS`` words, a conjunction, preposition or article after
``QUICK_PHRASE_WORDS``), and then the rest of that sentence's first clause, so that the second piece is
short enough to be voiced while the first plays.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from avatar.pipeline.text import (
    INVENTS,
    TAKES_VISITOR_FACTS,
    claimed_visitor_note,
    clean_reply,
    off_the_rails,
    opens_visitor_claim,
    split_sentences,
    usable_piece,
)
from avatar.prompt import prompt_parts
from avatar.types import ChatMessage

log = logging.getLogger(__name__)

FIRST_CLAUSE_WORDS = 4
FIRST_PAUSE_WORDS = 2
FIRST_PHRASE_WORDS = 5
FIRST_LONG_WORDS = 7
_CONJUNCTIONS = "and|but|when|because|so|while|which|where|who|until|before|after"
# The start of a sentence up to its first clause break: a comma, semicolon, colon, dash or ellipsis, or
# the space before a conjunction (which opens the next piece). A mark counts as soon as it is written,
# before the next token, unless a digit precedes it (1,000; 10:30; 1990-2000); a conjunction counts once
# the word after it has begun (until then "and" may still become "android").
_FIRST_CLAUSE = re.compile(
    rf"^(?:\S+\s+){{{FIRST_CLAUSE_WORDS - 1},}}?\S*?"
    rf"(?:(?<!\d)(?:[,;:\u2013\u2014\u2026]|\.\.\.)(?=\s|$)|\w(?=\s+(?:{_CONJUNCTIONS})\s))",
    re.IGNORECASE,
)
# A long opening with no clause break ("The cities and thunderstorms looked different from the ones I
# had seen") is cut where speakers pause too, so that the voice need not wait for the whole sentence:
# before a preposition that opens a phrase once five words are written; past seven words also before
# an article, a possessive, "of", "to", "like" or "as" (which bind to shorter openings: "a lot of",
# "used to", "I would like").
_PREPOSITIONS = (
    "about|above|across|after|against|along|among|around|at|before|behind|below|beneath|beside|between|beyond|"
    "during|for|from|in|inside|into|near|on|onto|over|since|than|through|toward|towards|under|until|"
    "with|within|without"
)
_PHRASE_OPENERS = "a|an|the|my|our|your|his|her|their|its|this|these|those|some|every|of|to|like|as"


def _before(words: int, openers: str) -> re.Pattern[str]:
    """The start of a sentence, ``words`` words or more, up to the space before one of ``openers``
    (once the word after it has begun: until then "in" may still become "inside")."""
    return re.compile(rf"^(?:\S+\s+){{{words - 1},}}?\S*?[\w'\"\)](?=\s+(?:{openers})\s)", re.IGNORECASE)


_FIRST_PHRASE = _before(FIRST_PHRASE_WORDS, _PREPOSITIONS)
_FIRST_LONG_PHRASE = _before(FIRST_LONG_WORDS, f"{_PREPOSITIONS}|{_PHRASE_OPENERS}")
# An ellipsis is a pause the voice makes anyway ("The stars... that was"), so it may end a shorter piece.
_FIRST_PAUSE = re.compile(rf"^(?:\S+\s+){{{FIRST_PAUSE_WORDS - 1},}}?\S*?(?:\u2026|\.\.\.)(?=\s|$)")


# A slow voice's first piece: up to a clause mark after two words ("Well, yes," | "In the end,"), or up to
# the space before a conjunction, preposition, article, "of" or "that" once three are written ("I looked
# down | at the Earth"), never ending on a word that binds to the next ("the", "of", "to", "I"). Measured on Kokoro-82M
# (docs/models.md, "Voices"): its first piece costs ~0.25 s plus ~0.3 s a second of speech on one core.
QUICK_WORDS = 2
QUICK_PHRASE_WORDS = 3
_QUICK_OPENERS = frozenset(
    f"{_CONJUNCTIONS}|{_PREPOSITIONS}|a|an|the|my|our|your|his|her|their|its|this|these|those|some|every".split("|")
)
_BINDS_ON = _QUICK_OPENERS | frozenset("of|to|that|i|is|was|were|be|been|very|so|not|no|just|really".split("|"))
# "of" and "that" open a phrase too ("The hardest part | of my training", "a vast expanse | that
# stretched"), except after a word they bind to ("a lot of", "most of", "so that").
_QUICK_OPENERS_AFTER = frozenset(("of", "that"))
_BINDS_OF = frozenset("lot|lots|bit|couple|kind|sort|bunch|most|all|some|one|each|none|many|few|much|out".split("|"))
_WORD = re.compile(r"\S+")
_CLAUSE_MARK = re.compile(r"(?<!\d)(?:[,;:\u2013\u2014\u2026]|\.\.\.)$")
_WORD_END = re.compile(r"[\w'\"\)]$")


def quick_opening(sentence: str) -> str | None:
    """The short opening of ``sentence`` a slow voice may start on (``QUICK_WORDS``), if it has one yet;
    a conjunction, preposition or article counts once the word after it has begun."""
    words = list(_WORD.finditer(sentence))
    for k, word in enumerate(words):
        text = word.group(0)
        if k + 1 >= QUICK_WORDS and _CLAUSE_MARK.search(text):
            return sentence[: word.end()]
        if k + 1 < QUICK_PHRASE_WORDS or k + 2 >= len(words):
            continue
        after = words[k + 1].group(0).lower()
        bare = text.lower().strip("\"'()")
        opens = after in _QUICK_OPENERS or (after in _QUICK_OPENERS_AFTER and bare not in _BINDS_OF)
        if opens and bare not in _BINDS_ON and _WORD_END.search(text):
            return sentence[: word.end()]
    return None


def first_clause(sentence: str) -> str | None:
    """The opening of ``sentence`` that may be spoken before the rest is written, if it has one yet."""
    rules = (_FIRST_PAUSE, _FIRST_CLAUSE, _FIRST_PHRASE, _FIRST_LONG_PHRASE)
    found = [m.group(0) for m in (rule.match(sentence) for rule in rules) if m]
    return min(found, key=len) if found else None


def _speakable(part: str, messages: Sequence[ChatMessage], spoken: str = "") -> tuple[str | None, str | None]:
    """The cleaned piece, if it has words and is not off the rails after ``spoken`` (else None: it is
    not spoken), and why it is off the rails."""
    piece = clean_reply(part, 1)
    if usable_piece(piece, messages, spoken):
        return piece, None
    why = off_the_rails(piece, messages, spoken)
    if why == TAKES_VISITOR_FACTS:  # said as its own: said back to the visitor instead, as the note has it
        note = claimed_visitor_note(piece, prompt_parts(messages).visitor_notes)
        log.info("piece said back to the visitor", extra={"piece": piece[:200], "note": note})
        return note, why
    if why is not None:
        log.info("piece not spoken", extra={"why": why, "piece": piece[:200]})
    return None, why


class PieceSplitter:
    """Takes the model's text as it arrives (``feed``) and hands out finished pieces of speech.

    Once ``max_sentences`` sentences are out, ``complete`` is true and the caller stops the model.
    ``finish`` is called when the model has stopped: a trailing sentence cut off by the token limit is
    kept only if it ends properly, if its head is already spoken, or if it is all there is.
    """

    def __init__(
        self,
        max_sentences: int = 2,
        messages: Sequence[ChatMessage] = (),
        unknown_reply: str | None = None,
        *,
        quick_start: bool = False,
    ) -> None:
        self.max_sentences = max_sentences
        self.quick_start = quick_start  # a slow voice: the first piece is shorter (``quick_opening``)
        self.messages = messages  # the prompt: a piece that reads it back is not spoken
        # Said instead of a piece that makes up facts of the persona's own life; the reply ends there.
        self.unknown_reply = unknown_reply
        self.caught = False  # it made something up: what is shown becomes what is said
        self.text = ""
        self.emitted = 0  # sentences handed on (wholly or in part)
        self._used = 0  # sentences of the text finished with
        self._head = 0  # characters of sentence ``_used`` already handed on (its first clause)
        self._openings = 0  # pieces of the first sentence handed on before its end
        self._spoken: list[str] = []  # the pieces handed on
        self._visitor_notes = prompt_parts(messages).visitor_notes

    @property
    def complete(self) -> bool:
        return self.emitted >= self.max_sentences

    @property
    def shown(self) -> str:
        """The reply as far as it is written, limited to the sentences that will be kept (for display)."""
        if self.caught:
            return " ".join(self._spoken)
        return " ".join(split_sentences(self.text)[: self.max_sentences])

    def feed(self, text: str) -> list[str]:
        """Add what the model just wrote; the pieces it completes."""
        self.text += text
        parts = split_sentences(self.text)
        out: list[str] = []
        while self._used < len(parts) - 1 and not self.complete:
            out += self._finish_sentence(parts)
        while not self.complete and self.emitted == 0 and self._used < len(parts):
            clause = self._opening(parts[self._used])
            if clause and opens_visitor_claim(parts[self._used][: self._head + len(clause)], self._visitor_notes):
                clause = None  # judged whole once written: it may be the visitor's fact said as its own
            piece = self._checked(clause, " ".join(self._spoken)) if clause else None
            if not (clause and piece):
                break
            out.append(piece)
            self._spoken.append(piece)
            self._head += len(clause)
            self._openings += 1
        return out

    def _opening(self, sentence: str) -> str | None:
        """The next opening piece of the first sentence, if one is written (the text up to it, from
        ``_head``): its first clause; for a slow voice its quick opening, then the rest of its first
        clause."""
        if self._openings >= (2 if self.quick_start else 1):
            return None
        if self._openings == 0:
            if not self.quick_start:
                return first_clause(sentence)
            found = [c for c in (quick_opening(sentence), first_clause(sentence)) if c]
            return min(found, key=len) if found else None
        rest = sentence[self._head :]
        lead = len(rest) - len(rest.lstrip())
        clause = first_clause(rest[lead:])
        return rest[:lead] + clause if clause else None

    def finish(self) -> list[str]:
        """The model has stopped: what is left worth saying."""
        parts = split_sentences(self.text)
        if self.complete or self._used >= len(parts):
            return []
        if self.emitted == 0 or self._head > 0 or parts[self._used].rstrip().endswith((".", "!", "?")):
            return self._finish_sentence(parts)
        return []

    def _checked(self, part: str, spoken: str) -> str | None:
        piece, why = _speakable(part, self.messages, spoken)
        if why == INVENTS:  # what it would go on to say of itself is as likely made up: it says it does not know
            self.emitted, self.caught = self.max_sentences, True
            return self.unknown_reply
        return piece

    def _finish_sentence(self, parts: list[str]) -> list[str]:
        piece = self._checked(parts[self._used][self._head :], " ".join(self._spoken))
        if self.complete:  # it made something up: the reply ends with the persona saying it does not know
            if piece:
                self._spoken.append(piece)
            return [piece] if piece else []
        if piece:
            self._spoken.append(piece)
        if piece or self._head > 0:
            self.emitted += 1
        self._used, self._head = self._used + 1, 0
        return [piece] if piece else []
