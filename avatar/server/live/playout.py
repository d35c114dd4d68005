"""A live session's media timeline: what the face shows and says in each 40 ms, decided as it comes due.

Time is cut into slots, one per video frame (two 20 ms voice packets each). Both tracks take their
media from the same slot, decided once, when it comes due: the next slot of a reply if one is waiting,
else the idle face and silence. Audio and video therefore cannot drift apart: if the face is drawn too
slowly for real time, a slot comes due with nothing of the reply ready, and the frame on screen is
held with silence until the reply catches up (a stutter, never a shift). Replies are queued ahead of
time, encoded (``LiveOutput``); stopping one drops what is queued, so the face falls silent within a
slot. A reply may also be paused (its frame held, silent) and resumed where it stopped: the user made
a sound over it that may turn out to be a "mm-hm" or a cough.

A held frame is still sent, every slot (``holding.py``): a keyframe of the picture on screen, then a
frame that shows it again, made when the reply pauses (or has been late for ``HOLD_AFTER_LATE`` slots).
So the client receives the full frame rate through pauses, resumptions and late replies, not only while
a reply or the idle loop plays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from avatar.server.live.codecs import PACKET_S
from avatar.server.live.holding import Decoded, Hold
from avatar.server.live.idle import IdleLoop
from avatar.server.live.listening import ListenFeed

log = structlog.stdlib.get_logger(__name__)

KEYFRAME_REPEAT_S = 1.0  # while the idle loop is still being drawn, its first frame is sent this often
HOLD_AFTER_LATE = 3  # a reply late for this many slots in a row has its frame held by frames sent again


@dataclass(frozen=True)
class Slot:
    """The media of one video frame's time: a VP8 frame (None: the frame before stays on screen) and
    two Opus packets."""

    video: bytes | None
    audio: tuple[bytes, ...]
    reply: int = 0  # the reply it belongs to (0: idle)
    keyframe: bool = False  # its frame decodes on its own (a reply's frames rejoin there after a hold)


@dataclass
class ReplyPlayback:
    """How one reply is doing on the timeline."""

    id: int
    start_frame: int  # where it began on the face's motion timeline
    queued: int = 0  # slots queued so far
    played: int = 0  # slots played so far
    skipped: int = 0  # silent frames at its start that were not played (its timeline begins after them)
    finished: bool = False  # no more slots will come
    first_slot: int | None = None  # the slot index its first frame played at
    resume_index: int | None = None  # the idle loop index to go on with after its last slot
    underruns: int = 0  # slots that came due with nothing of it ready (face held, silence)
    held: bool = False  # made ahead and not to play yet (an early reply, until the user's turn has ended)
    paused: bool = False  # stopped where it is (the user made a sound): its frame stays, silent, until resumed
    paused_slots: int = 0  # slots it has spent paused
    late: int = 0  # slots in a row it has been late
    decoded: Decoded | None = None  # its frames decoded as they play (what a held frame shows)
    hold: Hold | None = None  # its frame held by frames sent again; then its frames encoded to follow them

    def __post_init__(self) -> None:
        self.done = asyncio.Event()  # played to its end, or stopped


class Playout:
    """The slots of one session. ``slot(n)`` is asked by both tracks; the first to ask decides it."""

    def __init__(
        self,
        fps: int,
        idle: IdleLoop,
        silence: bytes,
        clock: Callable[[], float] = time.monotonic,
        *,
        kbps: int | None = None,
    ) -> None:
        """``kbps``: the bit rate of the frames that hold a paused reply's picture (None: a held frame
        is not sent again: the slot sends no frame)."""
        self.fps = fps
        self.kbps = kbps
        self.idle = idle
        self.silence = silence
        self.silence_slot = (silence,) * round(1 / (fps * PACKET_S))
        self.clock = clock
        self._start: float | None = None  # slot 0's time: when a track first asks (the connection is up)
        self.idle_index = 0
        self.queue: deque[Slot] = deque()
        self.reply: ReplyPlayback | None = None  # the reply queued or playing, if any
        self.on_first_slot: Callable[[ReplyPlayback], None] | None = None
        self.on_reply_done: Callable[[ReplyPlayback], None] | None = None
        self._decided: dict[int, Slot] = {}
        self._last_decided = -1
        self._progress = asyncio.Event()
        self._keyframe_sent_at = -(10**9)
        self.listening: ListenFeed | None = None  # the face listening to the user, in the idle loop's place

    # ------------------------------------------------------------------------------ the clock

    def at(self, seconds: float) -> float:
        """The ``clock`` time ``seconds`` into the timeline (which begins when this is first asked)."""
        if self._start is None:
            self._start = self.clock()
        return self._start + seconds

    def due(self, n: int) -> float:
        """When slot ``n`` is due (``clock`` time)."""
        return self.at(n / self.fps)

    @property
    def now_slot(self) -> int:
        return int((self.clock() - self.at(0)) * self.fps)

    @property
    def ahead_seconds(self) -> float:
        """Reply media queued and not yet played."""
        return len(self.queue) / self.fps

    @property
    def speaking(self) -> bool:
        """A reply's media is playing (its first slot has played, its last has not)."""
        reply = self.reply
        return reply is not None and reply.first_slot is not None and not reply.done.is_set()

    def predicted_position(self, frames_ahead: int) -> int:
        """The idle motion frame the face will show ``frames_ahead`` slots from now (the listening
        face's while it listens: a reply then begins where it is)."""
        feed = self.listening
        if feed is not None and not feed.finished:
            target = self.now_slot + frames_ahead
            if self._last_decided < feed.first_slot:
                return feed.start_position + max(0, target - feed.first_slot)
            return feed.position(max(0, target - self._last_decided - 1))
        if not self.idle.ready.is_set():
            return 0
        return self.idle.position(self.idle_index + frames_ahead)

    # ------------------------------------------------------------------------------ replies

    def begin(self, reply_id: int, start_frame: int) -> ReplyPlayback:
        """A new reply (any reply still queued is dropped)."""
        self.stop()
        self.reply = ReplyPlayback(reply_id, start_frame)
        return self.reply

    def push(self, reply: ReplyPlayback, slots: list[Slot]) -> None:
        if reply is not self.reply or reply.done.is_set():
            return  # stopped meanwhile
        self.queue.extend(slots)
        reply.queued += len(slots)

    def finish(self, reply: ReplyPlayback, resume_index: int) -> None:
        """No more slots will come for ``reply``; the idle loop goes on at ``resume_index`` after it."""
        reply.finished = True
        reply.resume_index = resume_index
        if reply is self.reply and reply.played >= reply.queued:
            self._end_reply()

    def stop(self) -> ReplyPlayback | None:
        """Drop the reply's queued media now; the face goes back to idling from the nearest keyframe."""
        reply = self.reply
        if reply is None:
            return None
        self.queue.clear()
        reply.finished = True
        reply.resume_index = self.idle.nearest_keyframe(reply.start_frame + reply.skipped + reply.played)
        self._end_reply()
        return reply

    async def progress(self) -> None:
        """Wait until the next slot is taken."""
        self._progress.clear()
        await self._progress.wait()

    # ------------------------------------------------------------------------------ the slots

    def slot(self, n: int) -> Slot:
        """The media of slot ``n`` (decided now if it has not been: slots are decided in order)."""
        decided = self._decided.get(n)
        if decided is not None:
            return decided
        while self._last_decided < n:
            self._last_decided += 1
            self._decided[self._last_decided] = self._decide(self._last_decided)
        for old in [k for k in self._decided if k < n - 2 * self.fps]:
            del self._decided[old]
        return self._decided[n]

    def _decide(self, n: int) -> Slot:
        self._progress.set()
        reply = self.reply
        if reply is not None and not reply.done.is_set() and not reply.held:
            begun = reply.first_slot is not None
            hold = reply.hold
            rejoining = hold is not None and not hold.stills and not hold.carried and bool(self.queue)
            if begun and (reply.paused or rejoining):  # its frame held, silent (then a still frame first)
                reply.paused_slots += 1
                return Slot(self._held_frame(reply), self.silence_slot, reply.id)
            if self.queue:
                reply.late = 0
                slot = self.queue.popleft()
                if reply.first_slot is None:
                    reply.first_slot = n
                    if self.listening is not None:  # the reply takes over from the listening face
                        self.listening.dropped, self.listening = True, None
                    if self.on_first_slot is not None:
                        self.on_first_slot(reply)
                reply.played += 1
                slot = self._played(reply, slot)
                if reply.finished and reply.played >= reply.queued:
                    self._end_reply()
                return slot
            if begun:  # the reply has begun and is late: hold its frame
                reply.underruns += 1
                reply.late += 1
                held = self._held_frame(reply) if reply.late >= HOLD_AFTER_LATE or reply.hold else None
                return Slot(held, self.silence_slot, reply.id)
        return self._idle_slot(n)

    # ------------------------------------------------------------------------------ held frames

    def _played(self, reply: ReplyPlayback, slot: Slot) -> Slot:
        """Decode the reply's frame (what a hold would show); after a hold, send it encoded again, up
        to the reply's next keyframe."""
        if self.kbps is None or slot.video is None:
            return slot
        if slot.keyframe:
            reply.hold = None  # the client's decoder follows the reply's own frames again
        try:
            if reply.decoded is None:
                reply.decoded = Decoded()
            picture = reply.decoded.add(slot.video)
            if reply.hold is not None:
                return dataclasses.replace(slot, video=reply.hold.carry(picture))
        except Exception:  # a bug or a bad frame: no frame is held for this reply any more (a glitch)
            log.exception("a live reply's frame could not be decoded or encoded again")
            self.kbps, reply.hold = None, None
        return slot

    def _held_frame(self, reply: ReplyPlayback) -> bytes | None:
        """A frame that shows the reply's picture again (None without one: the slot sends no frame)."""
        picture = reply.decoded.picture if reply.decoded is not None else None
        if self.kbps is None or picture is None:
            return None
        hold = reply.hold
        if hold is None or hold.carried:  # a new hold (or one after frames carried since the last)
            try:
                reply.hold = Hold(picture, fps=self.fps, kbps=self.kbps)
            except Exception:  # a bug: the frame is held as before, without frames
                log.exception("a held live frame could not be made")
                self.kbps, reply.hold = None, None
                return None
            return reply.hold.key
        hold.stills += 1
        return hold.still

    def _idle_slot(self, n: int) -> Slot:
        silence = self.silence_slot
        if not self.idle.ready.is_set():
            if self.idle.packets and n - self._keyframe_sent_at >= KEYFRAME_REPEAT_S * self.fps:
                self._keyframe_sent_at = n
                return Slot(self.idle.packets[0], silence)
            return Slot(None, silence)
        feed = self.listening
        if feed is not None and n >= feed.first_slot:
            if feed.done:
                self.listening = None
                if not feed.dropped and feed.played:
                    self.idle_index = feed.resume_index
            elif feed.played or feed.packets:
                return Slot(feed.take(), silence)
            else:  # its first frames are not drawn yet: the loop plays on meanwhile
                feed.first_slot = n + 1
                feed.late_start += 1
        index = self.idle_index % self.idle.cycle
        self.idle_index = index + 1
        return Slot(self.idle.packets[index], silence)

    def _end_reply(self) -> None:
        reply = self.reply
        if reply is None:
            return
        self.reply = None
        if reply.resume_index is not None:
            self.idle_index = reply.resume_index
        reply.done.set()
        if self.on_reply_done is not None:
            self.on_reply_done(reply)
