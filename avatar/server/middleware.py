"""The per-request context: request id, access line, last-resort error response.

Pure ASGI rather than ``BaseHTTPMiddleware``: the endpoint runs in this coroutine's own task, so the
request id bound in structlog's context variables reaches every log line of the request, including
those from worker threads (``asyncio.to_thread`` copies the context).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from avatar.server.error_responses import internal_error, shutting_down

log = structlog.stdlib.get_logger("avatar.server.access")

REQUEST_ID_HEADER = "x-request-id"
_VALID_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# Orchestrators poll these every few seconds; their lines would drown the rest at INFO.
QUIET_PATHS = frozenset({"/healthz", "/readyz"})


def request_id_from(headers: Headers) -> str:
    """The caller's X-Request-ID when it is a sane token (it lands in logs), else a fresh one."""
    given = headers.get(REQUEST_ID_HEADER, "")
    return given if _VALID_ID.match(given) else uuid.uuid4().hex


class RequestContextMiddleware:
    """Binds ``request_id`` for the request's logs, echoes it as X-Request-ID, writes one access line,
    and turns an exception that escaped every handler into a generic 500 (traceback to the log only),
    a request cancelled at shutdown into a 503."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(Headers(scope=scope))
        scope.setdefault("state", {})["request_id"] = request_id
        status = 0
        sent_bytes = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status, sent_bytes
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            elif message["type"] == "http.response.body":
                sent_bytes += len(message.get("body", b""))
            await send(message)

        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_with_id)
            except Exception:
                log.exception("unhandled error", path=scope["path"])
                if status:
                    raise  # the response has begun; only dropping the connection is left
                await internal_error(request_id)(scope, receive, send_with_id)
            except asyncio.CancelledError:
                # uvicorn cancels what is still running when the shutdown grace period is over (the
                # turn has cleaned up by now). Say so instead of letting uvicorn answer a bare 500;
                # uvicorn does not wait on this task, so ending it normally loses nothing.
                if status:
                    raise
                log.warning("request cut off by shutdown", path=scope["path"])
                await shutting_down()(scope, receive, send_with_id)
            finally:
                quiet = scope["path"] in QUIET_PATHS
                log.log(
                    logging.DEBUG if quiet else logging.INFO,
                    "request",
                    method=scope["method"],
                    path=scope["path"],
                    status=status or 500,
                    bytes=sent_bytes,
                    duration_ms=round((time.perf_counter() - started) * 1000, 1),
                    client=scope["client"][0] if scope.get("client") else None,
                )
