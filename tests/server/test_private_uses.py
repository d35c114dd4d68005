"""The private parts of Starlette and uvicorn we rely on, each used in one function, checked here in
milliseconds so that an upgrade that changes them fails this file rather than a user's request.

pyproject.toml bounds both libraries; raising a bound means running this file against the new release.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable
from uvicorn.server import ServerState

from avatar.server.downloads import starlette_judges_range
from avatar.server.limits import SlowClientProtocol


def _file(tmp_path: Path) -> tuple[FileResponse, int]:
    path = tmp_path / "reply.mp4"
    path.write_bytes(b"x" * 1000)
    return FileResponse(path, stat_result=path.stat()), 1000


def test_starlette_judges_a_range_as_its_file_response_will(tmp_path: Path) -> None:
    response, size = _file(tmp_path)
    starlette_judges_range(response, "bytes=0-99", None, size)  # a good range: nothing to say
    starlette_judges_range(response, "bytes=0-99,200-299", None, size)
    with pytest.raises(MalformedRangeHeader):
        starlette_judges_range(response, "bytes=abc", None, size)
    with pytest.raises(RangeNotSatisfiable):
        starlette_judges_range(response, "bytes=5000-", None, size)
    # If-Range naming another version of the file: the range is moot, the whole file goes.
    starlette_judges_range(response, "bytes=5000-", '"some-other-etag"', size)
    with pytest.raises(RangeNotSatisfiable):  # ... while the file's own ETag keeps it
        starlette_judges_range(response, "bytes=5000-", response.headers["etag"], size)


class Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def _protocol(header_timeout: float) -> tuple[SlowClientProtocol, ServerState]:
    config = uvicorn.Config(_app, lifespan="off", log_config=None)
    config.load()
    state = ServerState()
    kind = SlowClientProtocol.configured(header_timeout=header_timeout, max_connections=10)
    return kind(config=config, server_state=state, app_state={}), state


def test_uvicorn_protocol_internals_the_head_deadline_reads() -> None:
    async def scenario() -> tuple[Transport, Transport, object, int]:
        idle, idle_state = _protocol(header_timeout=0.05)
        silent = Transport()
        idle.connection_made(silent)
        cycle, transport, connections = idle._uvicorn_state()
        assert (cycle, transport, connections) == (None, silent, 1)  # no request yet; this connection open
        assert idle_state.connections == {idle}
        await asyncio.sleep(0.15)  # no head within the deadline: closed

        busy, _ = _protocol(header_timeout=0.05)
        talking = Transport()
        busy.connection_made(talking)
        busy.data_received(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")  # a whole head in time
        started = busy._uvicorn_state()[0]
        await asyncio.sleep(0.15)
        return silent, talking, started, len(idle_state.connections)

    silent, talking, started, _ = asyncio.run(scenario())
    assert silent.closed
    assert started is not None  # uvicorn began a request cycle for the head ...
    assert talking.written.startswith(b"HTTP/1.1 204")  # ... which was answered, not cut off ...
    assert talking.closed  # ... and the idle connection after it had the deadline again
