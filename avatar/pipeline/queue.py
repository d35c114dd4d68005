"""The queue for the models: one piece of model work at a time, a bounded number waiting behind it.

The embedded models are not all thread-safe, and on two cores two turns at once would each take twice
as long, so every model call of every transport (an HTTP turn, a stage endpoint, a live reply, the
idle face drawn between requests, a health re-check) goes through one ``ModelQueue.run``. Past
``limit`` waiting, work is refused at once (BusyError, 503 with Retry-After) instead of waiting out
the client's own timeout. Nothing here knows about HTTP: a caller that can go away hands ``run`` the
wrapper that drops the work when it does.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

import structlog

from avatar.errors import BusyError
from avatar.native import release_free_memory

log = structlog.stdlib.get_logger(__name__)

T = TypeVar("T")

RECENT_REQUESTS = 20  # the pieces of work whose durations estimate Retry-After
DEFAULT_REQUEST_S = 10.0  # the estimate before any has finished
MAX_RETRY_AFTER_S = 300

Queued = Callable[[int], Awaitable[None]]
"""Hears how many pieces of work are ahead, once the work is admitted."""
Guard = Callable[[Awaitable[T]], Awaitable[T]]
"""Awaits the work, or drops it (cancelled) when whoever asked for it has gone."""


class ModelQueue:
    """The model lock, the work waiting for it, and how long that will take."""

    def __init__(self, limit: int) -> None:
        self.limit = limit  # AVATAR_MAX_QUEUED_REQUESTS
        self.lock = asyncio.Lock()
        self.waiting = 0  # admitted work that does not hold the lock yet
        self.recent_seconds: deque[float] = deque(maxlen=RECENT_REQUESTS)
        self.idle = asyncio.Event()  # set while no model work runs or waits
        self.idle.set()
        self._trimming: asyncio.Task[bool] | None = None  # handing freed memory back while idle

    @property
    def running(self) -> int:
        return int(self.lock.locked())

    @property
    def saturated(self) -> bool:
        """Whether one more piece of work would be refused: one runs and the most that may wait do."""
        occupied = self.lock.locked() or self.waiting > 0
        return occupied and self.waiting >= self.limit

    def depth(self) -> tuple[int, int]:
        """(running, waiting)."""
        return self.running, self.waiting

    def refuse_if_busy(self) -> None:
        """BusyError (503 with Retry-After) when the queue is full."""
        if self.saturated:
            retry = self.retry_after_seconds()
            log.warning("busy; request refused", waiting=self.waiting, retry_after_s=retry)
            raise BusyError(
                f"The server is busy: {self.waiting} request(s) already wait for the models "
                f"(AVATAR_MAX_QUEUED_REQUESTS={self.limit}). Retry in about {retry} s.",
                retry,
            )

    def retry_after_seconds(self) -> int:
        """About how long until the queue has drained: the work ahead × its recent mean duration."""
        mean = sum(self.recent_seconds) / len(self.recent_seconds) if self.recent_seconds else DEFAULT_REQUEST_S
        ahead = self.waiting + self.running
        return max(1, min(MAX_RETRY_AFTER_S, math.ceil(ahead * mean)))

    def admit(self) -> Admission:
        """A place in the queue, taken now (BusyError when the queue is full): a route that answers
        before its work runs (a stream's 200 goes out first) is refused, or holds its place, before it
        answers, so a burst of such requests cannot all pass the check and be refused later, mid-stream.
        ``run`` then uses it; ``Admission.release`` gives it back if the work never runs."""
        self.refuse_if_busy()
        admission = Admission(self, ahead=self.waiting + self.running)
        self.waiting += 1  # now, not when the work first runs: work arriving meanwhile must count it
        self.idle.clear()
        return admission

    async def run(
        self,
        work: Callable[[], Awaitable[T]],
        *,
        queued: Queued | None = None,
        guard: Guard[T] | None = None,
        admission: Admission | None = None,
    ) -> T:
        """Await ``work`` holding the model lock, after the work ahead of it.

        BusyError when the queue is full (unless ``admission``, a place taken by ``admit``, is given).
        ``queued`` hears how many are ahead once this is admitted; ``guard`` (e.g. "until the client
        disconnects") wraps the wait and the work alike.
        """
        place = admission or self.admit()

        async def locked() -> T:
            if queued is not None:
                await queued(place.ahead)
            async with self.lock:
                place.leave_waiting()
                started = time.perf_counter()
                result = await work()
                self.recent_seconds.append(time.perf_counter() - started)
                return result

        try:
            return await (locked() if guard is None else guard(locked()))
        finally:
            place.release()  # gone (disconnect, shutdown, cancelled) before its turn came, or done

    async def close(self, timeout: float) -> bool:
        """Take the lock for good (at shutdown: nothing may use the models after this), waiting up to
        ``timeout`` seconds for the running work. False if it was still running then."""
        try:
            async with asyncio.timeout(timeout):
                await self.lock.acquire()  # never released
        except TimeoutError:
            return False
        return True

    def _trim_when_idle(self) -> None:
        """Once the last queued work is done, say so (``idle``) and hand the memory it freed back."""
        if self.waiting or self.lock.locked():
            return
        self.idle.set()
        if self._trimming is None or self._trimming.done():
            self._trimming = asyncio.get_running_loop().create_task(asyncio.to_thread(release_free_memory))


class Admission:
    """A place taken in a ``ModelQueue``: counted as waiting until its work holds the lock, or until
    it is released (idempotent; the work never ran, or has finished)."""

    def __init__(self, queue: ModelQueue, ahead: int) -> None:
        self.queue = queue
        self.ahead = ahead
        self.waiting = True
        self.released = False

    def leave_waiting(self) -> None:
        if self.waiting:
            self.waiting = False
            self.queue.waiting -= 1

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.leave_waiting()
            self.queue._trim_when_idle()
