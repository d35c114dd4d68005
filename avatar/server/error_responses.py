"""Exception handlers: every error leaves as ``{"error": {"code", "message"}}`` with a fitting status.

Typed errors (``AvatarError``) carry their own status and code. Starlette's HTTP errors (unknown route,
wrong method) get the same shape. Anything else is a bug: the request middleware logs the traceback
and answers with ``internal_error``, a generic 500 naming the request id; no trace reaches a client.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from avatar.errors import AvatarError

log = structlog.stdlib.get_logger(__name__)

CLIENT_CLOSED_REQUEST = 499  # nginx's code for "the client went away"; nobody receives it, the log does


class MalformedRequestError(AvatarError):
    """The request body is not the well-formed form or JSON it claims to be."""

    code = "malformed_request"
    status = 400


class UnauthorizedError(AvatarError):
    """No API key, or not one of the configured ones."""

    code = "unauthorized"
    status = 401

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="avatar"'}


class ForbiddenOriginError(AvatarError):
    """A browser page from another origin tried to change something (cross-site request forgery)."""

    code = "forbidden_origin"
    status = 403


class RequestTimeoutError(AvatarError):
    """The request body arrived too slowly; the connection is closed after the answer."""

    code = "request_timeout"
    status = 408

    @property
    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}


class RangeNotSatisfiableError(AvatarError):
    code = "range_not_satisfiable"
    status = 416

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size

    @property
    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}"}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def error_response(exc: AvatarError) -> JSONResponse:
    """The JSON answer for a typed error (for middleware, which runs outside the exception handlers)."""
    return JSONResponse(exc.as_dict(), status_code=exc.status, headers=exc.headers)


async def avatar_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AvatarError)
    if exc.status >= 500:
        log.error("request failed", code=exc.code, error=exc.message)
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    return JSONResponse(error_body(code, exc.detail), status_code=exc.status_code, headers=exc.headers)


async def client_disconnect(request: Request, exc: Exception) -> Response:
    return Response(status_code=CLIENT_CLOSED_REQUEST)


def internal_error(request_id: str) -> Response:
    """The generic 500 for a bug; the request middleware logs the traceback and sends this."""
    message = "Internal server error; quote the request id when reporting it."
    body = error_body("internal_error", message, request_id=request_id)
    return JSONResponse(body, status_code=500, headers={"X-Request-ID": request_id})


def shutting_down() -> Response:
    """For a request still running when the shutdown grace period ran out."""
    message = "The server is shutting down; send the request again."
    return JSONResponse(error_body("shutting_down", message), status_code=503, headers={"Retry-After": "5"})


HANDLERS = {
    AvatarError: avatar_error,
    HTTPException: http_error,
    ClientDisconnect: client_disconnect,
}
