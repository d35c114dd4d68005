"""A conversation turn: Transcribe → Respond → Speak → Animate, streamed as it is made.

After recognition the stages run at once, linked by bounded queues: while the model writes piece k+2,
piece k+1 is spoken and piece k drawn and encoded. Each stretch of encoded video is handed on as a
playable segment the moment it exists (``segment`` events), and when the reply is complete the same
packets become an ordinary MP4. The queues' bounds are the back-pressure: a stage that falls behind
holds the one before it, so memory does not grow with the reply's length. One code path serves every
caller: the JSON endpoint simply ignores the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avatar import media
from avatar.errors import InvalidRequestError
from avatar.fmp4 import SegmentWriter, VideoFormat, remux_to_mp4, video_format
from avatar.personas import Persona, PersonaStore
from avatar.pipeline.control import SpokenPiece, SpokenReply, TurnControl
from avatar.pipeline.sessions import MemorySessionStore, Session, SessionStore
from avatar.pipeline.stages import AnimateStage, ReplyPart, RespondStage, SpeakStage, TranscribeStage
from avatar.pipeline.threads import run_blocking
from avatar.pipeline.timing import TurnTimings
from avatar.registry import ModelRegistry
from avatar.types import ASR_SAMPLE_RATE, AudioArray, PreparedFace, frame_count

log = logging.getLogger(__name__)

VIDEO_NAME = "reply.mp4"
AUDIO_NAME = "reply.wav"
SUMMARY_NAME = "turn.json"
SEGMENTS_DIR = "segments"
STREAM_NAME = ".stream.mp4"  # the segments end to end, while the turn runs (remuxed into reply.mp4)
PIECES_AHEAD = 2  # pieces of text the model may write ahead of the voice
CLIPS_AHEAD = 2  # spoken pieces the voice may make ahead of the face

TurnEvents = Callable[[str, dict[str, Any]], Awaitable[None]]
"""Receives ``(event, data)`` as a turn goes: ``transcript``, ``reply``, ``segment``."""


async def _no_events(event: str, data: dict[str, Any]) -> None:
    return None


def segment_name(index: int) -> str:
    return f"{index:04d}.m4s"


@dataclass
class TurnRequest:
    """A validated turn, ready to run: who speaks, in which session, to what input."""

    persona: Persona
    session: Session
    audio: AudioArray | None
    text: str | None
    video_format: VideoFormat
    received: float = field(default_factory=time.perf_counter)
    """When the input was complete (``perf_counter``); every timing of the turn counts from here."""


@dataclass
class TurnResult:
    id: str
    session_id: str
    persona: str
    transcript: str | None
    reply: str
    audio_seconds: float
    timings: dict[str, float]
    rtf: dict[str, float]
    models: dict[str, str]
    video_format: str
    segments: int
    degraded: list[str] = field(default_factory=list)
    video_path: Path | None = None
    audio_path: Path | None = None

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "persona": self.persona,
            "transcript": self.transcript,
            "reply": self.reply,
            "audio_seconds": round(self.audio_seconds, 3),
            "timings": self.timings,
            "rtf": self.rtf,
            "models": self.models,
            "video_format": self.video_format,
            "segments": self.segments,
            "degraded": self.degraded,
        }


class Pipeline:
    """Runs turns on stages built from ready models. Holds no per-turn state besides sessions."""

    def __init__(
        self,
        *,
        transcribe: TranscribeStage,
        respond: RespondStage,
        speak: SpeakStage,
        animate: AnimateStage,
        personas: PersonaStore,
        sessions: SessionStore,
        max_text_chars: int = 1000,
        default_persona: str | None = None,
    ) -> None:
        self.default_persona = default_persona or personas.names()[0]
        self.transcribe = transcribe
        self.respond = respond
        self.speak = speak
        self.animate = animate
        self.personas = personas
        self.sessions = sessions
        self.max_text_chars = max_text_chars
        self.models = {
            "asr": transcribe.asr.name,
            "llm": respond.llm.name,
            "tts": speak.tts.name,
            "face": animate.animator.name,
        }

    @classmethod
    def from_registry(
        cls,
        registry: ModelRegistry,
        personas: PersonaStore,
        *,
        max_new_tokens: int = 60,
        max_sentences: int = 2,
        history_turns: int = 6,
        session_ttl: float = 1800,
        sessions: SessionStore | None = None,
        max_text_chars: int = 1000,
        default_persona: str | None = None,
    ) -> Pipeline:
        return cls(
            transcribe=TranscribeStage(registry.get("asr")),
            respond=RespondStage(registry.get("llm"), max_new_tokens=max_new_tokens, max_sentences=max_sentences),
            speak=SpeakStage(registry.get("tts")),
            animate=AnimateStage(registry.get("face")),
            personas=personas,
            sessions=sessions or MemorySessionStore(ttl_seconds=session_ttl, max_turns=history_turns),
            max_text_chars=max_text_chars,
            default_persona=default_persona,
        )

    def check_text(self, text: str) -> str:
        text = text.strip()
        if not text:
            raise InvalidRequestError("The text is empty; say or type something.")
        if len(text) > self.max_text_chars:
            raise InvalidRequestError(f"The text is {len(text)} characters long; the limit is {self.max_text_chars}.")
        return text

    async def request(
        self,
        *,
        audio: AudioArray | None = None,
        text: str | None = None,
        persona: str | None = None,
        session_id: str | None = None,
        video_format_name: str | None = None,
        received: float | None = None,
    ) -> TurnRequest:
        """Check a turn's inputs and find its persona and session (nothing runs on a model yet)."""
        if (audio is None) == (text is None):
            raise InvalidRequestError("Give either audio or text, not both and not neither.")
        who = self.personas.get(persona or self.default_persona)
        checked = self.check_text(text) if text is not None else None
        fmt = video_format(video_format_name)
        session = await self.sessions.get(session_id, who.name)
        return TurnRequest(who, session, audio, checked, fmt, received or time.perf_counter())

    async def run(
        self,
        out_dir: Path,
        *,
        audio: AudioArray | None = None,
        text: str | None = None,
        persona: str | None = None,
        session_id: str | None = None,
        video_format_name: str | None = None,
        events: TurnEvents | None = None,
        control: TurnControl | None = None,
    ) -> TurnResult:
        """One whole turn from 16 kHz speech (or typed text): ``request`` and ``run_request`` in one."""
        request = await self.request(
            audio=audio, text=text, persona=persona, session_id=session_id, video_format_name=video_format_name
        )
        return await self.run_request(request, out_dir, events=events, control=control)

    async def run_request(
        self,
        request: TurnRequest,
        out_dir: Path,
        *,
        events: TurnEvents | None = None,
        control: TurnControl | None = None,
        keep_segments: bool = False,
    ) -> TurnResult:
        """Run a turn into ``out_dir``: reply.mp4, reply.wav and turn.json (plus ``segments/`` when
        ``keep_segments``). ``events`` hears the transcript, reply text deltas and each video segment as
        they are made. On any error, or when the turn is cancelled, none of these files is left behind;
        a cancelled turn's history keeps what the user heard (``control.heard_seconds``, else what was
        handed out)."""
        emit = events or _no_events
        timings = TurnTimings(origin=request.received)
        out_dir.mkdir(parents=True, exist_ok=True)
        spoken = SpokenReply()
        user_text = request.text
        made = [out_dir / name for name in (VIDEO_NAME, AUDIO_NAME, SUMMARY_NAME, STREAM_NAME)]
        try:
            if request.audio is not None:
                with timings.stage("asr"):
                    transcript = await self.transcribe(request.audio, request.persona.language)
                timings.media("asr", request.audio.size / ASR_SAMPLE_RATE)
                timings.mark("first_transcript")
                user_text = transcript.text
                await emit("transcript", {"text": user_text, "language": transcript.language})
            assert user_text is not None
            turn = _Turn(self, request, user_text, out_dir, emit, timings, spoken)
            result = await turn.run()
            if not keep_segments:
                await run_blocking(shutil.rmtree, out_dir / SEGMENTS_DIR, True)
        except asyncio.CancelledError:
            await run_blocking(_remove, [*made, out_dir / SEGMENTS_DIR])
            if user_text is not None:
                await self._record_heard(request.session, user_text, spoken, control)
            raise
        except BaseException:
            await run_blocking(_remove, [*made, out_dir / SEGMENTS_DIR])
            raise
        if "llm_fallback" not in result.degraded:
            await self.sessions.record(request.session, user_text, result.reply)
        log.info(
            "turn", extra={"turn_id": result.id, "timings": result.timings, "audio_s": round(result.audio_seconds, 3)}
        )
        return result

    async def _record_heard(
        self, session: Session, user_text: str, spoken: SpokenReply, control: TurnControl | None
    ) -> None:
        """A cancelled turn's history: the question, and the reply as far as the user heard it."""
        handed_out = spoken.handed_out
        heard = control.heard_seconds if control is not None and control.heard_seconds is not None else handed_out
        reply = spoken.heard(min(heard, handed_out))
        reason = control.reason if control is not None else None
        log.info("turn cancelled", extra={"reason": reason, "heard_s": round(heard, 3), "heard": reply})
        if not reply:
            return
        try:
            await self.sessions.record(session, user_text, reply)
        except Exception as exc:  # noqa: BLE001 - the turn is over either way; the history is best effort
            log.warning("could not record the interrupted turn", extra={"error": f"{type(exc).__name__}: {exc}"})


