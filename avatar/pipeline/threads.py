"""Running blocking model calls in worker threads without losing track of them on cancellation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from avatar.errors import AvatarError, ModelTimeoutError
from avatar.health import ModelHealth

P = ParamSpec("P")
T = TypeVar("T")


async def run_blocking(fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` in a worker thread (the context, and so the request id, goes along).

    A thread cannot be interrupted. If the awaiting task is cancelled (a client went away, a shutdown
    ran out of time), this waits for the thread to return before re-raising: otherwise the next turn
    would use a model that is still busy, and a file the thread writes would appear after the
    cancelled turn had cleaned up.
    """
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args, **kwargs))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        await _finish_anyway(future)  # already cancelling; the thread still has to finish
        raise


class ModelCalls:
    """How a stage calls its model: in a worker thread (``run_blocking``), with a time limit, its
    outcome counted in the model's health.

    A call that fails with anything but a fault of the request (``request_fault``) counts as a failure
    of the model. Past ``timeout`` the call is left running — a thread cannot be stopped — the model
    is marked hung until the call returns, and ModelTimeoutError (504) is raised, so the turn ends and
    frees what it holds. A cancelled call is waited for up to the same limit, then left the same way.
    """

    def __init__(self, health: ModelHealth | None = None, timeout: float | None = None) -> None:
        self.health = health
        self.timeout = timeout

    async def __call__(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        health, lock = self.health, threading.Lock()
        state = {"finished": False, "abandoned": False}

        def call() -> T:
            try:
                result = fn(*args, **kwargs)
            except Exception as exc:
                if health is not None and not request_fault(exc):
                    health.failed(exc)
                raise
            finally:
                with lock:
                    state["finished"] = True
                    if state["abandoned"] and health is not None:
                        health.returned()
            if health is not None:
                health.succeeded()
            return result

        limit = self.timeout
        if limit is None:
            return await run_blocking(call)
        future = asyncio.ensure_future(asyncio.to_thread(call))
        deadline = asyncio.get_running_loop().time() + limit

        def abandon() -> bool:
            """Leave the call running past the limit: True when it still ran (its model is then hung)."""
            with lock:
                if not state["finished"]:
                    state["abandoned"] = True
                    if health is not None:
                        health.hung(limit)
            future.add_done_callback(_consume)
            return state["abandoned"]

        try:
            # Not asyncio.wait_for: on Python 3.11 it returns the result, and swallows the cancellation,
            # when a stop lands just as the call returns — the stopped turn would then run on.
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(future)
        except TimeoutError:
            if not abandon():  # it finished just as the limit passed
                return await future
            kind = health.kind if health is not None else "model"
            raise ModelTimeoutError(
                f"The {kind} model did not answer within {limit:g} s (AVATAR_STAGE_TIMEOUT_SECONDS); "
                "the server reports it on /readyz until it recovers."
            ) from None
        except asyncio.CancelledError:
            # A stopped turn waits for its call as long as the call may take, not for a hung model.
            if not await _finish_anyway(future, deadline):
                abandon()
            raise


def request_fault(exc: BaseException) -> bool:
    """Whether a model call failed because of what the request gave it, which is that request's error and
    never the model's: one of our own 4xx errors, or text the model cannot even encode (a lone surrogate
    that slipped past the checks). Counting these would let one client mark a model unhealthy at will."""
    return (isinstance(exc, AvatarError) and exc.status < 500) or isinstance(exc, UnicodeEncodeError)


async def _finish_anyway(future: asyncio.Future[T], deadline: float | None = None) -> bool:
    """Wait for a thread's call to return even while being cancelled (see ``run_blocking``), until
    ``deadline`` (the loop's clock) if given. Whether it returned."""
    loop = asyncio.get_running_loop()
    while not future.done():
        left = None if deadline is None else deadline - loop.time()
        if left is not None and left <= 0:
            return False
        try:
            await asyncio.wait([future], timeout=left)
        except asyncio.CancelledError:
            continue
    return True


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()  # an abandoned call's late error is in the model's health, not lost as a warning
