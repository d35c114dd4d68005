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


def segment_url(request: Request[AppState], result_id: str, index: int) -> str:
    """Where a streamed turn's video segment is fetched (a path on this server)."""
    return str(request.app.url_path_for("result_segment", result_id=result_id, index=index))


async def result_segment(request: Request[AppState]) -> FileResponse:
    """One segment of a turn's fragmented MP4, while the turn runs and after (appended in order to one
    Media Source Extensions buffer, segment 0 first, they play the reply)."""
    service = request.state["service"]
    path = service.results.segment(request.path_params["result_id"], request.path_params["index"])
    return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private, max-age=3600"})


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
