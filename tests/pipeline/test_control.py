"""Stopping a turn: the stop is never lost on the way, and what the user heard of the reply is kept (whole
pieces, then the cut one up to its word under way)."""

from __future__ import annotations

import asyncio

import pytest

from avatar.pipeline.control import SpokenPiece, SpokenReply, TurnControl
from avatar.pipeline.threads import ModelCalls

REPLY = SpokenReply(
    [
        SpokenPiece("I flew the Shuttle twice,", 0.0, 2.0),
        SpokenPiece("and I would go again tomorrow.", 2.0, 4.4),
    ]
)


def test_a_stop_keeps_the_pieces_played_and_the_words_under_way() -> None:
    assert REPLY.heard(0.0) == ""
    assert REPLY.heard(0.1) == "I…"  # the first word had begun
    assert REPLY.heard(1.0) == "I flew the…"
    assert REPLY.heard(2.0) == "I flew the Shuttle twice,"
    assert REPLY.heard(2.5) == "I flew the Shuttle twice, and I…"
    assert REPLY.heard(9.0) == "I flew the Shuttle twice, and I would go again tomorrow."


def _stopped_as_a_call_returns(calls: ModelCalls, ticks: int) -> str:
    """Run a turn whose model call returns while the turn is being stopped: the stop lands ``ticks``
    turns of the event loop after the call has handed back its result. How the turn ended."""

    async def scenario() -> str:
        loop = asyncio.get_running_loop()
        accepted: list[bool] = []

        def stop_later(left: int) -> None:
            if left:
                loop.call_soon(stop_later, left - 1)
            else:
                accepted.append(task.cancel())

        def model() -> str:
            loop.call_soon_threadsafe(stop_later, ticks)
            return "token"

        async def turn() -> str:
            await calls(model)
            for _ in range(20):  # later steps of the turn, each a chance for the stop to land
                await asyncio.sleep(0)
            return "ran on"

        task = asyncio.ensure_future(turn())
        try:
            await task
        except asyncio.CancelledError:
            return "stopped"
        return "ran on after the stop" if accepted == [True] else "finished before the stop"

    return asyncio.run(scenario())


@pytest.mark.parametrize("timeout", [60.0, None], ids=["timed", "untimed"])
def test_a_stop_that_lands_as_a_model_call_returns_is_not_lost(timeout: float | None) -> None:
    # asyncio.wait_for on Python 3.11 returns the result and drops the cancellation when both arrive
    # together (ticks 2-4 here): the stopped turn would run on.
    calls = ModelCalls(None, timeout)
    assert [_stopped_as_a_call_returns(calls, ticks) for ticks in range(6)] == ["stopped"] * 6


def test_a_stopped_turn_whose_cancellation_was_lost_stops_at_its_next_step() -> None:
    control = TurnControl()
    steps: list[int] = []
    swallowed: list[int] = []

    async def scenario() -> None:
        async def turn() -> None:
            for step in range(100):
                control.enforce()
                steps.append(step)
                try:
                    await asyncio.sleep(0.01)
                except asyncio.CancelledError:
                    if not swallowed:
                        swallowed.append(step)
                        continue  # swallowed, as a library may: the turn runs on to its next step ...
                    raise

        task = asyncio.ensure_future(turn())
        control.attach(task)
        while len(steps) < 3:
            await asyncio.sleep(0.001)
        assert control.stop("test")
        with pytest.raises(asyncio.CancelledError):  # ... where it stops
            await task

    asyncio.run(scenario())
    assert swallowed and steps[-1] == swallowed[0] + 1
