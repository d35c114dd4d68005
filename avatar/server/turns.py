"""Turns the service is running, whatever their transport: queued for the models, stopped on request.

Every conversation turn (a whole one, a streamed one, a live one) goes through ``Turns.run``: it waits
its place in the model queue, runs its work under the turn deadline (``AVATAR_TURN_TIMEOUT_SECONDS``),
and can be stopped from outside while it does: by ``DELETE`` (``Turns.stop``), by the client
disconnecting, by the live session's barge-in, or by a newer turn of the same session. A stopped turn
releases the models within one token or one chunk of frames and leaves no files. Its timings feed the
latency metrics.

This module knows the model queue, the pipeline (only to trim a finished turn's history) and a
metrics sink; the app hands it those, and nothing here points back at the service.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import structlog
from starlette.requests import ClientDisconnect
from starlette.types import Receive

from avatar.errors import NotFoundError, TurnCancelledError, TurnTimeoutError
from avatar.pipeline import Pipeline, TurnResult
from avatar.pipeline.control import TurnControl
from avatar.pipeline.pipeline import TurnRequest
from avatar.pipeline.queue import Admission, ModelQueue, Queued
from avatar.pipeline.reply import TurnEvents

log = structlog.stdlib.get_logger(__name__)

T = TypeVar("T")

BARGE_IN = "interrupted by a newer turn of the same session"
DISCONNECTED = "the client disconnected"
TIMED_OUT = "it ran past AVATAR_TURN_TIMEOUT_SECONDS"
FINISHED_KEPT = 256  # finished turns whose reply may still be stopped while it plays (DELETE ?played=)


class TurnMetrics(Protocol):
    """Where finished turns' timings go (``Metrics``)."""

    def observe_turn(self, timings: Mapping[str, float]) -> None: ...


@dataclass
class RunningTurn:
    id: str
    session_id: str
    control: TurnControl
    task: asyncio.Future[Any]


