"""How fast the service answers small requests (liveness, readiness, a download) while turns render."""

from __future__ import annotations

import asyncio
import time
from types import TracebackType
from typing import Any

import httpx

from avatar.bench.stats import spread

PROBE_INTERVAL_S = 0.05


class ProbeSampler:
    """Polls each URL in turn on its own connection for as long as the ``async with`` block runs.

    Every answer is timed from request to full body; an answer other than 200 is counted as a failure
    (and its time is not kept). Use ``summary()`` after the block.
    """

    def __init__(self, base_url: str, urls: dict[str, str]) -> None:
        self.base_url = base_url
        self.urls = urls  # name → path
        self.latencies: dict[str, list[float]] = {name: [] for name in urls}
        self.failures: dict[str, list[str]] = {name: [] for name in urls}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> ProbeSampler:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def _poll(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10.0) as client:
            await client.get("/healthz")  # the connection is opened once: this times the server, not TCP
            while True:
                for name, url in self.urls.items():
                    started = time.perf_counter()
                    try:
                        response = await client.get(url)
                    except httpx.HTTPError as exc:
                        self.failures[name].append(f"{type(exc).__name__}: {exc}")
                        continue
                    if response.status_code == 200:
                        self.latencies[name].append(time.perf_counter() - started)
                    else:
                        self.failures[name].append(f"HTTP {response.status_code}")
                await asyncio.sleep(PROBE_INTERVAL_S)

    def summary(self) -> dict[str, Any]:
        """Per probe: the latency spread in milliseconds, and the failures (at most five kept)."""
        out: dict[str, Any] = {}
        for name, values in self.latencies.items():
            ms = spread([1000 * v for v in values])
            out[name] = {
                "url": self.urls[name],
                "ms": ms.as_dict() if ms else None,
                "failed": len(self.failures[name]),
                "failures": self.failures[name][:5],
            }
        return out
