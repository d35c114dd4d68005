"""The whole turn: a spoken (or typed) question in, the persona's video reply out — as one JSON answer
when it is done, or as Server-Sent Events while it is made. Both run the same turn machinery."""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import structlog
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse

from avatar.errors import AvatarError, InvalidRequestError, NotFoundError
from avatar.pipeline import TurnResult, new_turn_id
from avatar.pipeline.pipeline import TurnRequest
from avatar.server import voice_routes
from avatar.server.downloads import result_urls, segment_url
from avatar.server.inputs import decode_audio
from avatar.server.results import ID_PATTERN
from avatar.server.security import caller_of
from avatar.server.service import AppState, Service
from avatar.server.turns import DISCONNECTED
from avatar.server.uploads import audio_type, read_form
from avatar.types import ASR_SAMPLE_RATE

log = structlog.stdlib.get_logger(__name__)

EVENTS_AHEAD = 64  # events a slow client may leave unread before the turn waits for it
SEND_TIMEOUT_S = 30.0  # a client that reads nothing for this long is taken as gone
PING_S = 15  # keeps proxies from closing a quiet stream while the turn waits in the queue
STOP_WAIT_S = 30.0  # the longest a DELETE waits for the stopped turn to let go of the models


async def _turn_request(request: Request[AppState]) -> tuple[Service, TurnRequest]:
    """The form of a turn (``audio`` file or ``text``; optional ``persona``, ``voice``, ``session_id``,
    ``video_format``), checked and decoded, with the note on its voice (a language other than the
    persona's) for the result; the timings of the turn count from the end of the upload."""
    service = request.state["service"]
    service.require_ready()
    form = await read_form(request, max_bytes=service.max_upload_bytes, files={"audio": audio_type})
    received = time.perf_counter()
    upload, text = form.file("audio"), form.text("text")
    if (upload is None) == (text is None):
        raise InvalidRequestError("Send either an 'audio' file or a 'text' field (not both).")
    caller = caller_of(request.scope)
    asked = service.persona(form.choice("persona"), caller)
    persona, voice_note = voice_routes.choose(service, asked, form.choice("voice"))
    audio = None
    if upload is not None:
        audio = await decode_audio(upload, ASR_SAMPLE_RATE, service.settings.max_audio_seconds)
    turn = await service.pipeline.request(
        audio=audio,
        text=text,
        persona=persona.name,
        session_id=form.text("session_id"),
        video_format_name=form.text("video_format"),
        received=received,
        owner=caller.key,
        voice=persona.voice,
        voice_note=voice_note,
    )
    return service, turn


async def conversation(request: Request[AppState]) -> JSONResponse:
    """The turn's summary, with the URLs of its MP4 and WAV, once the turn is complete."""
    service, turn = await _turn_request(request)
    with service.results.reserve(owner=turn.session.owner) as folder:
        result = await service.turns.run_request(turn, folder, disconnect=request.receive)
    return JSONResponse(_answer(request, result))


async def conversation_stream(request: Request[AppState]) -> EventSourceResponse:
    """The turn as Server-Sent Events: ``queued``, ``started``, ``transcript``, ``reply`` (text
    deltas), ``segment`` (each playable piece of video, in order), then ``done`` or ``error``."""
    service, turn = await _turn_request(request)
    # A full queue is a 503 with Retry-After, not a stream that says so: the place is taken now, before
    # the 200 goes out, so that streams arriving together cannot all pass the check.
    admission = service.queue.admit()
    turn_id = new_turn_id()
    events = _Events()

    async def run() -> TurnResult:
        try:
            with service.results.reserve(turn_id, owner=turn.session.owner) as folder:
                return await service.turns.run_request(
                    turn, folder, events=events.put, keep_segments=True, admission=admission
                )
        finally:
            admission.release()  # the turn never reached the queue (the client left at once)

    task = asyncio.ensure_future(run())
    return EventSourceResponse(
        _stream(request, service, turn_id, task, events),
        ping=PING_S,
        send_timeout=SEND_TIMEOUT_S,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},  # nginx: pass events on at once
        shutdown_grace_period=service.settings.shutdown_grace_seconds,
    )


