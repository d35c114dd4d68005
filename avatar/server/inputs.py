"""Turning form fields into pipeline inputs, with the 4xx error that names what is wrong."""

from __future__ import annotations

import asyncio

from avatar import media
from avatar.errors import InvalidRequestError
from avatar.server.uploads import Form, UploadedFile
from avatar.types import AudioArray


def required_text(form: Form, name: str) -> str:
    value = form.text(name)
    if value is None:
        raise InvalidRequestError(f"The {name!r} field is missing or empty.")
    return value


def required_file(form: Form, name: str) -> UploadedFile:
    upload = form.file(name)
    if upload is None:
        raise InvalidRequestError(f"The {name!r} file is missing; send it as a multipart/form-data file part.")
    return upload


async def decode_audio(upload: UploadedFile, sample_rate: int, max_seconds: float) -> AudioArray:
    """Mono float32 at ``sample_rate`` (InvalidAudioError, 400, for anything FFmpeg cannot decode).
    Decoding is blocking work, so it runs in a worker thread; it needs no model, so no lock."""
    return await asyncio.to_thread(media.decode_audio, upload.data, sample_rate, max_seconds=max_seconds)
