"""What the running service holds, shared by every handler: settings, runtime, results, the model lock.

The lifespan builds one ``Service`` and yields it as the app's typed state; handlers reach it with
``request.state["service"]``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive

from avatar.config import Settings
from avatar.errors import ModelError, NotReadyError, SessionStoreUnavailableError, UnknownPersonaError
from avatar.personas import Persona
from avatar.pipeline import Pipeline
from avatar.pipeline.queue import ModelQueue
from avatar.pipeline.threads import ModelCalls
from avatar.runtime import Runtime
from avatar.server.metrics import Metrics
from avatar.server.results import ResultStore
from avatar.server.security import Caller
from avatar.server.turns import Turns

if TYPE_CHECKING:
    from avatar.server.live.hub import LiveHub

log = structlog.stdlib.get_logger(__name__)

T = TypeVar("T")

STORE_PROBE_S = 1.0  # a readiness probe waits this long for the session store (Kubernetes waits 1 s)
LOADING_RETRY_AFTER_S = 5  # the models load in seconds here, minutes for large ones on a GPU: ask often


@dataclass
class Service:
    """The running service: its runtime (models, personas, pipeline), its results and readiness."""

    settings: Settings
    runtime: Runtime
    results: ResultStore
    queue: ModelQueue
    turns: Turns
    metrics: Metrics

    def __post_init__(self) -> None:
        self.metrics.watch(self)

    @property
    def status(self) -> str:
        """``loading``, ``ready`` or ``failed``: the runtime's state."""
        return self.runtime.state

    async def readiness(self) -> dict[str, Any]:
        """The /readyz body. ``status`` is ``ready`` only when this replica can take another request now:
        models loaded and warm, the model queue not full, room on the output folder's disk and the
        session store answering; else ``loading``, ``failed``, ``unhealthy``, ``busy``, ``storage_full``
        or ``session_store_unavailable``, with a ``reason`` (a load balancer sends the traffic elsewhere
        meanwhile)."""
        status = self.status
        body: dict[str, Any] = {"status": status}
        if status == "loading":
            body["reason"] = "loading: the models are loading and warming up"
        elif status == "failed":
            body["reason"] = "failed: " + "; ".join(self.runtime.registry.failures() or [self.runtime.error or "?"])
        elif unhealthy := self.runtime.registry.unhealthy():
            body["status"] = "unhealthy"
            body["reason"] = "unhealthy: " + "; ".join(f"{kind} model {why}" for kind, why in unhealthy.items())
        elif self.queue.saturated:
            body["status"] = "busy"
            body["reason"] = (
                f"busy: the model queue is full ({self.queue.waiting} waiting, "
                f"AVATAR_MAX_QUEUED_REQUESTS={self.settings.max_queued_requests})"
            )
        if body["status"] == "ready":
            problem = self.results.storage_problem() or await self._session_store_problem()
            if problem is not None:
                body["status"], body["reason"] = problem.split(":", 1)[0], problem
                if body["status"] == "storage_full":
                    self.results.wake_sweeper()  # the oldest results go first
        body["models"] = self.runtime.registry.states()
        if self.runtime.error:
            body["error"] = self.runtime.error
        body["queue"] = {
            "running": self.queue.running,
            "waiting": self.queue.waiting,
            "limit": self.settings.max_queued_requests,
        }
        if (threads := self.thread_status()) is not None:
            body["threads"] = threads  # informs; never makes it 503
        return body

    def thread_status(self) -> dict[str, Any] | None:
        """The LLM's thread counts as the core watch set them, and why (avatar/cores.py); None without it."""
        return self.runtime.thread_status()

    async def _session_store_problem(self) -> str | None:
        """Why the session store cannot be used now (it must answer within STORE_PROBE_S), or None."""
        try:
            async with asyncio.timeout(STORE_PROBE_S):
                await self.runtime.sessions.ping()
        except SessionStoreUnavailableError as exc:
            return f"session_store_unavailable: {exc.message}"
        except TimeoutError:
            return f"session_store_unavailable: the session store did not answer within {STORE_PROBE_S:g} s"
        return None

    def require_ready(self) -> None:
        status = self.status
        if status == "loading":
            raise NotReadyError(
                "The models are still loading; retry when GET /readyz says ready.", LOADING_RETRY_AFTER_S
            )
        if status == "failed":
            raise NotReadyError("The service failed to start; GET /readyz names the model that failed.")
        hung = self.runtime.registry.hung()
        if hung:  # a model whose call never returned must not be called again meanwhile
            raise NotReadyError(
                f"The {', '.join(hung)} model is not answering; retry later (GET /readyz says when it has recovered).",
                LOADING_RETRY_AFTER_S,
            )

    # What the metrics read at each scrape (``metrics.Observed``).
    def queue_depth(self) -> tuple[int, int]:
        return self.queue.depth()

    def model_states(self) -> dict[str, str]:
        return {kind: str(state["state"]) for kind, state in self.runtime.registry.states().items()}

    def llm_tokens(self) -> int | None:
        try:
            return int(self.runtime.registry.get("llm").tokens_generated)
        except (NotReadyError, AttributeError):  # not loaded yet, or an LLM without the counter
            return None

    @property
    def pipeline(self) -> Pipeline:
        self.require_ready()
        return self.runtime.pipeline

    def persona(self, name: str | None, caller: Caller | None = None) -> Persona:
        """The named persona, or the default one (UnknownPersonaError, 404, for a name not installed, or
        for another key's created persona). Using a created persona starts its time to live again."""
        persona = self.runtime.personas.get(name or self.settings.default_persona)
        if not (caller or Caller()).owns(persona.owner):
            raise UnknownPersonaError(f"Unknown persona {persona.name!r}.")  # as if there were none
        created = self.runtime.personas.created
        if persona.expires is not None and created is not None:
            created.touch(persona.name)
        return persona

    @property
    def max_upload_bytes(self) -> int:
        return int(self.settings.max_upload_mb * 2**20)

    async def check_health(self) -> None:
        """Try each loaded model that keeps failing once more (not a hung one: its call still runs), unless
        the queue is full; the outcome is counted in its health like any call."""
        registry = self.runtime.registry
        for kind in registry.unhealthy():
            if registry.health(kind).state != "failing" or self.queue.saturated:
                continue
            calls = ModelCalls(registry.health(kind), self.settings.stage_timeout_seconds)
            model = registry.get(kind)
            try:
                await self.queue.run(lambda: calls(model.warmup))  # noqa: B023 - awaited within the iteration
            except Exception as exc:  # noqa: BLE001 - still failing: /readyz keeps saying so
                log.info("model still failing", kind=kind, error=f"{type(exc).__name__}: {exc}")
            else:
                log.info("model recovered", kind=kind)

    async def report_start(self) -> None:
        """Log when the runtime (entered by the lifespan, loading in the background) is ready or failed."""
        started = time.perf_counter()
        log.info("loading models")
        try:
            await self.runtime.ready()
        except ModelError as exc:
            log.error("start-up failed", error=exc.message, seconds=round(time.perf_counter() - started, 2))
            return
        log.info("ready", seconds=round(time.perf_counter() - started, 2))

    async def exclusive(self, request: Request[Any], work: Callable[[], Awaitable[T]]) -> T:
        """Await ``work`` in the model queue; drop it (queued or running) if the client disconnects."""
        return await self.queue.run(work, guard=lambda locked: until_disconnect(request.receive, locked))


async def until_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """``work``'s result, or ClientDisconnect once the client has gone (``work`` is then cancelled).

    Call this after the request body has been read: the next ASGI message is then the disconnect.
    A cancelled stage finishes its running model call before the cancellation lands (see
    ``run_blocking``), so by the time this returns nothing is still running or writing.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
    if task.cancelled():
        log.info("client disconnected; turn abandoned")
        raise ClientDisconnect()
    return task.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class AppState(TypedDict):
    """The lifespan's state, as handlers see it in ``request.state``."""

    service: Service
    live: LiveHub
