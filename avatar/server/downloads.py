"""A finished turn's summary and files. Plain file reads: never waits on the models."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse

from avatar.server.service import AppState


def result_urls(request: Request[AppState], result_id: str) -> dict[str, str]:
    return {
        "video_url": str(request.url_for("result_video", result_id=result_id)),
        "audio_url": str(request.url_for("result_audio", result_id=result_id)),
    }


async def result_summary(request: Request[AppState]) -> JSONResponse:
    result_id = request.path_params["result_id"]
    summary: dict[str, Any] = request.state["service"].results.summary(result_id)
    return JSONResponse({**summary, **result_urls(request, result_id)})


async def result_video(request: Request[AppState]) -> FileResponse:
    return _download(request, "video.mp4")


async def result_audio(request: Request[AppState]) -> FileResponse:
    return _download(request, "audio.wav")


def _download(request: Request[AppState], name: str) -> FileResponse:
    """The file, with Range support (FileResponse answers ``Range: bytes=…`` with 206) so players seek."""
    service = request.state["service"]
    result_id = request.path_params["result_id"]
    path, media_type = service.results.file(result_id, name)
    suffix = name.rsplit(".", 1)[1]
    return FileResponse(
        path,
        media_type=media_type,
        filename=f"{result_id}.{suffix}",
        content_disposition_type="inline",
        headers={"Cache-Control": "private"},  # a user's reply; shared caches keep out
    )
