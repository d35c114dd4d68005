"""The face listening while the user speaks: frames drawn for the session, played in the idle loop's place.

The idle loop is drawn once per persona and shared; a face that nods at *this* user's phrase ends cannot
be. So while the user speaks, the session draws its face itself (``ListeningFace``), a fifth of a second
at a time and a little ahead of the clock, with the puppet's listening motion (``motion.Listening``: a
nod after each pause in the user's speech, the head a little lower and stiller, fewer blinks), and
encodes it on its own encoder; the playout sends these frames instead of the idle loop's (``ListenFeed``).

It joins the idle motion where the loop is (its first frame is a keyframe, the motion drawn on from the
loop's position), and the listening weight eases in from the user's first sound, so it begins without a
jump. It ends in one of two ways: a reply's first frame takes over (the reply begins at the motion frame
the feed would have shown, ``Playout.predicted_position``, and by then the weight has eased out over
``LISTEN_EASE_S`` from the end of the user's turn, or nearly), or, with no reply to come, the face is
drawn on at weight 0 to the idle loop's next keyframe and the loop takes over there. Nobody speaking,
nothing is drawn: an idle session costs what the loop costs.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from avatar.backends.puppet.motion import LISTEN_EASE_S, LISTEN_NOD_S, Listening
from avatar.server.live.codecs import VideoEncoder
from avatar.server.live.idle import RATE, IdleLoop
from avatar.types import FaceAnimator, PreparedFace

log = structlog.stdlib.get_logger(__name__)

CHUNK_FRAMES = 5  # frames drawn at a time (0.2 s at 25 fps)
AHEAD_FRAMES = 15  # drawn at most this far ahead of the slot playing (a busy machine draws late; a nod
# at a phrase end heard after this is drawn is begun at the first frame not drawn)
LEAD_FRAMES = 8  # the feed's first frame plays this many slots after the user's first sound is heard
MAX_WAIT_S = 15.0  # a reply begun but not playing after this long no longer keeps the face listening

DrawWork = Callable[[Callable[[], list[bytes]]], Awaitable[list[bytes]]]
"""Runs a blocking drawing call on the models (the animator is shared with the replies)."""


def can_listen(animator: FaceAnimator) -> bool:
    """Whether ``animator`` draws the listening motion (the puppet does; Ditto does not)."""
    render = getattr(animator, "render_chunks", None)
    return render is not None and "listening" in inspect.signature(render).parameters


@dataclass
class ListenFeed:
    """The listening frames queued for the playout, in order (each changes the one before)."""

    first_slot: int  # the slot its first frame plays at (the idle loop plays until then)
    start_position: int  # the idle motion frame its first frame shows
    packets: deque[bytes] = field(default_factory=deque)
    played: int = 0
    underruns: int = 0  # slots that came due with no frame drawn (the frame before stays on screen)
    late_start: int = 0  # slots the idle loop played on for, its first frames not drawn in time
    finished: bool = False  # no more frames will come; after the last the loop goes on at ``resume_index``
    resume_index: int = 0
    dropped: bool = False  # a reply took over (or the session closed): nothing more is drawn

    def position(self, slots_ahead: int = 0) -> int:
        """The motion frame the face shows ``slots_ahead`` slots after the one played last."""
        return self.start_position + self.played + slots_ahead

    def take(self) -> bytes | None:
        if not self.packets:
            self.underruns += 1
            return None
        self.played += 1
        return self.packets.popleft()

    @property
    def done(self) -> bool:
        return self.dropped or (self.finished and not self.packets)


class ListeningFace:
    """Draws one session's listening frames while the user's turn lasts (``run``)."""

    def __init__(
        self,
        feed: ListenFeed,
        animator: FaceAnimator,
        face: PreparedFace,
        idle: IdleLoop,
        *,
        size: int,
        kbps: int,
        fps: int,
        begun: float,
        now_slot: Callable[[], int],
        reply_pending: Callable[[], bool],
        draw_work: DrawWork,
    ) -> None:
        """``begun``: the user's first sound, in seconds on the feed's own timeline (0 at its first slot);
        ``now_slot`` gives the slot playing; ``reply_pending`` whether a reply is begun and not yet playing."""
        self.feed = feed
        self.animator = animator
        self.face = face
        self.idle = idle
        self.fps = fps
        self.encoder = VideoEncoder(size, fps, kbps)
        self.now_slot = now_slot
        self.reply_pending = reply_pending
        self.draw_work = draw_work
        self.spans: list[tuple[float, float | None]] = [(begun, None)]  # the user's speech (None: goes on)
        self.turn_ended = False
        self.phrase_ends: list[float] = []
        self.drawn = 0

    # the user's turn, in seconds on the feed's timeline (``seconds_at``)

    @property
    def _undrawn_s(self) -> float:
        """The time of the first frame not drawn yet (what is drawn is not drawn again)."""
        return self.drawn / self.fps

    def seconds_at(self, slot: float) -> float:
        return (slot - self.feed.first_slot) / self.fps

    def paused(self, seconds: float) -> None:
        """The user paused at ``seconds`` (heard a little later): a nod, begun where it still can be,
        and the listening eases out from there, in case the pause ends their turn (a reply made at
        the pause is drawn with the same ``listening()``, so it goes on from the feed's last frame)."""
        self.phrase_ends.append(max(seconds, self._undrawn_s - LISTEN_NOD_S[0]))
        if self.spans[-1][1] is None:
            self.spans[-1] = (self.spans[-1][0], max(seconds, self._undrawn_s))

    def spoke(self) -> None:
        """The user speaks again: the face listens on (eased back in if it had begun to ease out)."""
        self.turn_ended = False
        if self.spans[-1][1] is not None:
            self.spans.append((self._undrawn_s, None))

    def turn_over(self, seconds: float) -> None:
        """The user's turn has ended: the listening eases out (from their pause, if not already)."""
        self.turn_ended = True
        if self.spans[-1][1] is None:
            self.spans[-1] = (self.spans[-1][0], max(seconds, self._undrawn_s))

    def listening(self) -> Listening:
        """The user's turn so far on the motion timeline (the animator's frame index), where the feed
        starts at ``start_position``; a stretch of speech still going on ends far ahead."""
        shift = self.feed.start_position / self.fps
        far = self._undrawn_s + 60.0
        spans = tuple((begin + shift, (far if end is None else end) + shift) for begin, end in self.spans)
        return Listening(spans, tuple(t + shift for t in self.phrase_ends))

    @property
    def end_s(self) -> float | None:
        return self.spans[-1][1]

    def _eased_out(self) -> bool:
        end = self.end_s
        nodding = bool(self.phrase_ends) and self._undrawn_s < self.phrase_ends[-1] + sum(LISTEN_NOD_S)
        return end is not None and self._undrawn_s >= end + LISTEN_EASE_S and not nodding

    # drawing

    async def run(self) -> None:
        feed = self.feed
        try:
            while not feed.dropped:
                if self.turn_ended and self._eased_out() and not self.reply_pending():
                    break
                if self.end_s is not None and self.drawn / self.fps > self.end_s + MAX_WAIT_S:
                    break
                played_to = max(0, self.now_slot() - feed.first_slot)
                if self.drawn - played_to >= AHEAD_FRAMES:
                    await asyncio.sleep(CHUNK_FRAMES / self.fps / 2)
                    continue
                feed.packets.extend(await self.draw_work(self._drawer(CHUNK_FRAMES, self.listening())))
            if feed.dropped:
                return
            frames, resume = self.idle.bridge(feed.start_position + self.drawn)
            if frames:
                feed.packets.extend(await self.draw_work(self._drawer(frames, None)))
            feed.resume_index = resume
        finally:
            feed.finished = True
            log.info(
                "live listening face",
                frames=self.drawn,
                nods=len(self.phrase_ends),
                underruns=feed.underruns,
                late_start=feed.late_start,
                taken_over=feed.dropped,
            )

    def _drawer(self, count: int, listening: Listening | None) -> Callable[[], list[bytes]]:
        start = self.feed.start_position + self.drawn
        first = self.drawn
        self.drawn += count

        def draw() -> list[bytes]:
            silence = np.zeros(count * RATE // self.fps, np.float32)
            extra: dict[str, Any] = {} if listening is None else {"listening": listening}
            chunks = self.animator.render_chunks(
                self.face, silence, RATE, chunk_frames=count, start_frame=start, **extra
            )
            frames = np.concatenate(list(chunks))[:count]
            return [self.encoder.encode(f, keyframe=first + i == 0).data for i, f in enumerate(frames)]

        return draw
