"""The request middleware in process, without models: request ids in worker threads, the last-resort 500."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
from collections.abc import Iterator
from unittest.mock import ANY

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from avatar.logs import configure_logging
from avatar.server.error_responses import HANDLERS
from avatar.server.middleware import RequestContextMiddleware


@contextlib.contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """The process's log lines as JSON, for the duration of the block."""
    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("INFO", json=True, stream=out)
    try:
        yield out
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def call_in_process(app: Starlette, request_id: str) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.get("/", headers={"X-Request-ID": request_id})

    return asyncio.run(call())


def test_request_id_reaches_worker_thread_logs() -> None:
    """In process, on the middleware alone: a line logged from a worker thread carries the id."""

    async def endpoint(request: Request) -> PlainTextResponse:
        await asyncio.to_thread(logging.getLogger("worker").warning, "from a thread")
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/", endpoint)], middleware=[Middleware(RequestContextMiddleware)])
    with captured_logs() as out:
        response = call_in_process(app, "thread-check")
    assert response.headers["x-request-id"] == "thread-check"
    by_event = {line["event"]: line for line in map(json.loads, out.getvalue().splitlines())}
    assert by_event["from a thread"]["request_id"] == "thread-check"
    assert by_event["request"]["request_id"] == "thread-check"


def test_a_bug_is_a_generic_500_and_its_traceback_goes_to_the_log() -> None:
    async def broken(request: Request) -> PlainTextResponse:
        raise RuntimeError("secret internals")

    app = Starlette(
        routes=[Route("/", broken)], middleware=[Middleware(RequestContextMiddleware)], exception_handlers=HANDLERS
    )
    with captured_logs() as out:
        response = call_in_process(app, "bug-1")
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": ANY, "request_id": "bug-1"}}
    assert response.headers["x-request-id"] == "bug-1"
    assert "secret" not in response.text and "Traceback" not in response.text
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    failure = next(line for line in lines if line["event"] == "unhandled error")
    assert failure["request_id"] == "bug-1" and "secret internals" in failure["exception"]
