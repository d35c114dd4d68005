"""Each stage of a turn on its own: transcribe, chat, speak, animate."""

from __future__ import annotations

import time
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from avatar import media
from avatar.errors import InvalidRequestError, NoAudioError
from avatar.fmp4 import video_format
from avatar.images import inspect_image
from avatar.personas import Persona
from avatar.pipeline.files import VIDEO_NAME
from avatar.pipeline.text import unspeakable_reason
from avatar.pipeline.threads import run_blocking
from avatar.server import voice_routes
from avatar.server.inputs import decode_audio, required_file, required_text
from avatar.server.security import caller_of
from avatar.server.service import AppState, Service
from avatar.server.uploads import Form, audio_type, image_type, read_form
from avatar.server.urls import public_url_for
from avatar.types import ASR_SAMPLE_RATE, PreparedFace

# Rate for /animate's audio: the TTS rate, so an MP4 from here sounds like one from a whole turn.
ANIMATE_SAMPLE_RATE = 24_000


async def _text_request(request: Request[AppState]) -> tuple[Service, Form, str, Persona]:
    """The service (ready), the form, its validated ``text`` and the chosen persona."""
    service = request.state["service"]
    service.require_ready()
    form = await read_form(request, max_bytes=service.max_upload_bytes, files={})
    text = service.pipeline.check_text(required_text(form, "text"))
    problem = unspeakable_reason(text)
    if problem is not None:
        raise InvalidRequestError(problem)
    return service, form, text, service.persona(form.choice("persona"), caller_of(request.scope))


async def transcribe(request: Request[AppState]) -> JSONResponse:
    """``audio`` (file), optional ``language`` → the words in it, with segment times."""
    service = request.state["service"]
    service.require_ready()
    form = await read_form(request, max_bytes=service.max_upload_bytes, files={"audio": audio_type})
    audio = await decode_audio(required_file(form, "audio"), ASR_SAMPLE_RATE, service.settings.max_audio_seconds)
    stage = service.pipeline.transcribe
    started = time.perf_counter()
    transcript = await service.exclusive(request, lambda: stage(audio, form.text("language")))
    return JSONResponse(
        {
            "text": transcript.text,
            "language": transcript.language,
            "audio_seconds": round(audio.size / ASR_SAMPLE_RATE, 3),
            "segments": [{"start": s.start, "end": s.end, "text": s.text} for s in transcript.segments],
            "timings": {"asr": round(time.perf_counter() - started, 3)},
        }
    )


async def chat(request: Request[AppState]) -> JSONResponse:
    """``text``, optional ``persona`` and ``session_id`` → the persona's reply (kept in the session)."""
    service, form, text, persona = await _text_request(request)
    pipeline = service.pipeline
    session = await pipeline.sessions.get(form.text("session_id"), persona.name, caller_of(request.scope).key)
    started = time.perf_counter()
    reply, fallback = await service.exclusive(
        request, lambda: pipeline.respond(persona, session.history, text, session.visitor)
    )
    if fallback is None:
        await pipeline.sessions.record(session, text, reply)
    return JSONResponse(
        {
            "session_id": session.id,
            "persona": persona.name,
            "reply": reply,
            "timings": {"llm": round(time.perf_counter() - started, 3)},
            "degraded": [] if fallback is None else [{"code": "llm_fallback", "stage": "llm", "reason": fallback}],
        }
    )


async def speak(request: Request[AppState]) -> Response:
    """``text``, optional ``persona`` and ``voice`` → the persona's voice (or that one) saying it, as a
    WAV; ``X-Voice`` names the voice, ``X-Voice-Note`` says when it speaks another language than the persona."""
    service, form, text, persona = await _text_request(request)
    persona, voice_note = voice_routes.choose(service, persona, form.choice("voice"))
    pipeline = service.pipeline
    try:
        speech = await service.exclusive(request, lambda: pipeline.speak(text, persona))
    except NoAudioError:  # the voice read nothing it could say: the user's text, not a fault
        raise InvalidRequestError(
            f"The voice of {persona.name!r} cannot pronounce this text (it made no sound); "
            "write it in words of a language the voice speaks."
        ) from None
    rate = pipeline.speak.sample_rate
    return Response(
        media.wav_bytes(speech, rate),
        media_type="audio/wav",
        headers={
            "X-Audio-Seconds": f"{speech.size / rate:.3f}",
            **({"X-Voice": persona.voice} if persona.voice else {}),
            **({"X-Voice-Note": voice_note} if voice_note else {}),
        },
    )


async def animate(request: Request[AppState]) -> FileResponse:
    """``audio`` (file) and ``persona`` or an ``image`` (file) with a face → the talking head as MP4.

    The MP4 is also kept as a result (``Content-Location`` names it) so a player can seek in it.
    """
    service = request.state["service"]
    service.require_ready()
    form = await read_form(
        request, max_bytes=service.max_upload_bytes, files={"audio": audio_type, "image": image_type}
    )
    image = form.file("image")
    if image is not None and form.choice("persona") is not None:
        raise InvalidRequestError("Send either a 'persona' or an 'image', not both.")
    caller = caller_of(request.scope)
    persona = service.persona(form.choice("persona"), caller) if image is None else None
    if image is not None:  # type, size and pixels from the header, before waiting for the models
        inspect_image(image.data, max_pixels=service.settings.max_image_pixels)
    audio = await decode_audio(required_file(form, "audio"), ANIMATE_SAMPLE_RATE, service.settings.max_audio_seconds)
    stage = service.pipeline.animate
    fmt = video_format(form.text("video_format"))

    async def render(video: Path) -> None:
        face: PreparedFace
        if persona is not None:
            face = await stage.face_for(persona.image_path)
        else:
            assert image is not None
            face = await run_blocking(stage.prepare_bytes, image.data)
        pipeline = service.pipeline
        sign = pipeline.provenance.sign_mp4 if pipeline.provenance is not None else None
        await stage.to_mp4(face, audio, ANIMATE_SAMPLE_RATE, video, fmt, sign=sign, label=pipeline.visible_label)

    with service.results.reserve(owner=caller.key) as folder:
        await service.exclusive(request, lambda: render(folder / VIDEO_NAME))
    result_id = folder.name
    path, media_type = service.results.file(result_id, "video.mp4")
    return FileResponse(
        path,
        media_type=media_type,
        headers={
            "Content-Location": public_url_for(request, "result_video", result_id=result_id),
            "X-Result-ID": result_id,
        },
    )
