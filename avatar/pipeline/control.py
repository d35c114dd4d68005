"""Stopping a turn that is running: who asked, and how much of the reply the user actually heard.

A turn is one asyncio task. Whoever stops it (a client disconnecting, ``DELETE``, a newer turn of the
same session, live mode's barge-in) says why and, when it knows, how far the user got in playing the
reply; then the task is cancelled. Every stage stops at its next await: the model between two tokens
(its token iterator is closed), the face between two chunks of frames. The pipeline records in the
conversation history only what was heard.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from avatar.types import Phone


class TurnControl:
    """The handle a caller keeps to stop one turn."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self.heard_seconds: float | None = None
        self._task: asyncio.Task[object] | None = None

    def attach(self, task: asyncio.Task[object]) -> None:
        """The task that runs the turn (set by whoever starts it)."""
        self._task = task

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def stop(self, reason: str, heard_seconds: float | None = None) -> bool:
        """Cancel the turn; False if it had already ended (or was stopped before)."""
        if self._task is None or self._task.done() or self.stopped:
            return False
        self.reason = reason
        if heard_seconds is not None and heard_seconds >= 0:
            self.heard_seconds = heard_seconds
        self._task.cancel()
        return True

    def enforce(self) -> None:
        """Called by the turn between two of its steps: once stopped, stop here. The cancellation that
        ``stop`` sent can be lost on the way (Python 3.11's ``asyncio.wait_for`` returns a result that
        arrives with it, and so may a library), and a turn that ran on would hold the models and feed a
        client that has gone. The turn, and the stage task calling this, are cancelled again: the next
        await raises CancelledError."""
        if not self.stopped or self._task is None or self._task.done():
            return
        self._task.cancel()
        current = asyncio.current_task()
        if current is not None and current is not self._task:
            current.cancel()  # a stage of the turn, whose own cancellation was the one lost


@dataclass(frozen=True)
class SpokenPiece:
    """A piece of the reply and where it sits on the reply's timeline (seconds)."""

    text: str
    start: float
    end: float
    phones: tuple[Phone, ...] | None = None
    """Its sounds on the reply's timeline, where the voice gave them."""


@dataclass
class SpokenReply:
    """What the reply said, piece by piece, as it was handed to the client."""

    pieces: list[SpokenPiece] = field(default_factory=list)
    handed_out: float = 0.0
    """Seconds of the reply's video handed to the client so far."""

    def heard(self, seconds: float) -> str:
        """The reply up to ``seconds`` into it: whole pieces, then the words of the piece being spoken
        (in proportion to its time, the word under way included), with an ellipsis where it was cut."""
        words: list[str] = []
        for piece in self.pieces:
            if piece.end <= seconds + 1e-6:
                words += piece.text.split()
                continue
            if piece.start < seconds:
                share = (seconds - piece.start) / max(piece.end - piece.start, 1e-6)
                said = piece.text.split()
                cut = said[: math.ceil(len(said) * share - 1e-9)]
                if cut:
                    words += [*cut[:-1], cut[-1].rstrip(",.;:!?") + "…"]
            break
        return " ".join(words)
