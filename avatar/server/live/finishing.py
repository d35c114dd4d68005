"""Whether the user has finished speaking, asked at each pause: from how it sounded and what was said.

Silence alone cannot tell "I'm done" from "I'm thinking": it waits as long after a finished question
as after "So what was it like, when you…". At each pause the session asks two things: the turn-end
model (Smart Turn: P(complete) from the audio's last 8 s) and the words recognised up to the pause,
whose last word or mark may say the phrase is not over (a trailing "and", "so", "um", "the", "of", a
comma, an ellipsis). ``judge`` turns both into how long the pause must last before the turn ends:

- no model (it failed to load or to run): the silence rule's ``fallback_ms``;
- the words say unfinished: the longest wait (``unfinished_ms``), whatever the audio says (the model
  scores a phrase end such as "my fellow Americans" as complete, though the sentence goes on);
- only a greeting ("Hello!"): an in-between wait (``unsure_ms``), as a question usually follows it;
- the model is sure it is complete (``sure``): a short silence (``finished_ms``);
- the model leans to complete (``threshold``): the in-between wait. Measured on the committed
  questions: at their ends 0.95-0.99 but for one hesitant question (0.75) and one whose last words
  sound like more is coming (0.25); at a comma pause inside a fluent question 0.62-0.90, and 0.94
  after a phrase end in a real speech whose sentence went on (issue 19);
- the model says not complete: the longest wait (Whisper writes a question mark after a cut-off
  question too, so that is no sign of a whole one).

No words at all (a cough, a noise) ends at once: there is nothing to wait for, and nothing is answered.

The words judged are those the recogniser is sure of (``heard_words``): at a pause inside a question
Whisper tiny finishes the cut-off phrase with a word that was not said ("What did you" → "What did you
miss?", "… mean?"), which makes it look whole; such a word comes last and with a low probability (0.30
there, "mean?" 0.43), so trailing words under ``SURE_WORD`` are left out and what remains is judged
too: an unfinished ending in either says unfinished (leaving a word out can only add a cue, so a
question's real end is never taken for a finished one by it). On the committed fixtures (Whisper tiny,
short window) the last words at the questions' ends had 0.87-0.99, the guesses at pauses 0.30-0.52.
The transcript itself, which the reply answers, keeps every word.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import structlog

from avatar.types import AudioArray, Transcript

log = structlog.stdlib.get_logger(__name__)

TurnDetectorName = Literal["smart-turn", "silence"]

# Words after which a phrase is not over: conjunctions, articles and possessives, fillers; Whisper
# often writes a question mark after a cut-off question ("What did you eat and?"), which does not
# make it whole. Not auxiliaries or pronouns ("Yes, I can.", "Thank you."): they end sentences as often.
CONTINUING = frozenset(
    "and but or nor so because cause if when while whereas whether although unless until since than "
    "that which the a an my your his her our their every each um uh er erm ah hmm".split()
)
# Prepositions: a phrase goes on after them, but a question may end in one ("Where are you from?").
PREPOSITIONS = frozenset("of to for with from about into onto at by in on as like".split())
# A question word, then an auxiliary and its subject last ("What did you", "Where can we"): the main
# verb is still to come. ("How are you?" ends in a verb and its subject: "are" is not listed.)
QUESTION_WORDS = frozenset("what when where why how which who whom whose".split())
AUXILIARIES = frozenset("do did does can could would will should shall might must have has had".split())
SUBJECTS = frozenset("i you we they he she it".split())
GREETINGS = frozenset("hello hi hey hiya greetings morning evening afternoon good there".split())
TRAILING_MARKS = (",", "...", "…", "-", "–", "—", ";", ":")
WORD = re.compile(r"[a-z']+")


SURE_WORD = 0.6  # a last word less probable than this may be the recogniser's guess, not what was said
MAX_UNSURE_WORDS = 2  # at most this many such words are left out at the end


def heard_words(transcript: Transcript) -> str:
    """The transcript without the words at its end the recogniser is unsure of (``SURE_WORD``); its
    text as it is when it has no word probabilities. The trailing mark of a word left out goes too
    (its "?" was part of the guess)."""
    words = [w for s in transcript.segments for w in s.words]
    if not words:
        return transcript.text
    dropped = 0
    while words and dropped < MAX_UNSURE_WORDS and words[-1].probability < SURE_WORD:
        words.pop()
        dropped += 1
    if not dropped:
        return transcript.text
    return " ".join(w.text for w in words)


@dataclass(frozen=True)
class FinishOptions:
    """How long a pause must last to end the turn, by what was judged of it (milliseconds)."""

    finished_ms: int = 200
    unsure_ms: int = 700
    unfinished_ms: int = 1500
    fallback_ms: int = 400  # the silence rule's wait, when the model cannot be asked
    threshold: float = 0.5  # P(complete) from the model that counts as probably complete
    sure: float = 0.95  # ... as surely complete


@dataclass(frozen=True)
class Verdict:
    """What was judged at a pause: the wait it leads to, and why."""

    wait_ms: int
    why: str  # finished, unsure, unfinished, no_words or no_model
    probability: float | None = None  # the model's P(complete); None when it was not asked or failed
    cue: str | None = None  # the words' ending that says the phrase goes on

    @property
    def finished(self) -> bool:
        return self.why in ("finished", "no_words")


def unfinished_cue(text: str) -> str | None:
    """The ending of ``text`` that says the phrase is not over (a trailing comma, "and", "um" ...), or
    None. A question mark wins over a preposition only: "What are you thinking of?" is whole."""
    stripped = text.strip()
    for mark in TRAILING_MARKS:
        if stripped.endswith(mark):
            return mark
    words = WORD.findall(stripped.lower())
    if not words:
        return None
    if words[-1] in CONTINUING or (words[-1] in PREPOSITIONS and not stripped.endswith("?")):
        return words[-1]
    if len(words) >= 3 and words[-2] in AUXILIARIES and words[-1] in SUBJECTS:
        if QUESTION_WORDS & set(words[:-2]):
            return f"{words[-2]} {words[-1]}"
    return None


# What a listener says to keep the speaker going, not to take the turn ("mm-hm", "yeah", "I see"), and
# sounds Whisper writes as words (a laugh, a throat cleared).
BACKCHANNEL_WORDS = frozenset(
    "mm mmm mhm hm hmm uh huh ah aha oh wow yeah yes yep yup ok okay right sure i see nice cool great really "
    "ha haha hahaha ahem".split()
)
BACKCHANNEL_MAX_WORDS = 3
NOT_WORDS = re.compile(r"\[[^\]]*\]|\([^)]*\)|\*[^*]*\*")  # Whisper's "[coughing]", "(laughs)", "*sigh*"


def is_backchannel(text: str | None) -> bool:
    """Whether what was heard over the reply leaves the turn with it: no words (a cough, a laugh, a
    noise: Whisper writes none, or a sound in brackets) or only a backchannel ("Mm-hmm.", "Okay.")."""
    if text is None:
        return True
    words = WORD.findall(NOT_WORDS.sub(" ", text).lower())
    return len(words) <= BACKCHANNEL_MAX_WORDS and all(w in BACKCHANNEL_WORDS for w in words)


# The letters Whisper spells a hum, a hem or an "uh-huh" with when it cannot tell what it heard ("M'hama.",
# "Eha.", "A hum.", "Aham." for "mm-hm", "uh-huh" and "ahem" spoken by the embedded voice).
VOCAL_LETTERS = frozenset("aehmu'")


def is_vocal_sound(text: str) -> bool:
    """Whether a reading the recogniser is *unsure* of is a vocal sound, not words: at most
    ``BACKCHANNEL_MAX_WORDS`` words, each spelt only with ``VOCAL_LETTERS``. Not for a sure reading:
    said clearly, "Emma." and "Mum." are words."""
    words = WORD.findall(NOT_WORDS.sub(" ", text).lower())
    return 0 < len(words) <= BACKCHANNEL_MAX_WORDS and all(set(w) <= VOCAL_LETTERS for w in words)


def is_greeting(text: str) -> bool:
    """Whether ``text`` is only a greeting (and maybe a name): "Hello!", "Hi there, Eileen."."""
    words = re.findall(r"[A-Za-z']+", text)
    if not 0 < len(words) <= 3 or words[0].lower() not in GREETINGS:
        return False
    return all(w.lower() in GREETINGS or w[0].isupper() for w in words)


def judge(probability: float | None, text: str | None, options: FinishOptions, sure: str | None = None) -> Verdict:
    """How long the pause must last before the turn ends, from the model's P(complete) (None: not
    asked or failed) and the words up to the pause (None: not recognised in time); ``sure``: those
    words without the trailing ones the recogniser was unsure of (``heard_words``)."""
    o = options
    if text is not None and not WORD.search(text.lower()):
        return Verdict(o.finished_ms, "no_words", probability)
    if probability is None:
        return Verdict(o.fallback_ms, "no_model")
    cue = unfinished_cue(text) if text is not None else None
    if cue is None and sure is not None and text is not None and sure != text:
        cue = unfinished_cue(sure)
    if cue is not None:
        return Verdict(o.unfinished_ms, "unfinished", probability, cue)
    if text is not None and is_greeting(text):
        return Verdict(o.unsure_ms, "unsure", probability)
    if probability >= max(o.sure, o.threshold):
        return Verdict(o.finished_ms, "finished", probability)
    if probability >= o.threshold:
        return Verdict(o.unsure_ms, "unsure", probability)
    return Verdict(o.unfinished_ms, "unfinished", probability)


class TurnEndModel:
    """The process's turn-end model as the live sessions use it, and what ``/readyz`` says of it.

    ``load`` runs once (in a worker thread, at start-up); until it has succeeded, and after it failed,
    ``available`` is False and the sessions use the silence rule. A call that fails answers None (that
    pause falls back to the silence rule), is counted, and the last error is shown in ``/readyz``."""

    def __init__(self, name: TurnDetectorName, loader: Callable[[], Callable[[AudioArray], float]]) -> None:
        self.name = name
        self._loader = loader
        self._model: Callable[[AudioArray], float] | None = None
        self.state: Literal["off", "loading", "ready", "failed"] = "off" if name == "silence" else "loading"
        self.error: str | None = None
        self.calls = 0
        self.failures = 0

    @property
    def available(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        if self.name == "silence":
            return
        try:
            model = self._loader()
        except Exception as exc:  # noqa: BLE001 - any failure means the same: the silence rule decides
            self.state, self.error = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("turn-end model unavailable: the silence rule ends turns", error=self.error)
            return
        self._model, self.state = model, "ready"
        log.info("turn-end model ready", model=self.name)

    def probability(self, audio: AudioArray) -> float | None:
        """P(the user has finished) at the end of ``audio``; None if the model is not there or failed."""
        model = self._model
        if model is None:
            return None
        self.calls += 1
        try:
            return model(audio)
        except Exception as exc:  # noqa: BLE001 - logged and shown; this pause uses the silence rule
            self.failures += 1
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("turn-end model call failed: the silence rule ends this turn", error=self.error)
            return None

    def status(self) -> dict[str, object]:
        """For ``/readyz``: which rule ends the live turns, and why."""
        using = "smart-turn" if self.available else "silence"
        body: dict[str, object] = {"configured": self.name, "using": using, "state": self.state}
        if self.error is not None:
            body["error"] = self.error
        if self.failures:
            body["failed_calls"] = self.failures
        return body
