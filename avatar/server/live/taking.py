"""What a live session remembers between the user's words and the face's reply, as named state.

Turn-taking keeps four things across ``Heard`` events: a reply paused because the user made a sound
over it, until it is known whether that was a backchannel or a noise (``Hush``); the transcript begun
at the latest pause (``Speculation``); the reply begun from it before the user was known to have
finished (``EarlyReply``); and an utterance whose reply was stopped before a word of it was heard, to
be taken together with the next one (``Carried``). Each says for itself whether it still fits what the
user has said since (``fits``), so the session's decisions read as questions and are tested here without a connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avatar.server.live.turn import LiveTurn
from avatar.types import ASR_SAMPLE_RATE, AudioArray

MERGE_GAP_S = 0.2  # silence put between two utterances taken as one


@dataclass
class Hush:
    """A reply paused at the onset of the user's voice: it resumes if what they said is a backchannel
    or a noise, and is stopped for good if it is words (or goes on too long for a backchannel)."""

    turn: LiveTurn
    at: float  # perf_counter time it paused
    pending_end: tuple[AudioArray, int, float] | None = None  # the turn's end heard meanwhile (audio, version, ended)
    words: bool = False  # words were heard at a pause in it (not yet known to be all of it)

    def fits(self, turn: LiveTurn | None) -> bool:
        """Whether it still holds ``turn`` (the reply playing): not stopped or ended meanwhile."""
        return turn is self.turn and turn.interrupted is None


@dataclass(frozen=True)
class Carried:
    """An utterance whose reply was stopped (or never begun) before any of it was heard: the user had
    only paused, so what they say next continues it."""

    audio: AudioArray
    shown: bool  # whether the client was shown its final transcript


def with_carry(audio: AudioArray, carry: Carried | None) -> AudioArray:
    """``audio`` after the carried utterance (with a short silence between), or alone."""
    if carry is None:
        return audio
    return np.concatenate([carry.audio, np.zeros(int(MERGE_GAP_S * ASR_SAMPLE_RATE), np.float32), audio])


@dataclass(frozen=True)
class Speculation:
    """The transcript begun at a pause, of the utterance ``version`` (after ``carry``)."""

    version: int
    carry: Carried | None
    task: asyncio.Task[str | None]

    @property
    def running(self) -> bool:
        return not self.task.done()

    def fits(self, version: int, carry: Carried | None) -> bool:
        """Whether it is the transcript of utterance ``version`` after ``carry``: nothing said since."""
        return self.version == version and self.carry is carry


@dataclass
class EarlyReply:
    """A reply begun at a pause, for the utterance heard up to it (``version``, after ``carry``). Its
    playback and its events wait until the turn is over; then it is ``released``, or dropped."""

    version: int
    audio: AudioArray  # the utterance (after ``carry``)
    carry: Carried | None
    text: str
    ended: float  # perf_counter time of the end of the speech
    task: asyncio.Task[None] | None = None
    turn: LiveTurn | None = None
    released: bool = False
    dropped: bool = False
    pending: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def shown(self) -> bool:
        """Whether the carried utterance's transcript was shown."""
        return self.carry is not None and self.carry.shown

    def answers(self, version: int, carry: Carried | None) -> bool:
        """Whether it still answers the turn that has ended: utterance ``version`` after ``carry``."""
        return not self.dropped and self.version == version and self.carry is carry

    def sender(self, send: Callable[..., None]) -> Callable[..., None]:
        """``send``, once released; until then the events wait (and are forgotten if it is dropped)."""

        def held(event: str, **data: Any) -> None:
            if self.released:
                send(event, **data)
            elif not self.dropped:
                self.pending.append((event, data))

        return held

    def release(self, send: Callable[..., None]) -> None:
        self.released = True
        for event, data in self.pending:
            send(event, **data)
        self.pending.clear()
        if self.turn is not None and self.turn.playback is not None:
            self.turn.playback.held = False

    def drop(self) -> None:
        """Its events are forgotten, and those still to come too."""
        self.dropped = True
        self.pending.clear()
