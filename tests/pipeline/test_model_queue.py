"""The model queue on its own: one piece of work at a time, positions, refusals past the limit, and
work that goes away while it waits. Plain coroutines stand in for model calls; stepped by loop ticks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import pytest

from avatar.errors import BusyError
from avatar.pipeline.queue import ModelQueue


async def _ticks(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_work_runs_one_at_a_time_in_order_and_hears_its_place() -> None:
    async def scenario() -> tuple[list[str], list[int], ModelQueue]:
        queue = ModelQueue(limit=5)
        gate = asyncio.Event()
        order: list[str] = []
        places: list[int] = []

        async def work(name: str) -> str:
            order.append(f"{name} starts")
            await gate.wait()
            order.append(f"{name} ends")
            return name

        async def heard(ahead: int) -> None:
            places.append(ahead)

        first = asyncio.ensure_future(queue.run(lambda: work("a"), queued=heard))
        second = asyncio.ensure_future(queue.run(lambda: work("b"), queued=heard))
        await _ticks()
        assert queue.depth() == (1, 1) and not queue.idle.is_set()
        gate.set()
        assert await asyncio.gather(first, second) == ["a", "b"]
        return order, places, queue

    order, places, queue = asyncio.run(scenario())
    assert order == ["a starts", "a ends", "b starts", "b ends"]  # never two at once
    assert places == [0, 1]
    assert queue.depth() == (0, 0) and queue.idle.is_set()
    assert len(queue.recent_seconds) == 2


def test_past_the_limit_work_is_refused_at_once_with_retry_after() -> None:
    async def scenario() -> BusyError:
        queue = ModelQueue(limit=1)
        queue.recent_seconds.append(4.0)  # earlier work took 4 s each
        gate = asyncio.Event()
        running = asyncio.ensure_future(queue.run(gate.wait))
        waiting = asyncio.ensure_future(queue.run(gate.wait))
        await _ticks()
        assert queue.saturated
        with pytest.raises(BusyError) as refused:
            await queue.run(gate.wait)
        gate.set()
        await asyncio.gather(running, waiting)
        assert not queue.saturated
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.status == 503 and refused.retry_after_seconds == 8  # two ahead × 4 s
    assert "AVATAR_MAX_QUEUED_REQUESTS=1" in refused.message


def test_work_dropped_while_it_waits_leaves_its_place() -> None:
    async def scenario() -> ModelQueue:
        queue = ModelQueue(limit=2)
        gate = asyncio.Event()
        running = asyncio.ensure_future(queue.run(gate.wait))
        waiting = asyncio.ensure_future(queue.run(gate.wait))
        await _ticks()
        assert queue.waiting == 1
        waiting.cancel()
        await asyncio.wait([waiting])
        assert queue.waiting == 0
        gate.set()
        await running
        return queue

    queue = asyncio.run(scenario())
    assert queue.depth() == (0, 0) and queue.idle.is_set()


def test_a_guard_drops_the_work_when_its_caller_goes() -> None:
    async def scenario() -> tuple[bool, ModelQueue]:
        queue = ModelQueue(limit=2)
        gone = asyncio.Event()
        started = asyncio.Event()

        async def until_gone(work: Awaitable[None]) -> None:
            task = asyncio.ensure_future(work)
            await gone.wait()
            task.cancel()
            await asyncio.wait([task])

        async def forever() -> None:
            started.set()
            await asyncio.Event().wait()

        run = asyncio.ensure_future(queue.run(forever, guard=until_gone))
        await started.wait()
        gone.set()
        await run
        return queue.lock.locked(), queue

    locked, queue = asyncio.run(scenario())
    assert not locked and queue.depth() == (0, 0)


def test_closing_takes_the_models_for_good_after_the_running_work() -> None:
    async def scenario() -> tuple[bool, bool]:
        queue = ModelQueue(limit=1)
        gate = asyncio.Event()
        running = asyncio.ensure_future(queue.run(gate.wait))
        await _ticks()
        too_soon = await queue.close(timeout=0.01)
        gate.set()
        await running
        return too_soon, await queue.close(timeout=1)

    too_soon, closed = asyncio.run(scenario())
    assert (too_soon, closed) == (False, True)


def test_a_place_taken_before_the_work_runs_counts_at_once_and_is_given_back_if_never_used() -> None:
    async def scenario() -> ModelQueue:
        queue = ModelQueue(limit=1)
        gate = asyncio.Event()
        running = asyncio.ensure_future(queue.run(gate.wait))
        await _ticks()
        # Two streams answer at once: the first takes the one free place before its work has run, so
        # the second is refused then (before its 200), not later inside its stream.
        first = queue.admit()
        with pytest.raises(BusyError):
            queue.admit()
        assert queue.depth() == (1, 1) and first.ahead == 1
        waiting = asyncio.ensure_future(queue.run(gate.wait, admission=first))
        await _ticks()
        assert queue.depth() == (1, 1)  # the place is not counted twice
        gate.set()
        await asyncio.gather(running, waiting)
        assert queue.depth() == (0, 0) and queue.idle.is_set()
        unused = queue.admit()  # a stream whose client left before its turn was queued
        assert queue.depth() == (0, 1)
        unused.release()
        unused.release()
        assert queue.depth() == (0, 0) and queue.idle.is_set()
        return queue

    asyncio.run(scenario())
