"""A conversation turn: Transcribe → Respond → Speak → Animate, streamed as it is made.

After recognition the reply's stages run at once, linked by bounded queues (``reply.py``), and each
stretch of encoded video is handed on as a playable segment the moment it exists (``files.py``); when
the reply is complete the same packets become an ordinary MP4. One code path serves every caller: the
JSON endpoint simply ignores the events, the live mode sends the frames to its own tracks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from avatar import media
from avatar.errors import InvalidRequestError
from avatar.fmp4 import VideoFormat, video_format
from avatar.personas import Persona, PersonaStore
from avatar.pipeline.control import SpokenReply, TurnControl
from avatar.pipeline.files import AUDIO_NAME, SUMMARY_NAME, VIDEO_NAME, ReplyFiles
from avatar.pipeline.reply import FIRST_CHUNK_FRAMES, Reply, ReplyOutput, TurnEvents
from avatar.pipeline.sessions import MemorySessionStore, Session, SessionStore
from avatar.pipeline.stages import AnimateStage, RespondStage, SpeakStage, TranscribeStage
from avatar.pipeline.text import checked_text
from avatar.pipeline.threads import ModelCalls, run_blocking
from avatar.pipeline.timing import TurnTimings
from avatar.provenance import Provenance
from avatar.registry import ModelRegistry
from avatar.types import ASR_SAMPLE_RATE, AudioArray

log = logging.getLogger(__name__)


async def _no_events(event: str, data: dict[str, Any]) -> None:
    return None


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
    voice_note: str | None = None
    """Why the voice asked for may not suit the persona (another language), said with the result."""


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
    degraded: list[dict[str, str]] = field(default_factory=list)
    """What fell back, each ``{code, stage, reason}``: ``llm_fallback`` (the persona's fallback line),
    ``tts_failed`` (the rest of the reply is text only), ``face_failed`` (a still picture speaks)."""
    video_path: Path | None = None
    audio_path: Path | None = None
    question: str = ""  # what the user said (typed, or the transcript)
    spoken: SpokenReply = field(default_factory=SpokenReply, repr=False)  # the reply's pieces on its timeline
    recorded: bool = False  # whether the turn went into the session's history
    owner: str | None = None  # the session's owner (``Session.owner``)
    voice: str | None = None  # the named voice it spoke with (None: the engine has none, as XTTS)
    voice_note: str | None = None

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
            "voice": self.voice,
            "voice_note": self.voice_note,
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
        provenance: Provenance | None = None,
        visible_label: str = "",
    ) -> None:
        """``provenance`` signs every MP4 a turn writes with the AI-generated manifest (none: unsigned,
        for tests of other things); ``visible_label`` is drawn on every frame when set."""
        self.default_persona = default_persona or personas.names()[0]
        self.provenance = provenance
        self.visible_label = visible_label
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
        stage_timeout: float | None = None,
        provenance: Provenance | None = None,
        visible_label: str = "",
    ) -> Pipeline:
        """Stages on the registry's models; each model call is timed out after ``stage_timeout`` seconds
        and its outcome counted in the model's health."""

        def calls(kind: str) -> ModelCalls:
            return ModelCalls(registry.health(kind), stage_timeout)

        return cls(
            transcribe=TranscribeStage(registry.get("asr"), calls("asr")),
            respond=RespondStage(
                registry.get("llm"), max_new_tokens=max_new_tokens, max_sentences=max_sentences, calls=calls("llm")
            ),
            speak=SpeakStage(registry.get("tts"), calls("tts")),
            animate=AnimateStage(registry.get("face"), calls=calls("face")),
            personas=personas,
            sessions=sessions or MemorySessionStore(ttl_seconds=session_ttl, max_turns=history_turns),
            max_text_chars=max_text_chars,
            default_persona=default_persona,
            provenance=provenance,
            visible_label=visible_label,
        )

    def check_text(self, text: str) -> str:
        """Typed text as every transport takes it (``checked_text``: characters, emptiness, length)."""
        return checked_text(text, self.max_text_chars)

    async def request(
        self,
        *,
        audio: AudioArray | None = None,
        text: str | None = None,
        persona: str | None = None,
        session_id: str | None = None,
        video_format_name: str | None = None,
        received: float | None = None,
        owner: str | None = None,
        voice: str | None = None,
        voice_note: str | None = None,
    ) -> TurnRequest:
        """Check a turn's inputs and find its persona and session (nothing runs on a model yet).
        ``voice``: a voice name (checked by the caller) the persona speaks with for this turn, and
        ``voice_note`` the caller's note on it, kept with the result."""
        if (audio is None) == (text is None):
            raise InvalidRequestError("Give either audio or text, not both and not neither.")
        who = self.personas.get(persona or self.default_persona)
        if voice is not None:
            who = replace(who, voice=voice)
        checked = self.check_text(text) if text is not None else None
        fmt = video_format(video_format_name)
        session = await self.sessions.get(session_id, who.name, owner)
        return TurnRequest(who, session, audio, checked, fmt, received or time.perf_counter(), voice_note)

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
        await self.sessions.ping()  # the history is kept at the end: a store that is down fails it now
        timings = TurnTimings(origin=request.received)
        out_dir.mkdir(parents=True, exist_ok=True)
        files = ReplyFiles(
            out_dir,
            self.speak.sample_rate,
            self.animate.fps,
            request.video_format,
            emit,
            timings,
            sign=self.provenance.sign_mp4 if self.provenance is not None else None,
            label=self.visible_label,
        )
        spoken = SpokenReply()
        user_text = request.text
        try:
            if request.audio is not None:
                with timings.stage("asr"):
                    transcript = await self.transcribe(request.audio, request.persona.language)
                timings.media("asr", request.audio.size / ASR_SAMPLE_RATE)
                timings.mark("first_transcript")
                user_text = transcript.text
                await emit("transcript", {"text": user_text, "language": transcript.language})
            assert user_text is not None
            await files.open()
            reply = self.reply(request, user_text, files, emit=emit, timings=timings, spoken=spoken, control=control)
            await reply.run()
            await files.close()
            if not keep_segments:
                await files.drop_segments()
            transcribed = user_text if request.audio is not None else None
            result = await self._result(request, out_dir, files, reply, timings, transcribed)
        except asyncio.CancelledError:
            await files.abort()
            if user_text is not None:
                await self.record_heard(request.session, user_text, spoken, control)
            raise
        except BaseException:
            await files.abort()
            raise
        if not reply.fallback:
            await self.sessions.record(request.session, user_text, result.reply)
            result.question, result.spoken, result.recorded = user_text, spoken, True
        log.info(
            "turn", extra={"turn_id": result.id, "timings": result.timings, "audio_s": round(result.audio_seconds, 3)}
        )
        return result

    def reply(
        self,
        request: TurnRequest,
        user_text: str,
        output: ReplyOutput,
        *,
        emit: TurnEvents,
        timings: TurnTimings,
        spoken: SpokenReply,
        start_frame: int = 0,
        chunk_frames: int | None = None,
        first_chunk_frames: int = FIRST_CHUNK_FRAMES,
        opening_silence_s: float | None = None,
        control: TurnControl | None = None,
        listening: object | None = None,
    ) -> Reply:
        """The reply to ``user_text`` in ``request``'s session, made into ``output`` when run.
        ``start_frame`` places it on the face's motion timeline (blinks, head sway), so that a face
        idling before it moves on without a jump; ``chunk_frames`` is how many frames are drawn before
        each hand-over to ``output`` (default half a second), ``first_chunk_frames`` how many at a time
        the first piece is drawn (its first 0.2 s handed over draw by draw); ``opening_silence_s`` cuts the silence the
        voice opens the reply with to that much (default 0.1 s); ``control`` is the turn's, whose stop the
        stages honour between their steps; ``listening`` (the puppet's ``motion.Listening``, live mode)
        is the user's turn on the motion timeline, so the face goes on from listening without a jump."""
        return Reply(
            respond=self.respond,
            speak=self.speak,
            animate=self.animate,
            persona=request.persona,
            history=request.session.history,
            visitor=request.session.visitor,
            user_text=user_text,
            output=output,
            emit=emit,
            timings=timings,
            spoken=spoken,
            start_frame=start_frame,
            chunk_frames=chunk_frames,
            first_chunk_frames=first_chunk_frames,
            opening_silence_s=opening_silence_s,
            control=control,
            listening=listening,
        )

    async def keep_heard(self, result: TurnResult, seconds: float) -> str | None:
        """A finished turn whose reply the user stopped ``seconds`` into it: while the turn is still its
        session's newest, the history keeps the reply up to there. What is kept, or None when nothing
        could be changed (the turn was not recorded, or newer turns followed it)."""
        if not result.recorded:
            return None
        heard = result.spoken.heard(seconds)
        if heard == result.reply:
            return heard
        session = Session(result.session_id, result.persona, owner=result.owner)
        if not await self.sessions.amend_last(session, result.question, result.reply, heard):
            return None
        log.info("finished turn heard in part", extra={"turn_id": result.id, "heard_s": seconds, "heard": heard})
        return heard

    async def record_heard(
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

    async def _result(
        self,
        request: TurnRequest,
        out_dir: Path,
        files: ReplyFiles,
        reply: Reply,
        timings: TurnTimings,
        transcript: str | None,
    ) -> TurnResult:
        seconds = files.audio_seconds
        timings.media("tts", seconds)
        timings.media("avatar", seconds)
        seconds_by_stage, rtf = timings.summary(timings.elapsed())
        result = TurnResult(
            id=out_dir.name,
            session_id=request.session.id,
            persona=request.persona.name,
            owner=request.session.owner,
            transcript=transcript,
            reply=" ".join(reply.texts),
            audio_seconds=seconds,
            timings=seconds_by_stage,
            rtf=rtf,
            models=dict(self.models),
            video_format=request.video_format.name,
            segments=files.segments,
            degraded=reply.degraded,
            video_path=out_dir / VIDEO_NAME if files.frames else None,
            audio_path=out_dir / AUDIO_NAME if files.frames else None,
            voice=request.persona.voice,
            voice_note=request.voice_note,
        )
        summary = json.dumps(result.summary(), indent=2) + "\n"
        await run_blocking(_write_atomic, out_dir / SUMMARY_NAME, summary)
        return result


def _write_atomic(path: Path, text: str) -> None:
    with media.atomic_path(path) as tmp:
        tmp.write_text(text)


def new_turn_id() -> str:
    """A random result id (the server validates ids against this shape before touching files)."""
    return secrets.token_hex(16)
