"""The probe sampler against a real server: answers are timed, other statuses are counted as failures."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from avatar.bench.http_service import HOST, free_port
from avatar.bench.probe_latency import ProbeSampler


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def _loading(request: Request) -> PlainTextResponse:
    return PlainTextResponse("loading", status_code=503)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = Starlette(routes=[Route("/healthz", _ok), Route("/readyz", _loading)])
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host=HOST, port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    yield f"http://{HOST}:{port}"
    server.should_exit = True
    thread.join(10)


def test_probes_are_timed_and_failures_counted(base_url: str) -> None:
    async def sample() -> dict:
        async with ProbeSampler(base_url, {"live": "/healthz", "ready": "/readyz", "gone": "/nothing"}) as sampler:
            while min(len(sampler.latencies["live"]), len(sampler.failures["gone"])) < 5:
                await asyncio.sleep(0.02)
        return sampler.summary()

    summary = asyncio.run(sample())
    live = summary["live"]
    assert live["url"] == "/healthz" and live["failed"] == 0
    assert live["ms"]["n"] >= 5 and 0 < live["ms"]["p50"] <= live["ms"]["max"]
    for name, status in (("ready", "HTTP 503"), ("gone", "HTTP 404")):
        assert summary[name]["ms"] is None  # only 200 answers are timed
        assert summary[name]["failed"] >= 5 and summary[name]["failures"][0] == status
        assert len(summary[name]["failures"]) <= 5
