"""Personas over HTTP: list them, show their photos, and make a new one from anyone's photo.

``POST /api/v1/personas`` takes a portrait (and optionally a name, a system prompt, a language, what
the person knows about themself and a voice sample for voice-cloning engines), checks it before and
while decoding, finds the face and prepares it once under the model queue, and keeps the persona
among the created ones (expiring, bounded in number), its knowledge beside its photo. A photo without
a usable face, or anything else wrong, leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import re
import shutil
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import structlog
from PIL import Image
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from avatar import media
from avatar.errors import AvatarError, InvalidRequestError, NoSpeechError, UnknownPersonaError
from avatar.images import load_image
from avatar.knowledge import KNOWLEDGE_FILE, knowledge_problem
from avatar.personas import DEFAULT_PROMPT, MAX_PORTRAIT_SIDE, PORTRAIT, UNNAMED_PROMPT, VOICE, Persona
from avatar.pipeline.stages import SILENCE_DBFS
from avatar.pipeline.text import checked_text
from avatar.pipeline.threads import run_blocking
from avatar.prompt import OPENING_TEXT
from avatar.server import voice_routes
from avatar.server.security import caller_of, picture_token
from avatar.server.service import AppState, Service
from avatar.server.uploads import audio_type, image_type, read_form
from avatar.server.urls import public_url_for
from avatar.types import ImageArray
from avatar.voices import find_voice

log = structlog.stdlib.get_logger(__name__)

NAME_CHARS = 64
PROMPT_CHARS = 2000
VOICE_RATE = 24_000
VOICE_SECONDS = (3.0, 30.0)  # a voice sample long enough to clone from, short enough to keep
TOKEN = re.compile(r"[0-9a-f]{32}")
READ_AHEAD_WITHIN_S = 60.0  # a new persona's prompt is read ahead if the model is free within this
LANGUAGE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{2,8})?$")
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp"}


def describe(request: Request[AppState], persona: Persona) -> dict[str, Any]:
    token = {} if persona.owner is None else {"token": picture_token(persona.name, persona.owner)}
    return {
        **persona.describe(),
        "image_url": _with_query(public_url_for(request, "persona_image", persona=persona.name), token),
        "face_url": _with_query(public_url_for(request, "persona_face", persona=persona.name), token),
    }


def _with_query(url: str, query: dict[str, str]) -> str:
    return f"{url}?{urlencode(query)}" if query else url


async def list_personas(request: Request[AppState]) -> JSONResponse:
    """The bundled personas, then the created ones the caller may see (newest first), and the default
    one. With API keys, a key sees those it created (an admin key: all); with keys off, none is listed
    (a created one is reached by its unguessable name, which only its creator was given)."""
    service = request.state["service"]
    caller = caller_of(request.scope)
    personas = service.runtime.personas
    everyone = await run_blocking(personas.everyone)
    keys_on = caller.key is not None
    shown = [p for p in everyone if personas.is_bundled(p.name) or (keys_on and caller.owns(p.owner))]
    return JSONResponse(
        {"default": service.settings.default_persona, "personas": [describe(request, p) for p in shown]}
    )


def _persona(request: Request[AppState]) -> Persona:
    """The persona of the path, if the caller may see it (another key's is 404, as if there were none)."""
    return request.state["service"].persona(request.path_params["persona"], caller_of(request.scope))


def _pictured(request: Request[AppState]) -> Persona:
    """The persona of a picture's path: an ``<img src>`` sends no key, so an owned persona's picture is
    shown for the token of its owner's listing (or to its owner's key)."""
    persona = request.state["service"].runtime.personas.get(request.path_params["persona"])
    token = request.query_params.get("token", "")
    if token and not TOKEN.fullmatch(token):
        raise InvalidRequestError("'token' must be the 32 hex digits of a picture URL from the persona's listing.")
    if persona.owner is not None and not caller_of(request.scope).owns(persona.owner):
        if not hmac.compare_digest(token, picture_token(persona.name, persona.owner)):
            raise UnknownPersonaError(f"Unknown persona {persona.name!r}.")
    return persona


async def get_persona(request: Request[AppState]) -> JSONResponse:
    return JSONResponse(describe(request, _persona(request)))


async def persona_image(request: Request[AppState]) -> FileResponse:
    """A persona's photo, as it was given (bundled) or kept (created: upright, at most 2048 px)."""
    persona = _pictured(request)
    path = persona.image_path
    return FileResponse(
        path,
        media_type=IMAGE_TYPES.get(path.suffix.lower(), "application/octet-stream"),
        headers={"Cache-Control": "private, max-age=3600"},
    )


async def persona_face(request: Request[AppState]) -> Response:
    """The persona's face as the talking head frames it at rest (JPEG): the picture the video starts
    from, so a page can show it before the first reply."""
    service = request.state["service"]
    service.require_ready()
    persona = _pictured(request)
    stage = service.pipeline.animate
    face = stage.cached(persona.image_path)
    if face is None:  # a persona created on another replica: prepare it here, once, in the model queue
        face = await service.exclusive(request, lambda: run_blocking(stage.prepare_path, persona.image_path))
    still = getattr(face, "image", None)
    if still is None:  # an animator that keeps no framed picture: the photo itself
        return await persona_image(request)
    data = await run_blocking(_jpeg, still)
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


def _jpeg(image: ImageArray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=90)
    return out.getvalue()


async def delete_persona(request: Request[AppState]) -> Response:
    """Remove a created persona (the bundled ones cannot be removed)."""
    service = request.state["service"]
    name = request.path_params["persona"]
    personas = service.runtime.personas
    if personas.is_bundled(name):
        raise InvalidRequestError(f"Persona {name!r} is bundled with the server and cannot be removed.")
    _persona(request)  # UnknownPersonaError (404) when there is no such persona, or it is another key's
    assert personas.created is not None
    await run_blocking(personas.created.remove, name)
    return Response(status_code=204)


async def create_persona(request: Request[AppState]) -> JSONResponse:
    """``image`` (file, required), ``consent`` ("true": the uploader may use the photo), optional
    ``name``, ``system_prompt``, ``language``, ``knowledge`` (text, or a .txt/.md file part) and
    ``voice`` (the name of a voice of GET /voices, or a file: a sample for a voice-cloning engine) → the
    new persona, usable at once in every route by its ``name``."""
    service = request.state["service"]
    service.require_ready()
    form = await read_form(
        request,
        max_bytes=service.max_upload_bytes,
        files={"image": image_type, "voice": audio_type},
        either=frozenset({"voice"}),
    )
    if form.fields.get("consent") != "true":
        raise InvalidRequestError(
            "Confirm that you may use this photo: send consent=true (you have the right to use this person's "
            "likeness, and the videos made from it are labelled as AI-generated)."
        )
    upload = form.file("image")
    if upload is None:
        raise InvalidRequestError("The 'image' file is missing: send the portrait as a multipart/form-data file.")
    named = _text(form.text("name"), "name", NAME_CHARS)
    display_name = named or "Your photo"
    prompt = _text(form.text("system_prompt"), "system_prompt", PROMPT_CHARS)
    language = form.text("language") or "en"
    if not LANGUAGE.match(language):
        raise InvalidRequestError(f"'language' must be a language code such as 'en' or 'pt-BR', not {language[:20]!r}.")
    knowledge = (form.text("knowledge") or "").strip()
    problem = knowledge_problem(knowledge)
    if problem is not None:
        raise InvalidRequestError(f"The 'knowledge' field: {problem}")
    voice_name = form.choice("voice")
    if voice_name is not None:
        voice_name = find_voice(voice_name, voice_routes.available(service)).name
    photo = await run_blocking(load_image, upload.data, max_pixels=service.settings.max_image_pixels)
    voice = form.file("voice")
    sample = await _voice_sample(voice.data) if voice is not None else None
    created = service.runtime.personas.created
    assert created is not None
    name = created.new_name()
    folder = await run_blocking(created.begin, name)
    try:
        meta = await run_blocking(_save, folder, photo, sample, _cloning_sample(service, sample), knowledge)
        persona = Persona(
            name=name,
            display_name=display_name,
            image_path=folder / PORTRAIT,
            system_prompt=prompt or (DEFAULT_PROMPT if named else UNNAMED_PROMPT).format(display_name=display_name),
            language=language,
            voice=voice_name,
            voice_sample=folder / VOICE if "voice_sample" in meta else None,
        )
        faces = await service.exclusive(request, lambda: _prepare(service, persona))
        meta |= {"display_name": display_name, "language": language, "system_prompt": persona.system_prompt}
        if voice_name is not None:
            meta["voice"] = voice_name
        owner = caller_of(request.scope).key
        if owner is not None:
            meta["owner"] = owner
        kept = await run_blocking(created.finish, name, meta)
    except BaseException:
        await run_blocking(created.remove, name)
        raise
    body = {**describe(request, kept), "faces_found": faces}
    if faces > 1:
        body["note"] = f"The photo holds {faces} faces; the largest one is animated."
    _, voice_note = voice_routes.choose(service, kept, None)
    if voice_note is not None:
        body["voice_note"] = voice_note
    location = public_url_for(request, "persona", persona=name)
    # Its first question then finds its prompt read (``avatar.prompt.OPENING_TEXT``).
    read = BackgroundTask(_read_prompt, service, kept)
    return JSONResponse(body, status_code=201, headers={"Location": location}, background=read)


async def _read_prompt(service: Service, persona: Persona) -> None:
    """The new persona's prompt read into the model's cache once nothing else runs or waits for the
    model (reading it holds the model for seconds: other users' turns come first), within a minute."""
    try:
        await asyncio.wait_for(service.queue.idle.wait(), READ_AHEAD_WITHIN_S)
    except TimeoutError:
        log.info("persona prompt not read ahead", persona=persona.name, error="the model stayed busy")
        return
    started = time.perf_counter()
    try:
        await service.queue.run(lambda: service.pipeline.respond.prefill(persona, (), OPENING_TEXT))
    except AvatarError as exc:  # only a head start: a busy or failing service skips it
        log.info("persona prompt not read ahead", persona=persona.name, error=exc.message)
    else:
        log.info("persona prompt read ahead", persona=persona.name, seconds=round(time.perf_counter() - started, 2))


def _text(value: str | None, field: str, limit: int) -> str | None:
    return None if value is None else checked_text(value, limit, field)


async def _voice_sample(data: bytes) -> np.ndarray:
    audio = await asyncio.to_thread(media.decode_audio, data, VOICE_RATE, max_seconds=VOICE_SECONDS[1])
    seconds = audio.size / VOICE_RATE
    if seconds < VOICE_SECONDS[0]:
        raise InvalidRequestError(
            f"The voice sample is {seconds:.1f} s long; send at least {VOICE_SECONDS[0]:.0f} s of clear speech."
        )
    if media.rms_dbfs(audio) < SILENCE_DBFS:
        raise NoSpeechError("The voice sample is silent: record a few seconds of the voice to clone.")
    return audio


def _cloning_sample(service: Service, sample: np.ndarray | None) -> Path | None:
    """A voice-cloning engine needs a sample: without an uploaded one, the default persona's voice."""
    if sample is not None or service.settings.tts_backend != "xtts":
        return None
    return service.persona(None).voice_sample


def _save(
    folder: Path, photo: ImageArray, sample: np.ndarray | None, borrowed: Path | None, knowledge: str
) -> dict[str, str]:
    """Keep the photo (upright, metadata dropped, scaled to at most 2048 px), the voice sample and the
    knowledge."""
    image = Image.fromarray(photo)
    image.thumbnail((MAX_PORTRAIT_SIDE, MAX_PORTRAIT_SIDE))
    image.save(folder / PORTRAIT, format="JPEG", quality=92)
    meta = {"image": PORTRAIT}
    if sample is not None:
        media.write_wav(folder / VOICE, sample, VOICE_RATE)
        meta["voice_sample"] = VOICE
    elif borrowed is not None:
        shutil.copyfile(borrowed, folder / VOICE)
        meta["voice_sample"] = VOICE
    if knowledge:
        (folder / KNOWLEDGE_FILE).write_text(knowledge + "\n", encoding="utf-8")
        meta["knowledge"] = KNOWLEDGE_FILE
    return meta


async def _prepare(service: Service, persona: Persona) -> int:
    """Find and prepare the face (NoFaceError, 422, when there is none) and the voice, once."""
    pipeline = service.pipeline
    face = await run_blocking(pipeline.animate.prepare_path, persona.image_path)
    await run_blocking(pipeline.speak.tts.prepare_voice, persona.voice_spec)
    return int(getattr(face, "faces", 1))
