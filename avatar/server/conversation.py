"""The whole turn: a spoken (or typed) question in, the persona's video reply out."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from avatar.errors import InvalidRequestError
from avatar.server.downloads import result_urls
from avatar.server.inputs import decode_audio
from avatar.server.service import AppState
from avatar.server.uploads import audio_type, read_form
from avatar.types import ASR_SAMPLE_RATE


async def conversation(request: Request[AppState]) -> JSONResponse:
    """``audio`` (file) or ``text``, optional ``persona`` and ``session_id`` → the turn's summary with
    the URLs of its MP4 and WAV."""
    service = request.state["service"]
    service.require_ready()
    form = await read_form(request, max_bytes=service.max_upload_bytes, files={"audio": audio_type})
    upload, text = form.file("audio"), form.text("text")
    if (upload is None) == (text is None):
        raise InvalidRequestError("Send either an 'audio' file or a 'text' field (not both).")
    persona = service.persona(form.text("persona"))
    audio = None
    if upload is not None:
        audio = await decode_audio(upload, ASR_SAMPLE_RATE, service.settings.max_audio_seconds)
    pipeline = service.pipeline
    with service.results.reserve() as folder:
        result = await service.exclusive(
            request,
            lambda: pipeline.run(
                folder, audio=audio, text=text, persona=persona.name, session_id=form.text("session_id")
            ),
        )
    service.metrics.observe_turn(result.timings)
    return JSONResponse({**result.summary(), **result_urls(request, result.id)})


async def personas(request: Request[AppState]) -> JSONResponse:
    """The installed personas and the default one."""
    service = request.state["service"]
    return JSONResponse(
        {
            "default": service.settings.default_persona,
            "personas": [p.describe() for p in service.runtime.personas],
        }
    )