class _Events:
    """The events of a streamed turn on their way to the client: at most EVENTS_AHEAD unread (the turn
    then waits for the client), none kept once the client has gone (the turn must not wait for nobody)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(EVENTS_AHEAD)
        self.read = True

    async def put(self, event: str, data: dict[str, Any]) -> None:
        if self.read:
            await self.queue.put((event, data))

    def close(self) -> None:
        self.read = False
        while not self.queue.empty():
            self.queue.get_nowait()  # wakes a turn waiting to put one


async def _stream(
    request: Request[AppState],
    service: Service,
    turn_id: str,
    task: asyncio.Future[TurnResult],
    events: _Events,
) -> AsyncIterator[ServerSentEvent]:
    try:
        while True:
            getter = asyncio.ensure_future(events.queue.get())
            either: list[asyncio.Future[Any]] = [getter, task]
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
            if not getter.done():
                getter.cancel()
                await asyncio.wait([getter])
            if getter.done() and not getter.cancelled():
                yield _event(request, turn_id, *getter.result())
            elif task.done():
                break
        while not events.queue.empty():
            yield _event(request, turn_id, *events.queue.get_nowait())
        yield _last_event(request, task)
    finally:
        events.close()
        if not task.done():  # the client went away (or stopped reading): stop the turn with it
            with anyio.CancelScope(shield=True):
                try:
                    await service.turns.stop(turn_id, DISCONNECTED)
                except NotFoundError:
                    task.cancel()  # not registered yet: still reading its input
                await asyncio.wait([task])
        if task.done() and not task.cancelled():
            task.exception()  # how it ended is in the events (or nobody is left to tell): not a stray warning


def _event(request: Request[AppState], turn_id: str, event: str, data: dict[str, Any]) -> ServerSentEvent:
    if event == "segment":
        data = {**data, "url": segment_url(request, turn_id, data["index"])}
    return ServerSentEvent(data=json.dumps(data), event=event)


def _last_event(request: Request[AppState], task: asyncio.Future[TurnResult]) -> ServerSentEvent:
    try:
        result = task.result()
    except AvatarError as exc:
        if exc.status >= 500:
            log.error("turn failed", code=exc.code, error=exc.message)
        return ServerSentEvent(data=json.dumps(exc.as_dict()["error"]), event="error")
    except Exception:
        log.exception("turn failed")
        message = "Internal server error; quote the request id when reporting it."
        error = {"code": "internal_error", "message": message, "request_id": request.scope["state"].get("request_id")}
        return ServerSentEvent(data=json.dumps(error), event="error")
    return ServerSentEvent(data=json.dumps(_answer(request, result)), event="done")


def _answer(request: Request[AppState], result: TurnResult) -> dict[str, Any]:
    """The turn's summary with the URLs of its video and audio (null for a text-only reply)."""
    return {**result.summary(), **result_urls(request, result.id, media=result.video_path is not None)}


async def cancel(request: Request[AppState]) -> JSONResponse:
    """Stop a running or queued turn. ``?played=SECONDS`` says how much of the reply the user heard,
    which is what the conversation history keeps — also for a turn already made in full whose video the
    user stopped while it played."""
    service = request.state["service"]
    turn_id = request.path_params["turn_id"]
    if not ID_PATTERN.match(turn_id):
        raise NotFoundError("No such turn.")
    played = request.query_params.get("played")
    heard: float | None = None
    if played is not None:
        try:
            heard = float(played)
        except ValueError:
            heard = -1.0
        if not (math.isfinite(heard) and heard >= 0):
            raise InvalidRequestError(f"'played' must be a number of seconds (0 or more), not {played[:40]!r}.")
    stopped = await service.turns.stop(turn_id, "stopped by the client", heard, wait=STOP_WAIT_S)
    return JSONResponse({"id": turn_id, **stopped})
