"""The real service in this test process, on the models the session already loaded (``runtime``).

A server that differs from the shared one only in an app setting (API keys, the queue's size, the
slow-client guards, how long a reply may run) does not need the models loaded again: its app is the
product's ``create_app`` with a ``Runtime`` of its own settings that shares the loaded model registry,
served by uvicorn with the product's own configuration (``uvicorn_config``) on the event loop that holds
the models. What it cannot be is a server whose *models* differ (other backends, injected model faults),
or one a test stops with a signal: those stay processes (``live_server``). Its log lines go to a file of
its own, as a process's do: a context variable bound in its serving task (inherited by every task and
worker thread it starts) picks them out of the test process's.

Imported by name: pytest puts this folder on ``sys.path`` (it is not a package).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog
import uvicorn
from anyio.from_thread import BlockingPortal
from live_server import MAX_UPLOAD_MB, READY_TIMEOUT_S, Served, free_port

from avatar.config import load_settings
from avatar.logs import line_formatter
from avatar.runtime import Runtime
from avatar.server.app import create_app, uvicorn_config

SETTLED_S = 1.0  # no model work for this long after ready: live mode's idle face is drawn


SERVER_KEY = "in_process_server"  # the context variable naming the server a line comes from


@dataclass
class InProcessServer(Served):
    base_url: str
    output_dir: Path
    log_path: Path
    server: uvicorn.Server
    serving: Future[None]

    def wait_settled(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until ready and no model work has run for SETTLED_S: the idle face (drawn between requests
        once the models are ready) is done, so a test's first request does not wait behind it."""
        deadline = time.monotonic() + timeout
        idle_since: float | None = None
        while time.monotonic() < deadline:
            if self.serving.done():
                self.serving.result()  # raises what stopped it
                raise RuntimeError("the in-process server stopped during start-up")
            try:
                response = httpx.get(f"{self.base_url}/readyz", timeout=2)
            except httpx.TransportError:
                response = None
            queue = response.json().get("queue", {}) if response is not None and response.status_code == 200 else None
            if queue is not None and queue.get("running") == 0 and queue.get("waiting") == 0:
                idle_since = idle_since or time.monotonic()
                if time.monotonic() - idle_since >= SETTLED_S:
                    return
            else:
                idle_since = None
            time.sleep(0.1)
        raise RuntimeError(f"in-process server not ready and settled within {timeout} s")

    def stop(self) -> None:
        self.server.should_exit = True  # what uvicorn's own signal handler does: a graceful shutdown
        self.serving.result(timeout=60)


class _FromServer(logging.Filter):
    def __init__(self, name: str) -> None:
        super().__init__()
        self.server = name

    def filter(self, record: logging.LogRecord) -> bool:
        return structlog.contextvars.get_contextvars().get(SERVER_KEY) == self.server


def in_process(portal: BlockingPortal, runtime: Runtime, workdir: Path, **env: str) -> Iterator[InProcessServer]:
    """A ready server for a fixture (``yield from in_process(...)``), stopped afterwards; ``env`` as for
    ``live_server.serving`` (AVATAR_* settings), on the same defaults as a server process."""
    workdir.mkdir(parents=True, exist_ok=True)
    output_dir, log_path = workdir / "results", workdir / "server.log"
    environ = {"AVATAR_OUTPUT_DIR": str(output_dir), "AVATAR_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB)}
    environ |= {"AVATAR_LLM_MAX_NEW_TOKENS": "32", **env}
    settings = load_settings(environ, host="127.0.0.1", port=free_port())
    app = create_app(settings, Runtime(settings, models=runtime.registry))
    server = uvicorn.Server(uvicorn_config(settings, app))

    async def serve() -> None:
        structlog.contextvars.bind_contextvars(**{SERVER_KEY: workdir.name})
        await server.serve()

    handler = logging.FileHandler(log_path)
    handler.setFormatter(line_formatter(json=True))
    handler.addFilter(_FromServer(workdir.name))
    ours, level = logging.getLogger("avatar"), logging.getLogger("avatar").level
    ours.setLevel(logging.INFO)  # a server process logs at INFO
    logging.getLogger().addHandler(handler)
    started = InProcessServer(
        f"http://127.0.0.1:{settings.port}", output_dir, log_path, server, portal.start_task_soon(serve)
    )
    try:
        started.wait_settled()
        yield started
    finally:
        started.stop()
        logging.getLogger().removeHandler(handler)
        handler.close()
        ours.setLevel(level)
