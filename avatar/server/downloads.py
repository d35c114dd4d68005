"""A finished turn's summary and files. Plain file reads: never waits on the models."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, MalformedRangeHeader, RangeNotSatisfiable

from avatar.errors import NotFoundError
from avatar.pipeline.files import VIDEO_NAME
from avatar.server.error_responses import MalformedRequestError, RangeNotSatisfiableError
from avatar.server.security import caller_of
from avatar.server.service import AppState
from avatar.server.urls import public_url_for


def result_urls(request: Request[AppState], result_id: str, *, media: bool = True) -> dict[str, str | None]:
    """The URLs of a result's video and audio (None for a text-only reply, which has neither)."""
    return {
        "video_url": public_url_for(request, "result_video", result_id=result_id) if media else None,
        "audio_url": public_url_for(request, "result_audio", result_id=result_id) if media else None,
    }


def segment_url(request: Request[AppState], result_id: str, index: int) -> str:
    """Where a streamed turn's video segment is fetched."""
    return public_url_for(request, "result_segment", result_id=result_id, index=index)


async def result_segment(request: Request[AppState]) -> FileResponse:
    """One segment of a turn's fragmented MP4, while the turn runs and after (appended in order to one
    Media Source Extensions buffer, segment 0 first, they play the reply)."""
    service = request.state["service"]
    path = service.results.segment(request.path_params["result_id"], request.path_params["index"])
    return FileResponse(path, media_type="video/mp4", headers={"Cache-Control": "private, max-age=3600"})


async def result_summary(request: Request[AppState]) -> JSONResponse:
    result_id = request.path_params["result_id"]
    results = request.state["service"].results
    if not caller_of(request.scope).owns(results.owner(result_id)):
        raise NotFoundError(f"No result {result_id}.")  # another key's: as if there were none
    summary: dict[str, Any] = results.summary(result_id)
    has_video = (results.folder(result_id) / VIDEO_NAME).is_file()
    return JSONResponse({**summary, **result_urls(request, result_id, media=has_video)})


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
    response = FileResponse(
        path,
        media_type=media_type,
        filename=f"{result_id}.{suffix}",
        content_disposition_type="inline",
        headers={"Cache-Control": "private"},  # a user's reply; shared caches keep out
        stat_result=path.stat(),
    )
    _check_range(request, response)
    return response


def _check_range(request: Request[AppState], response: FileResponse) -> None:
    """Judge the Range header as FileResponse will, ahead of it: its own answers to a bad range are
    plain text, ours are the JSON error every other failure gets."""
    http_range = request.headers.get("range")
    if http_range is None:
        return
    assert response.stat_result is not None
    size = response.stat_result.st_size
    try:
        starlette_judges_range(response, http_range, request.headers.get("if-range"), size)
    except MalformedRangeHeader as exc:
        raise MalformedRequestError(
            f"The Range header is malformed ({exc.content}); e.g. Range: bytes=0-1023."
        ) from None
    except RangeNotSatisfiable:
        raise RangeNotSatisfiableError(
            f"The requested range lies outside the file, which is {size} bytes long.", size
        ) from None


def starlette_judges_range(response: FileResponse, http_range: str, if_range: str | None, size: int) -> None:
    """Raise what ``response`` itself will find wrong with ``http_range`` (MalformedRangeHeader,
    RangeNotSatisfiable); nothing for a good range, or one that a stale ``If-Range`` makes moot.

    Starlette's own judgement, through two private helpers of FileResponse (the only private use of
    Starlette here; pyproject.toml bounds Starlette below 2): ``tests/server/test_private_uses.py``
    fails if they change.
    """
    if if_range is not None and not response._should_use_range(if_range):
        return  # a stale range: the whole file is sent
    FileResponse._parse_range_header(http_range, size)
