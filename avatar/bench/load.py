"""Throughput and latency with several clients asking at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from avatar.bench.fixtures import BenchTurn
from avatar.bench.samples import TurnSample, errors
from avatar.bench.stats import spread

RunTurn = Callable[[BenchTurn], Awaitable[TurnSample]]


async def concurrent_load(
    run_turn: RunTurn, turns: Sequence[BenchTurn], clients: int, turns_per_client: int
) -> dict[str, Any]:
    """``clients`` callers each asking ``turns_per_client`` questions back to back (each starts at a
    different question, so the mix is the same at every level). Throughput counts finished turns."""
    samples: list[TurnSample] = []

    async def client(index: int) -> None:
        for k in range(turns_per_client):
            samples.append(await run_turn(turns[(index + k) % len(turns)]))

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - started
    ok = [s for s in samples if s.error is None]
    latency = spread([s.wall for s in ok])
    return {
        "clients": clients,
        "turns": len(ok),
        "failed": len(samples) - len(ok),
        "errors": errors(samples),
        "wall_s": round(wall, 3),
        "throughput_per_min": round(60 * len(ok) / wall, 3) if wall > 0 else 0.0,
        "latency": latency.as_dict() if latency else None,
    }
