"""The voices a persona can speak with: the list, a sample of each, and the choice of one in a request.

A request's ``voice`` (``/speak``, ``/conversation``, ``POST /personas``) must name a voice of the list
(422 naming them otherwise); one that speaks another language than the persona's is used all the same,
and the answer says so.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from avatar import media
from avatar.errors import NotFoundError
from avatar.personas import Persona
from avatar.pipeline.threads import run_blocking
from avatar.server.service import AppState, Service
from avatar.server.urls import public_url_for
from avatar.voices import Voice, find_voice, language_note, voices_for


def available(service: Service) -> tuple[Voice, ...]:
    return voices_for(service.settings.tts_backend)


def choose(service: Service, persona: Persona, name: str | None) -> tuple[Persona, str | None]:
    """The persona speaking with the voice ``name`` (its own when None), and the note on a language
    mismatch (None when the voice speaks the persona's language or the engine has no named voices)."""
    voices = available(service)
    if name is not None:
        persona = dataclasses.replace(persona, voice=find_voice(name, voices).name)
    if not voices or persona.voice is None:
        return persona, None
    return persona, language_note(find_voice(persona.voice, voices), persona.language)


def described(request: Request[Any], voice: Voice) -> dict[str, str]:
    return {**voice.describe(), "sample_url": public_url_for(request, "voice_sample", voice=voice.name)}


async def list_voices(request: Request[AppState]) -> JSONResponse:
    """Every named voice: ``name``, ``gender``, ``language``, ``engine``, ``accent``, ``sample_url``."""
    service = request.state["service"]
    voices = available(service)
    return JSONResponse(
        {
            "engine": service.settings.tts_backend,
            "default": voices[0].name if voices else None,
            "voices": [described(request, v) for v in voices],
        }
    )


async def voice_sample(request: Request[AppState]) -> Response:
    """A few seconds of the voice, as a WAV (made once, on first asking)."""
    service = request.state["service"]
    name = request.path_params["voice"]
    if name not in {v.name for v in available(service)}:
        raise NotFoundError(f"No voice {name[:40]!r}; GET /api/v1/voices lists them.")
    service.require_ready()
    tts = service.pipeline.speak.tts
    audio = await service.exclusive(request, lambda: run_blocking(tts.sample, name))  # type: ignore[attr-defined]
    return Response(
        media.wav_bytes(audio, tts.sample_rate),
        media_type="audio/wav",
        headers={"Cache-Control": "public, max-age=86400"},
    )
