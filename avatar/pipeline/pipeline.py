"""A conversation turn: Transcribe → Respond → Speak → Animate → Mux, awaited in order."""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from avatar import media
from avatar.errors import InvalidRequestError
from avatar.personas import Persona, PersonaStore
from avatar.pipeline.sessions import MemorySessionStore, SessionStore
from avatar.pipeline.stages import AnimateStage, MuxStage, RespondStage, SpeakStage, TranscribeStage
from avatar.pipeline.threads import run_blocking
from avatar.pipeline.timing import TurnTimings
from avatar.registry import ModelRegistry
from avatar.types import ASR_SAMPLE_RATE, AudioArray, ChatMessage, frame_count

log = logging.getLogger(__name__)

VIDEO_NAME = "reply.mp4"
AUDIO_NAME = "reply.wav"
SUMMARY_NAME = "turn.json"


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
        mux: MuxStage,
        personas: PersonaStore,
        sessions: SessionStore,
        max_text_chars: int = 1000,
        default_persona: str | None = None,
        overlapped: bool = True,
    ) -> None:
        self.overlapped = overlapped
        self.default_persona = default_persona or personas.names()[0]
        self.transcribe = transcribe
        self.respond = respond
        self.speak = speak
        self.animate = animate
        self.mux = mux
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
        history_turns: int = 6,
        session_ttl: float = 1800,
        sessions: SessionStore | None = None,
        max_text_chars: int = 1000,
        default_persona: str | None = None,
        overlapped: bool = True,
    ) -> Pipeline:
        return cls(
            transcribe=TranscribeStage(registry.get("asr")),
            respond=RespondStage(registry.get("llm"), max_new_tokens=max_new_tokens),
            speak=SpeakStage(registry.get("tts")),
            animate=AnimateStage(registry.get("face")),
            mux=MuxStage(),
            personas=personas,
            sessions=sessions or MemorySessionStore(ttl_seconds=session_ttl, max_turns=history_turns),
            max_text_chars=max_text_chars,
            default_persona=default_persona,
            overlapped=overlapped,
        )

    def check_text(self, text: str) -> str:
        text = text.strip()
        if not text:
            raise InvalidRequestError("The text is empty; say or type something.")
        if len(text) > self.max_text_chars:
            raise InvalidRequestError(f"The text is {len(text)} characters long; the limit is {self.max_text_chars}.")
        return text

    async def run(
        self,
        out_dir: Path,
        *,
        audio: AudioArray | None = None,
        text: str | None = None,
        persona: str | None = None,
        session_id: str | None = None,
        overlapped: bool | None = None,
    ) -> TurnResult:
        """One whole turn from 16 kHz speech (or typed text). Writes reply.mp4, reply.wav and turn.json
        into ``out_dir``; on any error none of them is left behind.

        ``overlapped`` speaks and animates each sentence while the model writes the next and encodes
        frames as they are drawn; otherwise each stage finishes before the next starts.
        """
        if (audio is None) == (text is None):
            raise InvalidRequestError("Give either audio or text, not both and not neither.")
        who = self.personas.get(persona or self.default_persona)
        session = await self.sessions.get(session_id, who.name)
        timings = TurnTimings()
        started = time.perf_counter()
        video_path, audio_path, summary_path = out_dir / VIDEO_NAME, out_dir / AUDIO_NAME, out_dir / SUMMARY_NAME
        try:
            transcript: str | None = None
            if audio is not None:
                with timings.stage("asr"):
                    transcript = (await self.transcribe(audio, who.language)).text
                timings.media("asr", audio.size / ASR_SAMPLE_RATE)
                user_text = transcript
            else:
                user_text = self.check_text(text or "")
            overlap = self.overlapped if overlapped is None else overlapped
            reply_turn = self._overlapped if overlap else self._sequential
            reply, fallback, speech = await reply_turn(who, session.history, user_text, video_path, timings, started)
            seconds = speech.size / self.speak.sample_rate
            timings.media("tts", seconds)
            timings.media("avatar", seconds)
            with timings.stage("mux"):
                media.write_wav(audio_path, speech, self.speak.sample_rate)
            seconds_by_stage, rtf = timings.summary(time.perf_counter() - started)
            result = TurnResult(
                id=out_dir.name,
                session_id=session.id,
                persona=who.name,
                transcript=transcript,
                reply=reply,
                audio_seconds=seconds,
                timings=seconds_by_stage,
                rtf=rtf,
                models=dict(self.models),
                degraded=["llm_fallback"] if fallback else [],
                video_path=video_path,
                audio_path=audio_path,
            )
            with media.atomic_path(summary_path) as tmp:
                tmp.write_text(json.dumps(result.summary(), indent=2) + "\n")
        except BaseException:
            for path in (video_path, audio_path, summary_path):
                path.unlink(missing_ok=True)
            raise
        if not fallback:
            await self.sessions.record(session, user_text, reply)
        log.info("turn", extra={"turn_id": result.id, "timings": result.timings, "audio_s": round(seconds, 3)})
        return result

    async def _sequential(
        self,
        who: Persona,
        history: list[ChatMessage],
        user_text: str,
        video_path: Path,
        timings: TurnTimings,
        started: float,
    ) -> tuple[str, bool, AudioArray]:
        """Each stage over the whole reply, one after the other."""
        with timings.stage("llm"):
            reply, fallback = await self.respond(who, history, user_text)
        with timings.stage("tts"):
            speech = await self.speak(reply, who)
        with timings.stage("avatar"):
            face = await self.animate.face_for(who.image_path)
            frames = await self.animate(face, speech, self.speak.sample_rate)
        timings.seconds["first_frame"] = time.perf_counter() - started
        with timings.stage("mux"):
            await self.mux(video_path, frames, speech, self.speak.sample_rate, self.animate.fps)
        return reply, fallback, media.fit_audio_to_frames(speech, self.speak.sample_rate, len(frames), self.animate.fps)

    async def _overlapped(
        self,
        who: Persona,
        history: list[ChatMessage],
        user_text: str,
        video_path: Path,
        timings: TurnTimings,
        started: float,
    ) -> tuple[str, bool, AudioArray]:
        """Sentence by sentence: while the model writes sentence k+1, sentence k is spoken, drawn and
        encoded. Each sentence's audio is padded to whole frames so the streams stay in step."""
        rate, fps = self.speak.sample_rate, self.animate.fps
        animator = self.animate.animator
        face = await self.animate.face_for(who.image_path)
        writer = media.Mp4Writer(video_path, rate, fps)
        sentences: list[str] = []
        speech: list[AudioArray] = []
        fallback = False
        frame_at = 0
        llm_started = time.perf_counter()

        def draw_and_encode(clip: AudioArray, start_frame: int) -> None:
            for chunk in animator.render_chunks(face, clip, rate, chunk_frames=fps // 2, start_frame=start_frame):
                timings.seconds.setdefault("first_frame", time.perf_counter() - started)
                mux_started = time.perf_counter()
                writer.write_video(chunk)
                timings.seconds["mux"] = timings.seconds.get("mux", 0.0) + time.perf_counter() - mux_started
            mux_started = time.perf_counter()
            writer.write_audio(clip)
            timings.seconds["mux"] = timings.seconds.get("mux", 0.0) + time.perf_counter() - mux_started

        try:
            replies = self.respond.sentences(who, history, user_text)
            async with contextlib.aclosing(replies):  # an error below still stops the model cleanly
                async for sentence, is_fallback in replies:
                    timings.seconds["llm"] = time.perf_counter() - llm_started
                    sentences.append(sentence)
                    fallback = fallback or is_fallback
                    with timings.stage("tts"):
                        clip = await self.speak(sentence, who)
                    frames = frame_count(clip.size / rate, fps)
                    clip = media.fit_audio_to_frames(clip, rate, frames, fps)
                    with timings.stage("avatar"):
                        await run_blocking(draw_and_encode, clip, frame_at)
                    frame_at += frames
                    speech.append(clip)
            timings.seconds["avatar"] -= timings.seconds.get("mux", 0.0)  # encoding ran inside that stage
            with timings.stage("mux"):
                await run_blocking(writer.close)
        except BaseException:
            writer.abort()
            raise
        return " ".join(sentences), fallback, np.concatenate(speech)


def new_turn_id() -> str:
    """A random result id (the server validates ids against this shape before touching files)."""
    return secrets.token_hex(16)