class Turns:
    """The running (and queued) turns, by id and by session."""

    def __init__(
        self, queue: ModelQueue, metrics: TurnMetrics, pipeline: Callable[[], Pipeline], *, timeout_s: float
    ) -> None:
        self.queue = queue
        self.metrics = metrics
        self.pipeline = pipeline  # the ready pipeline (NotReadyError while it is not)
        self.timeout_s = timeout_s
        self._running: dict[str, RunningTurn] = {}
        self._by_session: dict[str, str] = {}
        # Turns made in full whose video the client may still be playing: stopping one with ``played``
        # trims the history to what was heard (the newest first out past FINISHED_KEPT).
        self._finished: OrderedDict[str, TurnResult] = OrderedDict()

    def __len__(self) -> int:
        return len(self._running)

    async def run(
        self,
        turn_id: str,
        session_id: str,
        work: Callable[[], Awaitable[T]],
        *,
        control: TurnControl | None = None,
        queued: Queued | None = None,
        disconnect: Receive | None = None,
        admission: Admission | None = None,
    ) -> T:
        """Queue for the models and await ``work`` holding them, for at most the turn deadline.

        A newer turn of ``session_id`` stops this one (barge-in), and so does ``control.stop`` (or
        ``Turns.stop``): then TurnCancelledError (409); past the deadline, TurnTimeoutError (504); with
        ``disconnect`` (the request's ASGI receive), ClientDisconnect once the client has gone.
        ``admission``: a place in the queue taken beforehand (``ModelQueue.admit``).
        """
        control = control or TurnControl()
        limit = self.timeout_s

        async def deadlined() -> T:
            deadline = asyncio.get_running_loop().call_later(limit, control.stop, TIMED_OUT)
            try:
                return await work()
            finally:
                deadline.cancel()

        task = asyncio.ensure_future(self.queue.run(deadlined, queued=queued, admission=admission))
        control.attach(task)
        watcher = asyncio.ensure_future(_stop_on_disconnect(disconnect, control)) if disconnect else None
        self._register(RunningTurn(turn_id, session_id, control, task))
        try:
            return await _outcome(task, control)
        finally:
            if watcher is not None:
                watcher.cancel()
            if not task.done():  # the caller itself was cancelled (shutdown): stop the turn with it
                control.stop("the request was cancelled")
                await asyncio.wait([task])
            self._unregister(turn_id, session_id)

    async def run_request(
        self,
        request: TurnRequest,
        folder: Path,
        *,
        events: TurnEvents | None = None,
        disconnect: Receive | None = None,
        keep_segments: bool = False,
        admission: Admission | None = None,
    ) -> TurnResult:
        """An HTTP turn: ``request`` run by the pipeline into ``folder`` (whose name is the turn id), its
        events (``queued``, ``started``, then the pipeline's) to ``events``."""
        turn_id, session_id = folder.name, request.session.id
        emit = events or _silent
        control = TurnControl()

        async def queued(ahead: int) -> None:
            await emit(
                "queued",
                {"id": turn_id, "session_id": session_id, "persona": request.persona.name, "position": ahead},
            )

        async def work() -> TurnResult:
            await emit("started", {"id": turn_id})
            return await self.pipeline().run_request(
                request, folder, events=events, control=control, keep_segments=keep_segments
            )

        result = await self.run(
            turn_id, session_id, work, control=control, queued=queued, disconnect=disconnect, admission=admission
        )
        self.observe(result.timings)
        if result.recorded:
            self._finished[turn_id] = result
            while len(self._finished) > FINISHED_KEPT:
                self._finished.popitem(last=False)
        return result

    def observe(self, timings: Mapping[str, float]) -> None:
        """A finished turn's seconds per stage, ``first_frame`` and ``total``, into the latency metrics."""
        self.metrics.observe_turn(timings)

    async def stop(
        self, turn_id: str, reason: str, heard_seconds: float | None = None, *, wait: float = 0
    ) -> dict[str, str]:
        """Stop a running or queued turn, waiting up to ``wait`` seconds for it to let go of the models:
        ``{"status": "cancelled"}``. A turn that was made in full but whose reply the user stopped after
        ``heard_seconds`` of it keeps only that much in the history: ``{"status": "finished", "heard"}``.
        NotFoundError when there is no such turn (or nothing left to stop)."""
        turn = self._running.get(turn_id)
        if turn is None or not turn.control.stop(reason, heard_seconds):
            finished = self._finished.pop(turn_id, None) if heard_seconds is not None else None
            heard = None
            if finished is not None and heard_seconds is not None:
                heard = await self.pipeline().keep_heard(finished, heard_seconds)
            if heard is None:
                raise NotFoundError(f"No running turn {turn_id[:40]!r}: it has finished, or it never existed here.")
            return {"status": "finished", "heard": heard}
        log.info("turn stopped", turn_id=turn_id, reason=reason, heard_s=heard_seconds)
        if wait > 0:
            await asyncio.wait([turn.task], timeout=wait)
        return {"status": "cancelled"}

    def _register(self, turn: RunningTurn) -> None:
        previous = self._running.get(self._by_session.get(turn.session_id, ""))
        if previous is not None and previous.control.stop(BARGE_IN):
            log.info("turn interrupted", turn_id=previous.id, by=turn.id)
        self._running[turn.id] = turn
        self._by_session[turn.session_id] = turn.id

    def _unregister(self, turn_id: str, session_id: str) -> None:
        self._running.pop(turn_id, None)
        if self._by_session.get(session_id) == turn_id:
            del self._by_session[session_id]


async def _outcome(task: asyncio.Future[T], control: TurnControl) -> T:
    """The turn's result; a stop by ``control`` becomes TurnCancelledError, while a cancellation of
    the awaiting request itself stays a cancellation."""
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if control.stopped and task.done() and not (current is not None and current.cancelling()):
            if control.reason == DISCONNECTED:
                raise ClientDisconnect() from None
            if control.reason == TIMED_OUT:
                raise TurnTimeoutError(
                    "The turn took longer than AVATAR_TURN_TIMEOUT_SECONDS and was stopped; try a shorter question."
                ) from None
            raise TurnCancelledError(f"The turn was stopped: {control.reason}.") from None
        raise


async def _stop_on_disconnect(receive: Receive, control: TurnControl) -> None:
    """Call after the request body has been read: the next ASGI message is then the disconnect."""
    while (await receive())["type"] != "http.disconnect":
        pass
    control.stop(DISCONNECTED)


async def _silent(event: str, data: dict[str, Any]) -> None:
    return None
