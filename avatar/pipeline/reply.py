"""The reply half of a turn: Respond → Speak → Animate, running at once, linked by bounded queues.

While the model writes piece k+2, piece k+1 is spoken and piece k drawn. Drawn frames go, chunk by
chunk with the audio that plays with them, to a ``ReplyOutput``: an MP4 made in segments for the HTTP
routes (``Mp4Output``), or a live connection's tracks. The queues' bounds are the back-pressure: a stage
that falls behind holds the one before it (and a live output holds the face to real time), so memory
does not grow with the reply's length.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from avatar import media
from avatar.personas import Persona
from avatar.pipeline.control import SpokenPiece, SpokenReply
from avatar.pipeline.stages import AnimateStage, ReplyPart, RespondStage, SpeakStage
from avatar.pipeline.threads import run_blocking
from avatar.pipeline.timing import TurnTimings
from avatar.types import AudioArray, ChatMessage, FrameArray, frame_count

PIECES_AHEAD = 2  # pieces of text the model may write ahead of the voice
CLIPS_AHEAD = 2  # spoken pieces the voice may make ahead of the face

TurnEvents = Callable[[str, dict[str, Any]], Awaitable[None]]
"""Receives ``(event, data)`` as a turn goes: ``transcript``, ``reply``, ``segment``."""


class ReplyOutput(Protocol):
    """Where a reply's frames and audio go as they are drawn."""

    async def write(self, frames: FrameArray, audio: AudioArray) -> None:
        """The next chunk of frames and exactly the audio that plays with them (in order)."""
        ...

    @property
    def delivered_seconds(self) -> float:
        """How much of the reply has reached the user's side so far."""
        ...


class Reply:
    """One reply being made: the three stage tasks and their queues."""

    def __init__(
        self,
        *,
        respond: RespondStage,
        speak: SpeakStage,
        animate: AnimateStage,
        persona: Persona,
        history: list[ChatMessage],
        user_text: str,
        output: ReplyOutput,
        emit: TurnEvents,
        timings: TurnTimings,
        spoken: SpokenReply,
        start_frame: int = 0,
        chunk_frames: int | None = None,
    ) -> None:
        self.respond, self.speak, self.animate = respond, speak, animate
        self.start_frame = start_frame  # where the reply begins on the face's motion timeline (live idling)
        self.persona = persona
        self.history = history
        self.user_text = user_text
        self.output = output
        self.emit = emit
        self.timings = timings
        self.spoken = spoken
        self.rate = speak.sample_rate
        self.fps = animate.fps
        # Frames drawn before each hand-over: half a second by default; live mode hands over sooner.
        self.chunk_frames = chunk_frames or max(1, self.fps // 2)
        self.fallback = False
        self.pieces: asyncio.Queue[ReplyPart | None] = asyncio.Queue(PIECES_AHEAD)
        self.clips: asyncio.Queue[tuple[ReplyPart, AudioArray] | None] = asyncio.Queue(CLIPS_AHEAD)

    async def run(self) -> None:
        """Make the whole reply into the output; the first stage failure stops the others and is raised."""
        face = await self.animate.face_for(self.persona.image_path)
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._respond(), name="respond")
                group.create_task(self._speak(), name="speak")
                group.create_task(self._animate(face), name="animate")
        except BaseExceptionGroup as failed:  # a stage failed and the others were stopped: say why
            raise failed.exceptions[0] from None

    async def _respond(self) -> None:
        replies = self.respond.stream(self.persona, self.history, self.user_text)
        async with contextlib.aclosing(replies):  # an error elsewhere still stops the model cleanly
            while True:
                with self.timings.stage("llm"):
                    part = await anext(replies, None)
                if part is None:
                    break
                if part.kind == "delta":
                    self.timings.mark("first_token")
                    await self.emit("reply", {"delta": part.text, "text": part.shown})
                    continue
                if part.fallback:
                    self.fallback = True
                    await self.emit("reply", {"delta": part.text, "text": part.text, "fallback": True})
                await self.pieces.put(part)
        await self.pieces.put(None)

    async def _speak(self) -> None:
        while (part := await self.pieces.get()) is not None:
            with self.timings.stage("tts"):
                clip = await self.speak(part.text, self.persona)
            frames = frame_count(clip.size / self.rate, self.fps)
            self.timings.mark("first_audio")
            await self.clips.put((part, media.fit_audio_to_frames(clip, self.rate, frames, self.fps)))
        await self.clips.put(None)

    async def _animate(self, face: object) -> None:
        animator = self.animate.animator
        frame_at = 0
        while (item := await self.clips.get()) is not None:
            part, clip = item
            frames = clip.size * self.fps // self.rate
            self.spoken.pieces.append(SpokenPiece(part.text, frame_at / self.fps, (frame_at + frames) / self.fps))
            chunks = animator.render_chunks(
                face, clip, self.rate, chunk_frames=self.chunk_frames, start_frame=self.start_frame + frame_at
            )
            drawn = 0
            while True:
                with self.timings.stage("avatar"):
                    chunk = await run_blocking(next, chunks, None)
                if chunk is None:
                    break
                audio = clip[drawn * self.rate // self.fps : (drawn + len(chunk)) * self.rate // self.fps]
                await self.output.write(chunk, audio)
                self.spoken.handed_out = self.output.delivered_seconds
                drawn += len(chunk)
            frame_at += frames
