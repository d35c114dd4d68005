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
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any, Literal, Protocol, overload

import numpy as np

from avatar import media
from avatar.personas import Persona
from avatar.pipeline.control import SpokenPiece, SpokenReply, TurnControl
from avatar.pipeline.stages import AnimateStage, ReplyPart, RespondStage, SpeakStage
from avatar.pipeline.timing import TurnTimings
from avatar.types import AudioArray, ChatMessage, FrameArray, Phone, PreparedFace, frame_count, shift_phones

log = logging.getLogger(__name__)

PIECES_AHEAD = 2  # pieces of text the model may write ahead of the voice
CLIPS_AHEAD = 2  # spoken pieces the voice may make ahead of the face
FIRST_CHUNK_FRAMES = 5  # the reply's first 0.2 s (at 25 fps) is handed over as soon as it is drawn: the client waits

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
        first_chunk_frames: int = FIRST_CHUNK_FRAMES,
        opening_silence_s: float | None = None,
        control: TurnControl | None = None,
        visitor: Sequence[str] = (),
        listening: object | None = None,
    ) -> None:
        self.respond, self.speak, self.animate = respond, speak, animate
        self.control = control  # checked between steps: a stopped turn stops even if its cancellation was lost
        # The first clip's silence before its first sound, cut to this: the user is waiting (live mode
        # keeps none of it).
        self.opening_silence_s = OPENING_SILENCE_S if opening_silence_s is None else opening_silence_s
        self.start_frame = start_frame  # where the reply begins on the face's motion timeline (live idling)
        self.listening = listening  # the face listening before it (live mode): passed on to the animator
        self.persona = persona
        self.history = history
        self.visitor = visitor  # what the visitor has said about themself this session
        self.user_text = user_text
        self.output = output
        self.emit = emit
        self.timings = timings
        self.spoken = spoken
        self.rate = speak.sample_rate
        self.fps = animate.fps
        # Frames drawn before each hand-over: half a second by default; live mode hands over sooner.
        self.chunk_frames = chunk_frames or max(1, self.fps // 2)
        # The first piece is drawn this many frames at a time, and each draw is handed over at once until
        # ``FIRST_CHUNK_FRAMES`` have gone: live mode draws one (its first frame plays 25-40 ms sooner),
        # the frames after it keeping ahead of playback.
        self.first_chunk_frames = max(1, min(first_chunk_frames, self.chunk_frames))
        self.fallback = False
        self.texts: list[str] = []  # every piece the model wrote (spoken or, after a voice failure, not)
        self.degraded: list[dict[str, str]] = []
        self.faceless = False
        size = getattr(animate.animator, "size", 512)
        self.still: FrameArray = np.full((size, size, 3), 96, np.uint8)  # held when the face cannot be drawn
        self.pieces: asyncio.Queue[ReplyPart | None] = asyncio.Queue(PIECES_AHEAD)
        self.clips: asyncio.Queue[tuple[ReplyPart, AudioArray, tuple[Phone, ...] | None] | None] = asyncio.Queue(
            CLIPS_AHEAD
        )

    async def run(self) -> None:
        """Make the whole reply into the output; the first stage failure stops the others and is raised."""
        face: PreparedFace | None = None
        try:
            face = await self.animate.face_for(self.persona.image_path)
            self.still = getattr(face, "image", self.still)
        except Exception as exc:  # noqa: BLE001 - the reply is still spoken, over a still picture
            self.faceless = True
            self.degrade("face_failed", "face", f"{type(exc).__name__}: {getattr(exc, 'message', exc)}")
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._respond(), name="respond")
                group.create_task(self._speak(), name="speak")
                group.create_task(self._animate(face), name="animate")
        except BaseExceptionGroup as failed:  # a stage failed and the others were stopped: say why
            raise failed.exceptions[0] from None

    async def _respond(self) -> None:
        replies = self.respond.stream(
            self.persona, self.history, self.user_text, self.visitor, quick_start=self.speak.quick_start(self.persona)
        )
        async with contextlib.aclosing(replies):  # an error elsewhere still stops the model cleanly
            while True:
                self._go_on()
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
                    self.degrade("llm_fallback", "llm", part.reason)
                    await self.emit("reply", {"delta": part.text, "text": part.text, "fallback": True})
                self.texts.append(part.text)
                await self.pieces.put(part)
        await self.pieces.put(None)

    def _go_on(self) -> None:
        """Between two steps of a stage: a stopped turn stops at the next await (``TurnControl.enforce``)."""
        if self.control is not None:
            self.control.enforce()

    def degrade(self, code: str, stage: str, reason: str) -> None:
        """Note that part of the reply fell back (the turn goes on without it)."""
        self.degraded.append({"code": code, "stage": stage, "reason": reason})
        log.warning("turn degraded", extra={"code": code, "reason": reason})

    async def _speak(self) -> None:
        voiceless = False
        lead = self.opening_silence_s
        while True:
            self._go_on()
            if (part := await self.pieces.get()) is None:
                break
            if voiceless:
                continue  # the text is still shown; the rest of the reply is not spoken
            try:
                with self.timings.stage("tts"):
                    speech = await self.speak.speech(part.text, self.persona)
            except Exception as exc:  # noqa: BLE001 - a voice failure leaves a text-only (rest of the) reply
                voiceless = True
                self.degrade("tts_failed", "tts", f"{type(exc).__name__}: {getattr(exc, 'message', exc)}")
                continue
            clip, moved = trim_silence(
                speech.audio, round(lead * self.rate), round(pause_after(part.text) * self.rate), with_shift=True
            )
            lead = PIECE_LEAD_S
            frames = frame_count(clip.size / self.rate, self.fps)
            fitted = media.fit_audio_to_frames(clip, self.rate, frames, self.fps)
            phones = shift_phones(speech.phones, moved / self.rate, fitted.size / self.rate)
            self.timings.mark("first_audio")
            await self.clips.put((part, fitted, phones))
        await self.clips.put(None)

    async def _animate(self, face: PreparedFace | None) -> None:
        animator = self.animate.animator
        frame_at = 0
        batch: list[FrameArray] = []
        while True:
            self._go_on()
            if (item := await self.clips.get()) is None:
                break
            part, clip, phones = item
            frames = clip.size * self.fps // self.rate
            start, end = frame_at / self.fps, (frame_at + frames) / self.fps
            self.spoken.pieces.append(SpokenPiece(part.text, start, end, shift_phones(phones, start, end)))
            # The reply's first frames are drawn and handed over in small chunks (the client is waiting
            # for them); after that, drawn frames are handed over ``chunk_frames`` at a time.
            step = self.first_chunk_frames if frame_at == 0 else self.chunk_frames
            chunks = (
                None
                if face is None
                else animator.render_chunks(
                    face,
                    clip,
                    self.rate,
                    step,
                    start_frame=self.start_frame + frame_at,
                    phones=phones,
                    **({} if self.listening is None else {"listening": self.listening}),
                )
            )
            drawn = handed = 0
            while drawn < frames:
                chunk = await self._draw(chunks, min(step, frames - drawn))
                if chunk is None:
                    break
                batch.append(chunk)
                drawn += len(chunk)
                self.still = chunk[-1]
                if frame_at + handed < FIRST_CHUNK_FRAMES or drawn - handed >= self.chunk_frames or drawn >= frames:
                    await self._hand_over(batch, clip[handed * self.rate // self.fps : drawn * self.rate // self.fps])
                    handed = drawn
            if batch:
                await self._hand_over(batch, clip[handed * self.rate // self.fps : drawn * self.rate // self.fps])
            frame_at += frames

    async def _hand_over(self, batch: list[FrameArray], audio: AudioArray) -> None:
        """Drawn frames and the audio that plays with them, to the output (``batch`` is emptied)."""
        self._go_on()
        await self.output.write(np.concatenate(batch) if len(batch) > 1 else batch[0], audio)
        self.spoken.handed_out = self.output.delivered_seconds
        batch.clear()

    async def _draw(self, chunks: Iterator[FrameArray] | None, count: int) -> FrameArray | None:
        """The next chunk of frames; once the face has failed, the last good frame held still."""
        self._go_on()
        if chunks is not None and not self.faceless:
            try:
                with self.timings.stage("avatar"):
                    return await self.animate.calls(next, chunks, None)
            except Exception as exc:  # noqa: BLE001 - a face failure leaves an audio-only (rest of the) reply
                self.faceless = True
                self.degrade("face_failed", "face", f"{type(exc).__name__}: {getattr(exc, 'message', exc)}")
        return np.repeat(self.still[None], count, axis=0)


# Silence around each clip of speech, whatever the voice puts there (the embedded one wraps every clip
# in about 0.45 s before and 0.55 s after, which made a one-second hole between two pieces): a short
# onset, then a pause after it as a speaker makes one, by how the piece ends.
SILENCE_LEVEL = 10 ** (-50 / 20)  # a sample below -50 dBFS is silence
OPENING_SILENCE_S = 0.1  # before the reply's first sound
PIECE_LEAD_S = 0.05  # before each later piece's first sound
SENTENCE_PAUSE_S = 0.3  # after a sentence (also the end of the reply: the mouth closes)
CLAUSE_PAUSE_S = 0.15  # after a comma, colon, dash or ellipsis
PHRASE_PAUSE_S = 0.06  # after an opening cut before a phrase ("I looked down at the Earth | from orbit")


def pause_after(text: str) -> float:
    """The silence a speaker leaves after saying ``text``, by its last mark."""
    end = text.rstrip().rstrip("\"')]\u201d\u2019")
    if end.endswith((".", "!", "?")) and not end.endswith(("...", "\u2026")):
        return SENTENCE_PAUSE_S
    if end.endswith((",", ";", ":", "-", "\u2013", "\u2014", "...", "\u2026")):
        return CLAUSE_PAUSE_S
    return PHRASE_PAUSE_S


@overload
def trim_silence(clip: AudioArray, lead: int, tail: int) -> AudioArray: ...


@overload
def trim_silence(clip: AudioArray, lead: int, tail: int, *, with_shift: Literal[True]) -> tuple[AudioArray, int]: ...


def trim_silence(
    clip: AudioArray, lead: int, tail: int, *, with_shift: bool = False
) -> AudioArray | tuple[AudioArray, int]:
    """``clip`` from ``lead`` samples before its first sound to ``tail`` samples after its last, padded
    with silence where it had less; a clip with no sound at all is returned as it is. ``with_shift``
    also returns how many samples later every sample now lies (negative: earlier), for the timings
    that go with the clip."""
    loud = np.flatnonzero(np.abs(clip) >= SILENCE_LEVEL)
    if not loud.size:
        return (clip, 0) if with_shift else clip
    first, last = int(loud[0]), int(loud[-1]) + 1
    head = clip[max(0, first - lead) : first]
    body = clip[first:last]
    after = clip[last : last + tail]
    pad_head = np.zeros(lead - head.size, clip.dtype)
    pad_tail = np.zeros(tail - after.size, clip.dtype)
    out = np.concatenate([pad_head, head, body, after, pad_tail])
    return (out, lead - first) if with_shift else out
