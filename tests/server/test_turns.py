"""``Turns`` on its own, for every transport: barge-in by session, the turn deadline, stops, a caller
that goes away, and the latency metrics. Constructed directly on a real model queue, with coroutines
standing in for a turn's model work (no models, no server), stepped by event-loop ticks."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.requests import ClientDisconnect

from avatar.errors import NotFoundError, TurnCancelledError, TurnTimeoutError
from avatar.pipeline import Pipeline
from avatar.pipeline.control import TurnControl
from avatar.pipeline.queue import ModelQueue
from avatar.server.metrics import Metrics
from avatar.server.turns import BARGE_IN, TIMED_OUT, Turns


def _no_pipeline() -> Pipeline:
    raise AssertionError("these turns never ask for the pipeline")


def _turns(timeout_s: float = 60.0, metrics: Metrics | None = None) -> Turns:
    return Turns(ModelQueue(limit=4), metrics or Metrics(), _no_pipeline, timeout_s=timeout_s)


async def _ticks(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def _forever() -> str:
    await asyncio.Event().wait()
    return "never"


def test_a_newer_turn_of_the_same_session_stops_the_older_one() -> None:
    async def scenario() -> tuple[BaseException | None, str, TurnControl, int]:
        turns = _turns()
        older_control = TurnControl()
        older = asyncio.ensure_future(turns.run("t1", "s1", _forever, control=older_control))
        await _ticks()

        async def answer() -> str:
            return "newer"

        newer = asyncio.ensure_future(turns.run("t2", "s1", answer))  # queued behind t1, which it stops
        other = asyncio.ensure_future(turns.run("t3", "s2", _forever))  # another conversation's, after it
        await asyncio.wait([older, newer])
        await _ticks()
        running = len(turns)
        other.cancel()
        await asyncio.wait([other])
        return older.exception(), newer.result(), older_control, running

    failed, newer, control, running = asyncio.run(scenario())
    assert isinstance(failed, TurnCancelledError) and failed.status == 409
    assert control.reason == BARGE_IN and newer == "newer"
    assert running == 1  # the other conversation's turn runs on


def test_a_turn_past_its_deadline_is_stopped_and_says_so() -> None:
    async def scenario() -> tuple[TurnControl, ModelQueue]:
        turns = _turns(timeout_s=0.05)
        control = TurnControl()
        with pytest.raises(TurnTimeoutError) as late:
            await turns.run("t1", "s1", _forever, control=control)
        assert late.value.status == 504 and late.value.code == "turn_timeout"
        return control, turns.queue

    control, queue = asyncio.run(scenario())
    assert control.reason == TIMED_OUT
    assert queue.depth() == (0, 0)  # the models were let go


def test_the_deadline_counts_from_when_the_turn_holds_the_models() -> None:
    async def scenario() -> str:
        turns = _turns(timeout_s=0.2)

        async def slow() -> str:
            await asyncio.sleep(0.15)
            return "first"

        async def quick() -> str:
            await asyncio.sleep(0.1)
            return "second"

        first = asyncio.ensure_future(turns.run("t1", "s1", slow))
        second = await turns.run("t2", "s2", quick)  # waits 0.15 s, runs 0.1 s: 0.25 s, within its own 0.2
        assert await first == "first"
        return second

    assert asyncio.run(scenario()) == "second"


def test_stop_by_id_stops_a_queued_turn_and_an_unknown_id_is_not_found() -> None:
    async def scenario() -> tuple[dict[str, str], BaseException | None, BaseException | None]:
        turns = _turns()
        holding = asyncio.ensure_future(turns.run("t1", "s1", _forever))
        queued = asyncio.ensure_future(turns.run("t2", "s2", _forever))
        await _ticks()
        stopped = await turns.stop("t2", "stopped by the client", wait=1)
        await asyncio.wait([queued])
        with pytest.raises(NotFoundError):
            await turns.stop("t2", "again")
        with pytest.raises(NotFoundError):
            await turns.stop("nobody", "stopped by the client")
        await turns.stop("t1", "stopped by the client", wait=1)
        await asyncio.wait([holding])
        return stopped, queued.exception(), holding.exception()

    stopped, failed, held = asyncio.run(scenario())
    assert stopped == {"status": "cancelled"}
    assert isinstance(failed, TurnCancelledError) and "stopped by the client" in failed.message
    assert isinstance(held, TurnCancelledError)


def test_a_client_that_disconnects_stops_its_turn() -> None:
    async def scenario() -> BaseException | None:
        turns = _turns()
        messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        running = asyncio.ensure_future(turns.run("t1", "s1", _forever, disconnect=messages.get))
        await _ticks()
        await messages.put({"type": "http.disconnect"})
        await asyncio.wait([running])
        return running.exception()

    assert isinstance(asyncio.run(scenario()), ClientDisconnect)


def test_observed_timings_feed_the_latency_histograms() -> None:
    metrics = Metrics()
    _turns(metrics=metrics).observe({"llm": 0.4, "first_frame": 0.6, "total": 2.0})
    text = metrics.exposition().decode()
    assert 'avatar_stage_seconds_count{stage="llm"} 1.0' in text
    assert "avatar_first_frame_seconds_count 1.0" in text
