"""A conversation turn: Transcribe → Respond → Speak → Animate → Mux, awaited in order."""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from avatar import media
from avatar.backends.base import ASR_SAMPLE_RATE, AudioArray
from avatar.errors import InvalidRequestError
from avatar.personas import PersonaStore
from avatar.pipeline.sessions import SessionStore
from avatar.pipeline.stages import AnimateStage, MuxStage, RespondStage, SpeakStage, TranscribeStage
from avatar.pipeline.timing import TurnTimings
from avatar.registry import ModelRegistry

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
    ) -> None:
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
        cls, registry: ModelRegistry, personas: PersonaStore, *, max_new_tokens: int = 60, history_turns: int = 6,
        session_ttl: float = 1800, max_text_chars: int = 1000, default_persona: str | None = None,
    ) -> Pipeline:
        return cls(
            transcribe=TranscribeStage(registry.get("asr")),
            respond=RespondStage(registry.get("llm"), max_new_tokens=max_new_tokens),
            speak=SpeakStage(registry.get("tts")),
            animate=AnimateStage(registry.get("face")),
            mux=MuxStage(),
            personas=personas,
            sessions=SessionStore(ttl_seconds=session_ttl, max_turns=history_turns),
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

    async def run(
        self,
        out_dir: Path,
        *,
        audio: AudioArray | None = None,
        text: str | None = None,
        persona: str | None = None,
        session_id: str | None = None,
    ) -> TurnResult:
        """One whole turn from 16 kHz speech (or typed text). Writes reply.mp4, reply.wav and turn.json
        into ``out_dir``; on any error none of them is left behind."""
        if (audio is None) == (text is None):
            raise InvalidRequestError("Give either audio or text, not both and not neither.")
        who = self.personas.get(persona or self.default_persona)
        session = self.sessions.get(session_id, who.name)
        timings = TurnTimings()
        started = time.perf_counter()
        written: list[Path] = []
        try:
            transcript: str | None = None
            if audio is not None:
                with timings.stage("asr"):
                    transcript = (await self.transcribe(audio, who.language)).text
                timings.media("asr", audio.size / ASR_SAMPLE_RATE)
                user_text = transcript
            else:
                user_text = self.check_text(text or "")
            with timings.stage("llm"):
                reply, fallback = await self.respond(who, session.history, user_text)
            with timings.stage("tts"):
                speech = await self.speak(reply, who)
            seconds = speech.size / self.speak.sample_rate
            timings.media("tts", seconds)
            with timings.stage("avatar"):
                face = await self.animate.face_for(who.image_path)
                frames = await self.animate(face, speech, self.speak.sample_rate)
            timings.media("avatar", seconds)
            video_path = out_dir / VIDEO_NAME
            with timings.stage("mux"):
                written.append(video_path)
                await self.mux(video_path, frames, speech, self.speak.sample_rate, self.animate.fps)
                audio_path = out_dir / AUDIO_NAME
                written.append(audio_path)
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
            summary_path = out_dir / SUMMARY_NAME
            written.append(summary_path)
            with media.atomic_path(summary_path) as tmp:
                tmp.write_text(json.dumps(result.summary(), indent=2) + "\n")
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        if not fallback:
            self.sessions.record(session, user_text, reply)
        log.info("turn", extra={"turn_id": result.id, "timings": result.timings, "audio_s": round(seconds, 3)})
        return result


def new_turn_id() -> str:
    """A random result id (the server validates ids against this shape before touching files)."""
    return secrets.token_hex(16)
