"""A live session's media timeline: what the face shows and says in each 40 ms, decided as it comes due.

Time is cut into slots, one per video frame (two 20 ms voice packets each). Both tracks take their
media from the same slot, decided once, when it comes due: the next slot of a reply if one is waiting,
else the idle face and silence. Audio and video therefore cannot drift apart: if the face is drawn too
slowly for real time, a slot comes due with nothing of the reply ready, and the frame on screen is
held with silence until the reply catches up (a stutter, never a shift). Replies are queued ahead of
time, encoded (``LiveOutput``); stopping one drops what is queued, so the face falls silent within a
slot. A reply may also be paused (its frame held, silent) and resumed where it stopped: the user made
a sound over it that may turn out to be a "mm-hm" or a cough.

A held frame is still sent, every slot (``holding.py``): a frame that shows the picture on screen
again, made in a worker thread when the reply pauses (or is late for ``HOLD_AFTER_LATE`` slots); a
slot or two pass without a frame while it is made. So the client receives the full frame rate through
pauses, resumptions and late replies, not only while a reply or the idle loop plays.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from avatar.pipeline.threads import run_blocking
from avatar.server.live.codecs import PACKET_S
from avatar.server.live.holding import Bridge, Held, hold
from avatar.server.live.idle import IdleLoop

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
    original: bytes | None = None  # the reply's own frame, where ``video`` is it encoded again (a bridge)

    @property
    def own(self) -> bytes | None:
        """The reply's own frame (what its encoder's chain holds)."""
        return self.original if self.original is not None else self.video


@dataclass
class Holding:
    """A reply's frame being held by frames sent again (``holding.hold``, in a worker thread)."""

    made: asyncio.Future[Held]
    sent_key: bool = False
    sent_still: bool = False

    @property
    def held(self) -> Held | None:
        made = self.made
        return made.result() if made.done() and not made.cancelled() and made.exception() is None else None


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
    sent: list[bytes] = field(default_factory=list)  # frames sent since the client's last keyframe
    own: list[bytes] = field(default_factory=list)  # its own frames played since its last keyframe
    holding: Holding | None = None  # its frame held by frames sent again
    bridge: Bridge | None = None  # its frames pushed from now on are encoded again, up to a keyframe

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
        """The idle motion frame the face will show ``frames_ahead`` slots from now."""
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
        if reply.bridge is not None:  # a hold was rejoined before the reply's next keyframe had come
            slots = [self._carried(reply, slot) for slot in slots]
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
            if begun and (reply.paused or not self._rejoined(reply)):  # its frame held, silent
                reply.paused_slots += 1
                return Slot(self._held_frame(reply), self.silence_slot, reply.id)
            if self.queue:
                reply.late = 0
                slot = self.queue.popleft()
                if reply.first_slot is None:
                    reply.first_slot = n
                    if self.on_first_slot is not None:
                        self.on_first_slot(reply)
                reply.played += 1
                self._played(reply, slot)
                if reply.finished and reply.played >= reply.queued:
                    self._end_reply()
                return slot
            if begun:  # the reply has begun and is late: hold its frame
                reply.underruns += 1
                reply.late += 1
                held = self._held_frame(reply) if reply.late >= HOLD_AFTER_LATE or reply.holding else None
                return Slot(held, self.silence_slot, reply.id)
        return self._idle_slot(n)

    # ------------------------------------------------------------------------------ held frames

    def _played(self, reply: ReplyPlayback, slot: Slot) -> None:
        """Keep what a hold would be made from: the frames since the last keyframe, sent and its own."""
        if slot.video is None:
            return
        if slot.keyframe:
            reply.sent, reply.own, reply.bridge = [slot.video], [slot.video], None
            return
        reply.sent.append(slot.video)
        if slot.own is not None:
            reply.own.append(slot.own)

    def _held_frame(self, reply: ReplyPlayback) -> bytes | None:
        """A frame that shows the reply's picture again (None while it is being made, or without one)."""
        holding = reply.holding
        if holding is None:
            if self.kbps is None or not reply.sent or not reply.own:
                return None
            upcoming = []
            for slot in self.queue:
                if slot.keyframe or slot.own is None:
                    break
                upcoming.append(slot.own)
            reply.bridge = None  # pushed frames wait, as they are, for this hold's own bridge
            made = asyncio.ensure_future(
                run_blocking(hold, list(reply.sent), list(reply.own), upcoming, fps=self.fps, kbps=self.kbps)
            )
            made.add_done_callback(_logged)
            reply.holding = Holding(made)
            return None
        held = holding.held
        if held is None:
            return None
        if not holding.sent_key:
            holding.sent_key = True
            reply.sent = [held.key]
            return held.key
        if not holding.sent_still:
            holding.sent_still = True
            reply.sent.append(held.still)
        return held.still

    def _rejoined(self, reply: ReplyPlayback) -> bool:
        """Whether the reply may play on: its frame was not held, or the held frames were followed by
        its own frames encoded again (False: a still frame must be sent first)."""
        holding = reply.holding
        if holding is None or not self.queue:  # not held; or still late (and held while so)
            return True
        if not holding.sent_key:  # the client's decoder still holds the reply's chain: it goes on as it is
            reply.holding = None
            return True
        held = holding.held
        if not holding.sent_still or held is None:
            return False
        reply.holding, reply.bridge = None, held.bridge
        bridged = iter(held.bridged)
        for i, slot in enumerate(self.queue):
            if slot.keyframe or slot.own is None:
                reply.bridge = None
                break
            again = next(bridged, None)
            self.queue[i] = self._carried(reply, slot, again)
        return True

    def _carried(self, reply: ReplyPlayback, slot: Slot, again: bytes | None = None) -> Slot:
        """``slot`` with its frame encoded again by the reply's bridge (``again``: already done)."""
        bridge = reply.bridge
        if bridge is None or slot.own is None:
            return slot
        if slot.keyframe:
            reply.bridge = None
            return slot
        try:
            video = again if again is not None else bridge.carry(slot.own)
        except Exception:  # a bug or a bad frame: the reply goes on as it is (a glitch)
            log.exception("a held reply's frame could not be encoded again")
            reply.bridge = None
            return slot
        return dataclasses.replace(slot, video=video, original=slot.own)

    def _idle_slot(self, n: int) -> Slot:
        silence = self.silence_slot
        if not self.idle.ready.is_set():
            if self.idle.packets and n - self._keyframe_sent_at >= KEYFRAME_REPEAT_S * self.fps:
                self._keyframe_sent_at = n
                return Slot(self.idle.packets[0], silence)
            return Slot(None, silence)
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


def _logged(made: asyncio.Future[Held]) -> None:
    if not made.cancelled() and made.exception() is not None:
        log.error("a held frame could not be made", exc_info=made.exception())