class _Turn:
    """One running reply: the three stage tasks, their queues, the encoder and the files they fill."""

    def __init__(
        self,
        pipeline: Pipeline,
        request: TurnRequest,
        user_text: str,
        out_dir: Path,
        emit: TurnEvents,
        timings: TurnTimings,
        spoken: SpokenReply,
    ) -> None:
        self.p = pipeline
        self.request = request
        self.user_text = user_text
        self.out_dir = out_dir
        self.emit = emit
        self.timings = timings
        self.spoken = spoken
        self.rate = pipeline.speak.sample_rate
        self.fps = pipeline.animate.fps
        self.writer = SegmentWriter(self.rate, self.fps, request.video_format)
        self.wav = media.WavWriter(out_dir / AUDIO_NAME, self.rate)
        self.segments_dir = out_dir / SEGMENTS_DIR
        self.segments = 0
        self.cut_at_frame = 0  # the frame where the last segment ended
        self.fallback = False
        self.pieces: asyncio.Queue[ReplyPart | None] = asyncio.Queue(PIECES_AHEAD)
        self.clips: asyncio.Queue[tuple[ReplyPart, AudioArray] | None] = asyncio.Queue(CLIPS_AHEAD)

    async def run(self) -> TurnResult:
        try:
            face = await self.p.animate.face_for(self.request.persona.image_path)
            await run_blocking(self.segments_dir.mkdir, exist_ok=True)
            try:
                async with asyncio.TaskGroup() as group:
                    group.create_task(self._respond(), name="respond")
                    group.create_task(self._speak(), name="speak")
                    group.create_task(self._animate(face), name="animate")
            except BaseExceptionGroup as failed:  # a stage failed and the others were stopped: say why
                raise failed.exceptions[0] from None
            await self._publish(await run_blocking(self.writer.finish))
            with self.timings.stage("mux"):
                await run_blocking(remux_to_mp4, self.out_dir / STREAM_NAME, self.out_dir / VIDEO_NAME)
                await run_blocking(self.wav.close)
        except BaseException:
            await run_blocking(self.writer.abort)
            await run_blocking(self.wav.abort)
            raise
        finally:
            await run_blocking(_remove, [self.out_dir / STREAM_NAME])
        return await self._summary()

    async def _respond(self) -> None:
        replies = self.p.respond.stream(self.request.persona, self.request.session.history, self.user_text)
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
                clip = await self.p.speak(part.text, self.request.persona)
            frames = frame_count(clip.size / self.rate, self.fps)
            self.timings.mark("first_audio")
            await self.clips.put((part, media.fit_audio_to_frames(clip, self.rate, frames, self.fps)))
        await self.clips.put(None)

    async def _animate(self, face: PreparedFace) -> None:
        animator = self.p.animate.animator
        frame_at = 0
        while (item := await self.clips.get()) is not None:
            part, clip = item
            frames = clip.size * self.fps // self.rate
            self.spoken.pieces.append(SpokenPiece(part.text, frame_at / self.fps, (frame_at + frames) / self.fps))
            await run_blocking(self.wav.write, clip)
            chunks = animator.render_chunks(face, clip, self.rate, chunk_frames=self.fps // 2, start_frame=frame_at)
            drawn = 0
            while True:
                with self.timings.stage("avatar"):
                    chunk = await run_blocking(next, chunks, None)
                if chunk is None:
                    break
                audio = clip[drawn * self.rate // self.fps : (drawn + len(chunk)) * self.rate // self.fps]
                with self.timings.stage("mux"):
                    segment = await run_blocking(self._encode, chunk, audio)
                drawn += len(chunk)
                await self._publish(segment)
            frame_at += frames

    def _encode(self, chunk: Any, audio: AudioArray) -> bytes:
        self.writer.write(chunk, audio)
        return self.writer.cut()

    async def _publish(self, segment: bytes) -> None:
        """Store a segment (and append it to the whole stream) and tell the client it exists."""
        if not segment:
            return
        index = self.segments
        await run_blocking(_store_segment, self.segments_dir / segment_name(index), self.out_dir / STREAM_NAME, segment)
        self.segments += 1
        start, end = self.cut_at_frame / self.fps, self.writer.frames / self.fps
        self.cut_at_frame = self.writer.frames
        self.spoken.handed_out = end
        self.timings.mark("first_frame")
        await self.emit(
            "segment",
            {
                "index": index,
                "name": segment_name(index),
                "start": round(start, 3),
                "duration": round(end - start, 3),
                "bytes": len(segment),
                "mime": self.writer.mime,
                "final": self.writer.closed,
            },
        )

    async def _summary(self) -> TurnResult:
        seconds = self.wav.samples / self.rate
        timings = self.timings
        timings.media("tts", seconds)
        timings.media("avatar", seconds)
        seconds_by_stage, rtf = timings.summary(timings.elapsed())
        result = TurnResult(
            id=self.out_dir.name,
            session_id=self.request.session.id,
            persona=self.request.persona.name,
            transcript=self.user_text if self.request.audio is not None else None,
            reply=" ".join(piece.text for piece in self.spoken.pieces),
            audio_seconds=seconds,
            timings=seconds_by_stage,
            rtf=rtf,
            models=dict(self.p.models),
            video_format=self.request.video_format.name,
            segments=self.segments,
            degraded=["llm_fallback"] if self.fallback else [],
            video_path=self.out_dir / VIDEO_NAME,
            audio_path=self.out_dir / AUDIO_NAME,
        )
        summary = json.dumps(result.summary(), indent=2) + "\n"
        await run_blocking(_write_atomic, self.out_dir / SUMMARY_NAME, summary)
        return result


def _store_segment(path: Path, stream: Path, data: bytes) -> None:
    path.write_bytes(data)
    with stream.open("ab") as fh:
        fh.write(data)


def _write_atomic(path: Path, text: str) -> None:
    with media.atomic_path(path) as tmp:
        tmp.write_text(text)


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def new_turn_id() -> str:
    """A random result id (the server validates ids against this shape before touching files)."""
    return secrets.token_hex(16)
