"""One turn of a live conversation: the user's words in, the face's reply out on the session's timeline.

The reply is made by the same stages as every other turn (``Pipeline.reply``), holding the models
through the same turn runner as an HTTP turn (``Turns.run``: the model queue, the turn deadline, the
latency metrics); it is queued encoded on the timeline and played in real time. The models are let go
as soon as the reply is made, while it may still be playing. A turn stopped by the user's voice
(barge-in) stops its stages at their next await and its playback at once, and the history keeps
exactly what was played.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import structlog

from avatar.errors import TurnCancelledError
from avatar.fmp4 import video_format
from avatar.personas import Persona
from avatar.pipeline import Pipeline
from avatar.pipeline.control import SpokenReply, TurnControl
from avatar.pipeline.pipeline import TurnRequest
from avatar.pipeline.sessions import Session
from avatar.pipeline.timing import TurnTimings
from avatar.server.live.idle import RATE, IdleLoop
from avatar.server.live.output import LEAD_IN_FRAMES, LiveOutput
from avatar.server.live.playout import Playout, ReplyPlayback
from avatar.types import FrameArray

log = structlog.stdlib.get_logger(__name__)

T = TypeVar("T")

Admitted = Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]
"""Model work through the model queue (``ModelQueue.run``)."""
Send = Callable[..., None]


class TurnRunner(Protocol):
    """What runs a turn's model work (``Turns``): queued, under the turn deadline, stopped by its
    control (TurnCancelledError) or by the deadline (TurnTimeoutError); and the latency metrics."""

    async def run(
        self, turn_id: str, session_id: str, work: Callable[[], Awaitable[T]], *, control: TurnControl | None = None
    ) -> T: ...

    def observe(self, timings: Mapping[str, float]) -> None: ...


@dataclass
class LiveTurn:
    """A reply being made or played."""

    number: int
    user_text: str
    session: Session
    timings: TurnTimings
    control: TurnControl = field(default_factory=TurnControl)
    spoken: SpokenReply = field(default_factory=SpokenReply)
    playback: ReplyPlayback | None = None
    interrupted: float | None = None  # seconds of it heard when the user interrupted it
    fallback: bool = False
    text: str = ""  # everything the model wrote for it
    degraded: list[dict[str, str]] = field(default_factory=list)  # what fell back (Reply.degraded)

    @property
    def heard_anything(self) -> bool:
        return self.playback is not None and self.playback.played > 0


@dataclass
class ReplySettings:
    size: int
    kbps: int
    buffer_seconds: float


async def run_turn(
    turn: LiveTurn,
    *,
    turn_id: str,
    pipeline: Pipeline,
    request: TurnRequest,
    playout: Playout,
    idle: IdleLoop,
    turns: TurnRunner,
    send: Send,
    options: ReplySettings,
    lead_frames: int,
    skip_frames: int = 0,
    held: bool = False,
    listening: object | None = None,
) -> None:
    """Make ``turn``'s reply into ``playout`` and wait until it has played (or was stopped); then
    record it in the session's history, whole or as far as it was heard. ``held``: made now, played
    once ``turn.playback.held`` is cleared (an early reply). ``listening``: the face listened before
    it (``listening.py``); the reply is drawn going on from that."""
    # Where the idle face will be when the reply's first sound plays (its silent start is not played).
    start_frame = max(0, playout.predicted_position(lead_frames) - skip_frames)
    playback = playout.begin(turn.number, start_frame)
    playback.held = held
    turn.playback = playback
    output = LiveOutput(
        playout,
        playback,
        sample_rate=pipeline.speak.sample_rate,
        size=options.size,
        kbps=options.kbps,
        buffer_seconds=options.buffer_seconds,
    )

    async def emit(event: str, data: dict[str, Any]) -> None:
        if event == "reply":
            send("reply", turn=turn.number, **data)

    reply = pipeline.reply(
        request,
        turn.user_text,
        output,
        emit=emit,
        timings=turn.timings,
        spoken=turn.spoken,
        start_frame=start_frame,
        chunk_frames=max(1, playout.fps // 5),  # frames go out 0.2 s at a time, not 0.5
        first_chunk_frames=1,  # the first ones one by one: the first plays as soon as it is drawn
        opening_silence_s=LEAD_IN_FRAMES / playout.fps,  # not drawn, then skipped: not drawn at all
        control=turn.control,
        listening=listening,
    )

    async def make() -> None:
        await reply.run()
        await _bridge(output, pipeline, request.persona, idle, start_frame + output.frames)

    work = asyncio.ensure_future(turns.run(turn_id, request.session.id, make, control=turn.control))
    try:
        await asyncio.wait([work])
    finally:
        if not work.done():  # this turn itself was cancelled (the session is closing): stop the stages
            turn.control.stop("the live session closed")
            playout.stop()
            await asyncio.wait([work])
            if not work.cancelled():
                work.exception()  # stopped, as asked: not a stray "never retrieved" warning
    turn.fallback, turn.text, turn.degraded = reply.fallback, " ".join(reply.texts), list(reply.degraded)
    failed = None if work.cancelled() else work.exception()
    stopped = work.cancelled() or isinstance(failed, TurnCancelledError)  # barge-in, or the session closed
    if stopped:
        failed = None
        if turn.interrupted is None:  # stopped from outside the session (a newer turn of its conversation)
            interrupt(turn, playout, turn.control.reason or "stopped")  # the history keeps what was heard
    if failed is not None or stopped:
        playout.stop()
    await playback.done.wait()
    turn.timings.mark("played")
    if failed is not None:
        raise failed
    await _record(turn, pipeline)


async def _bridge(output: LiveOutput, pipeline: Pipeline, persona: Persona, idle: IdleLoop, position: int) -> None:
    """Draw the face on from where the reply left it to the idle loop's next keyframe, then hand over."""
    frames, resume = idle.bridge(position)
    if frames > 0:
        animate = pipeline.animate
        face = await animate.face_for(persona.image_path)
        silence = np.zeros(frames * RATE // output.fps, np.float32)

        def draw() -> FrameArray:
            chunks = animate.animator.render_chunks(face, silence, RATE, chunk_frames=frames, start_frame=position)
            return np.concatenate(list(chunks))[:frames]

        drawn = await animate.calls(draw)
        await output.write(drawn, np.zeros(frames * pipeline.speak.sample_rate // output.fps, np.float32))
    await output.finish(resume)


async def _record(turn: LiveTurn, pipeline: Pipeline) -> None:
    if turn.interrupted is not None:
        turn.control.heard_seconds = turn.interrupted
        await pipeline.record_heard(turn.session, turn.user_text, turn.spoken, turn.control)
        return
    if not turn.fallback:
        await pipeline.sessions.record(turn.session, turn.user_text, turn.text)


async def turn_request(
    pipeline: Pipeline, persona: Persona, session_id: str, text: str, received: float, owner: str | None = None
) -> TurnRequest:
    """The request of a live turn in conversation ``session_id``. Unlike ``Pipeline.request``, an id the
    store does not know yet keeps its name (it was given to the client when the session opened, and a
    first turn stopped before it was heard records nothing)."""
    session = await pipeline.sessions.get(session_id, persona.name, owner)
    if session.id != session_id:
        session = Session(id=session_id, persona=persona.name, owner=owner)
    return TurnRequest(persona, session, None, pipeline.check_text(text), video_format(None), received)


def latency(timings: Mapping[str, float]) -> dict[str, float]:
    """A live turn's timings as the latency metrics count an HTTP turn's: its first frame is the one
    sent to the client (``first_sent``), counted, like the rest, from the end of the user's speech."""
    counted = {name: seconds for name, seconds in timings.items() if name not in ("first_sent", "played")}
    if "first_sent" in timings:
        counted["first_frame"] = timings["first_sent"]
    return counted


def interrupt(turn: LiveTurn, playout: Playout, reason: str) -> float | None:
    """Stop ``turn`` now: its queued media is dropped and its stages stop at their next await. Returns
    the seconds of it the user heard (None if it had already been stopped)."""
    if turn.interrupted is not None:
        return None
    playback = turn.playback
    # On the reply's own timeline, which includes the silence at its start that was not played.
    heard = (playback.skipped + playback.played) / playout.fps if playback is not None and playback.played else 0.0
    turn.interrupted = heard
    if playback is not None and playout.reply is playback:
        playout.stop()
    if not turn.control.stop(reason, heard) and turn.control.reason is None:
        turn.control.reason = reason  # the reply was already made: only its playback stopped
    return heard
