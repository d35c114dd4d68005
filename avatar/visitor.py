"""What the visitor says about themself, kept for the rest of the session.

A small model asked "Do you remember my name?" five turns on may take the name for its own, or find
it gone with the oldest turns. So the sentences in which the visitor says who they are (their name,
where they are from or live, their work or studies, their age, their family) are kept as notes of the
session, apart from the persona's own facts, and given to the model in a note of their own before
each reply (``avatar.prompt``). Notes are written as the persona would say them back to the visitor:
"Your name is X.", and every other note the visitor's sentence turned to the second person ("I am a
teacher" → "You are a teacher"). A small model copies well: asked "Where do I live?", it reads back
"You live in Accra." where a note in the visitor's own words ("I live in Accra") had it answer "I live
in Accra", as if it were its own fact.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

MAX_NOTES = 8
NAME_NOTE = "Your name is "
NOTE_CHARS = 200

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# The name itself is matched case-sensitively after "Hi, I'm" (a capital letter: "Hi, I'm Anna", not
# "Hi, I'm fine"), in any case after "my name is" (a transcript may write it small).
_NAME = re.compile(
    r"(?i:\bmy name is|\bmy name's|\bcall me|\bi am called|\bi'm called|\bi go by)\s+([\w'’-]+)(?:\s+([A-Z][\w'’-]*))?"
    r"|(?i:(?:^|\b(?:hi|hello|hey)\b)\W*(?:i am|i'm))\s+([A-Z][\w'’-]*)(?:\s+([A-Z][\w'’-]*))?"
)
# Words a sentence about oneself holds ("I'm a teacher", "I live in Oslo", "my daughter is three").
_ABOUT_SELF = re.compile(
    r"\b(?:i(?:'m| am) (?:a|an|from|\d+|(?:\w+ )?years?)\b|i (?:live|lived|grew up|come|came|work|worked|study|"
    r"studied|teach|was born|have (?:a|an|two|three|four|\d+) (?:sons?|daughters?|kids?|child|children|dogs?|"
    r"cats?|brothers?|sisters?|wife|husband))\b|my (?:job|work|wife|husband|partner|son|daughter|kids|children|family|"
    r"dog|cat|hometown|favou?rite)\b)",
    re.IGNORECASE,
)
# Not a name, though it follows "I'm" ("Hi, I'm Sorry…" is rare; "Hi, I'm Back" rarer): a capitalised
# demonym or state ("I'm American", "I'm Polish") is not taken for a name.
_NOT_A_NAME = re.compile(r"(?:an|ian|ish|ese|ic|i)$|^(?:sorry|back|here|fine|good|ok|okay|well|new|so)$", re.IGNORECASE)

_SECOND_PERSON = (
    (re.compile(r"\bI am\b|\bI'm\b|\bI’m\b", re.IGNORECASE), "you are"),
    (re.compile(r"\bI was\b", re.IGNORECASE), "you were"),
    (re.compile(r"\bI have\b|\bI've\b|\bI’ve\b", re.IGNORECASE), "you have"),
    (re.compile(r"\bI\b"), "you"),
    (re.compile(r"\bmy\b", re.IGNORECASE), "your"),
    (re.compile(r"\bmyself\b", re.IGNORECASE), "yourself"),
    (re.compile(r"\bme\b", re.IGNORECASE), "you"),
)


def notes_in(text: str) -> list[str]:
    """The notes to keep from what the visitor said in one turn (oldest first, no duplicates)."""
    notes: list[str] = []
    for sentence in _SENTENCE.split(text.strip()):
        sentence = sentence.strip()
        if not sentence or sentence.endswith("?"):
            continue  # a question ("Am I a good pilot?") tells nothing about them
        name = _NAME.search(sentence)
        if name is not None:
            said_name = name.group(1) is not None  # "my name is …", not "Hi, I'm …"
            found = [w for w in name.groups() if w and w.lower() not in ("and", "but")]
            while found and not said_name and _NOT_A_NAME.search(found[-1]):
                found.pop()
            if found:
                notes.append(f"{NAME_NOTE}{' '.join(w[:1].upper() + w[1:] for w in found)}.")
        rest = _trimmed(_NAME.sub("", sentence)) if name else sentence
        if _ABOUT_SELF.search(rest):
            notes.append(_second_person(rest))
    return _unique(notes)


_GREETING = re.compile(
    r"^\W*(?:hi|hello|hey|good (?:morning|afternoon|evening)|nice to meet you|pleased to meet you)\W*(?:there)?\W*$",
    re.IGNORECASE,
)


def introduction(text: str) -> str | None:
    """The visitor's name when all they said is who they are ("Hi! I'm Anna. I work as a nurse."):
    greetings and sentences about themself, one of them their name, and no question. None otherwise."""
    sentences = [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]
    if not sentences or any(s.endswith("?") for s in sentences):
        return None
    name = None
    for sentence in sentences:
        notes = notes_in(sentence)
        named = [n.removeprefix(NAME_NOTE).rstrip(".") for n in notes if n.startswith(NAME_NOTE)]
        if named:
            name = named[-1]
        elif not notes and not _GREETING.match(sentence):
            return None  # something else was said too: that is for the model to answer
    return name


def remember(notes: Sequence[str], text: str) -> list[str]:
    """``notes`` with what ``text`` adds, the newest ``MAX_NOTES`` kept (a newer name replaces an older)."""
    new = notes_in(text)
    if not new:
        return list(notes)
    kept = list(notes)
    if any(n.startswith(NAME_NOTE) for n in new):
        kept = [n for n in kept if not n.startswith(NAME_NOTE)]
    return _unique(kept + new)[-MAX_NOTES:]


def _trimmed(text: str) -> str:
    """``text`` without a conjunction or punctuation left dangling at either end."""
    text = re.sub(r"^[\W_]*(?:(?:and|but|so)\b)?\W*", "", text)
    text = re.sub(r"\W*(?:\b(?:and|but|so))?[\W_]*$", "", text)
    return f"{text}." if text else ""


def _second_person(sentence: str) -> str:
    note = sentence
    for pattern, words in _SECOND_PERSON:
        note = pattern.sub(words, note)
    note = re.sub(r"^\W*(?:hi|hello|hey)\b\W*", "", note, flags=re.IGNORECASE).strip()
    note = note[:1].upper() + note[1:]
    if len(note) > NOTE_CHARS:
        note = note[:NOTE_CHARS].rsplit(" ", 1)[0] + "…"
    return note


def _unique(notes: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for note in notes:
        if note.lower() not in seen:
            seen.add(note.lower())
            out.append(note)
    return out
