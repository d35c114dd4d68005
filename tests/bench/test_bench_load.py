"""Concurrency accounting, and the pieces of the HTTP bench that need no server."""

from __future__ import annotations

import asyncio
import socket

from avatar.bench.fixtures import TURNS, BenchTurn
from avatar.bench.http_service import HOST, free_port, service_support
from avatar.bench.load import concurrent_load
from avatar.bench.memory import peak_rss_mb
from avatar.bench.samples import TurnSample


def test_concurrent_clients_overlap_and_are_counted() -> None:
    seen: list[str] = []
    running = [0, 0]  # now, most at once

    async def turn(t: BenchTurn) -> TurnSample:
        seen.append(t.name)
        running[0] += 1
        running[1] = max(running)
        await asyncio.sleep(0.05)
        running[0] -= 1
        if t.name == "long":
            return TurnSample(t.name, "sequential", 0.05, error="HTTP 500: boom")
        return TurnSample(t.name, "sequential", 0.05)

    level = asyncio.run(concurrent_load(turn, TURNS, clients=4, turns_per_client=1))
    assert level["turns"] + level["failed"] == 4 and level["failed"] == 1
    assert level["errors"] == ["HTTP 500: boom"]
    assert running[1] == 4  # the four ran at once, not one after another
    assert sorted(seen) == sorted(["short", "medium", "long", "short"])


def test_free_port_is_free_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind((HOST, port))


def test_service_and_memory_probes() -> None:
    assert service_support() is None  # avatar/server is in this checkout
    peak = peak_rss_mb()
    assert peak is not None and peak > 10
    assert peak_rss_mb(2**22 + 12345) is None
