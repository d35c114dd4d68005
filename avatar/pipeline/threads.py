"""Running blocking model calls in worker threads without losing track of them on cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

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
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                continue  # already cancelling; the thread still has to finish
        raise
