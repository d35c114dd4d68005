"""Slow and idle clients: deadlines for a request's head and body, a cap on open connections.

uvicorn covers part of this with its own settings, which ``serve`` uses: ``timeout_keep_alive`` closes a
connection idle *between* requests, ``h11_max_incomplete_event_size`` bounds a request head's size. It
has no deadline for the head itself: a fresh connection that sends nothing, or one byte of header a
second (slowloris), is kept forever, and its ``limit_concurrency`` answers in plain text, not in this
API's JSON. Two small pieces add what is missing:

- ``SlowClientProtocol``, a subclass of uvicorn's h11 protocol (its internals, not a public API: the
  attributes it reads are in ``_uvicorn_state``, pyproject.toml bounds uvicorn, and
  ``tests/server/test_private_uses.py`` fails when they change), plus a deadline from connecting (or from the end of
  the previous response) to a complete request head, after which the connection is closed, and a cap
  on open connections: a request on a connection past the cap is answered 503 ``busy`` (JSON,
  ``Retry-After``, ``Connection: close``), except the probes (``/healthz``, ``/readyz``, ``/metrics``),
  which are always served with their own bodies.
- ``BodyDeadlineMiddleware`` (ASGI): a request body must keep coming, at least every
  ``body_timeout`` seconds, and at a minimum average rate: after the first ``body_timeout`` seconds,
  each second must have brought ``min_rate`` bytes (Apache's mod_reqtimeout rule). A body that falls
  behind is answered 408 ``request_timeout`` and the connection closed.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from avatar.errors import BusyError
from avatar.server.error_responses import RequestTimeoutError, error_response

log = structlog.stdlib.get_logger(__name__)

REFUSAL_LOG_INTERVAL_S = 10.0  # under a flood, one warning per interval rather than one per connection
# Answered whatever the number of connections: they wait on nothing and cost what a refusal costs, and a
# client holding idle sockets must not fail a liveness probe (a restart) or a readiness probe.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


class SlowClientProtocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and a connection cap (see the module)."""

    header_timeout: ClassVar[float] = 10.0
    max_connections: ClassVar[int] = 100
    _last_refusal_log: ClassVar[float] = 0.0

    @classmethod
    def configured(cls, *, header_timeout: float, max_connections: int) -> type[SlowClientProtocol]:
        """A subclass with these limits, for ``uvicorn.Config(http=...)`` (which instantiates the class)."""
        limits = {"header_timeout": header_timeout, "max_connections": max_connections}
        return type("SlowClientProtocol", (cls,), limits)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._cycle_when_armed: object = None
        self.app = self._capped(self.app)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._arm_head_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._uvicorn_state()[0] is not self._cycle_when_armed:  # a request head arrived whole: in time
            self._disarm_head_deadline()

    def on_response_complete(self) -> None:
        before = self._uvicorn_state()[0]
        super().on_response_complete()
        cycle, transport, _ = self._uvicorn_state()
        if cycle is before and not transport.is_closing():  # no pipelined request began
            self._arm_head_deadline()

    def _uvicorn_state(self) -> tuple[object, asyncio.Transport, int]:
        """(the request cycle under way, the connection's transport, the server's open connections):
        what this class reads of H11Protocol's internals, read only here."""
        return self.cycle, self.transport, len(self.connections)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._cycle_when_armed = self._uvicorn_state()[0]
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_too_late)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_late(self) -> None:
        self._head_deadline = None
        cycle, transport, _ = self._uvicorn_state()
        if cycle is self._cycle_when_armed and not transport.is_closing():
            transport.close()  # idle, or a head trickling in: nothing to answer yet

    def _capped(self, app: Any) -> Any:
        async def capped(scope: Scope, receive: Receive, send: Send) -> None:
            if self._uvicorn_state()[2] <= self.max_connections or scope.get("path") in PROBES:
                await app(scope, receive, send)
                return
            self._log_refusal()
            refusal = BusyError(
                f"The server has more than {self.max_connections} open connections (AVATAR_MAX_CONNECTIONS); "
                "retry in a moment.",
                1,
            )
            response = error_response(refusal)
            response.headers["Connection"] = "close"
            await response(scope, receive, send)

        return capped

    def _log_refusal(self) -> None:
        now = time.monotonic()
        if now - SlowClientProtocol._last_refusal_log >= REFUSAL_LOG_INTERVAL_S:
            SlowClientProtocol._last_refusal_log = now
            log.warning("connection cap reached; refusing requests", open_connections=self._uvicorn_state()[2])


class BodyDeadlineMiddleware:
    """408 for a request body that stalls for ``body_timeout`` s or falls below ``min_rate`` bytes/s."""

    def __init__(self, app: ASGIApp, *, body_timeout: float, min_rate: int) -> None:
        self.app = app
        self.body_timeout = body_timeout
        self.min_rate = min_rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.monotonic()
        received = 0
        more = True

        async def within_deadline() -> Message:
            nonlocal received, more
            if not more:  # the body is in; what comes next is the disconnect, whenever it happens
                return await receive()
            now = time.monotonic()
            allowed = self.body_timeout + (received / self.min_rate if self.min_rate else float("inf"))
            wait = min(self.body_timeout, started + allowed - now)
            try:
                if wait <= 0:
                    raise TimeoutError
                async with asyncio.timeout(wait):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeoutError(self._too_slow(received, now - started)) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                more = bool(message.get("more_body", False))
            return message

        await self.app(scope, within_deadline, send)

    def _too_slow(self, received: int, seconds: float) -> str:
        return (
            f"The request body arrived too slowly ({received} bytes in {seconds:.0f} s); a body must keep "
            f"coming at least every {self.body_timeout:g} s and at {self.min_rate} bytes/s or more "
            "(AVATAR_BODY_TIMEOUT_SECONDS, AVATAR_MIN_UPLOAD_BYTES_PER_SECOND). Send it again."
        )
