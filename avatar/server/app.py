"""The Starlette app factory, its lifespan, and ``serve``: one uvicorn process running it."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from types import FrameType

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from avatar.backends import torch_thread
from avatar.config import Settings
from avatar.personas import CreatedPersonas
from avatar.pipeline.queue import ModelQueue
from avatar.runtime import Runtime
from avatar.server.error_responses import HANDLERS
from avatar.server.limits import BodyDeadlineMiddleware, SlowClientProtocol
from avatar.server.live.hub import LiveHub, LiveParts
from avatar.server.metrics import Metrics, MetricsMiddleware
from avatar.server.middleware import RequestContextMiddleware
from avatar.server.results import ResultStore
from avatar.server.routes import ROUTES
from avatar.server.security import ApiKeyMiddleware, OriginCheckMiddleware, load_admin_keys, load_api_keys
from avatar.server.service import AppState, Service
from avatar.server.turns import Turns

log = structlog.stdlib.get_logger(__name__)

# Response headers a page on an allowed origin may read (CORS hides all but a few by default).
EXPOSED_HEADERS = ("X-Request-ID", "Retry-After", "X-Audio-Seconds", "X-Result-ID", "Content-Location", "Content-Range")
RELEASE_WAIT_S = 60.0  # at shutdown, the longest wait for a cancelled turn's model call to return
WORKER_NICENESS = 10  # added to the nice value of worker threads (higher: less CPU when contended)


def create_app(settings: Settings, runtime: Runtime | None = None) -> Starlette:
    """The service as an ASGI app. Building it is cheap (a wrong setting fails here); the models load
    in the background once the app starts, so the port answers at once."""
    runtime = runtime or Runtime(settings)
    results = ResultStore(
        settings.output_dir,
        settings.result_ttl_seconds,
        replica=settings.replica,
        max_bytes=int(settings.max_output_mb * 2**20),
        min_free_bytes=int(settings.min_free_disk_mb * 2**20),
    )
    queue, metrics = ModelQueue(settings.max_queued_requests), Metrics()
    # The pipeline is read when a turn runs (once the models are ready), not now.
    turns = Turns(queue, metrics, lambda: service.pipeline, timeout_s=settings.turn_timeout_seconds)
    service = Service(settings, runtime, results, queue, turns, metrics)
    api_keys = load_api_keys(settings)  # a bad key file stops start-up here

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[AppState]:
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(thread_name_prefix="avatar-worker", initializer=lower_thread_priority)
        )
        torch_thread.submit(lower_thread_priority)  # queued before any model loads there
        service.results.open()
        async with runtime:  # the models load in the background; leaving releases them
            reporter = asyncio.create_task(service.report_start(), name="report-start")
            checker = asyncio.create_task(_check_health_forever(service), name="check-health")
            sweeper = asyncio.create_task(
                _sweep_forever(service.results, runtime.personas.created), name="sweep-results"
            )
            live = LiveHub(
                LiveParts(
                    settings=settings,
                    pipeline=lambda: service.pipeline,
                    persona=service.persona,
                    queue=queue,
                    turns=turns,
                    ready=runtime.ready,
                    count=metrics.live_sessions.set,
                )
            )
            live_prepare = asyncio.create_task(live.prepare(), name="live-prepare")
            try:
                yield {"service": service, "live": live}
            finally:
                # uvicorn has let in-flight requests finish, or cancelled them after the grace period;
                # live sessions are not requests: close them. A cancelled turn still finishes its
                # running model call, so wait for the models.
                reporter.cancel()
                checker.cancel()
                sweeper.cancel()
                live_prepare.cancel()
                await live.close()
                if not await service.queue.close(RELEASE_WAIT_S):  # nothing may use the models after this
                    log.warning("a model call is still running; releasing the models regardless")
        log.info("models released")

    return Starlette(
        routes=ROUTES,
        middleware=_middleware(settings, service, api_keys),
        exception_handlers=HANDLERS,
        lifespan=lifespan,
    )


def _middleware(settings: Settings, service: Service, api_keys: tuple[str, ...]) -> list[Middleware]:
    """Outermost first: request id and access line; metrics (they see every answer, refusals too);
    slow bodies; CORS (preflights are answered before any key is asked for, and refusals carry CORS
    headers so a page can read them); foreign origins; API keys."""
    stack = [
        Middleware(RequestContextMiddleware),
        Middleware(MetricsMiddleware, metrics=service.metrics, routes=ROUTES),
        Middleware(
            BodyDeadlineMiddleware,
            body_timeout=settings.body_timeout_seconds,
            min_rate=settings.min_upload_bytes_per_second,
        ),
    ]
    origins = settings.cors_origin_list
    if origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(origins),
                allow_methods=["GET", "HEAD", "POST", "DELETE"],
                allow_headers=["Authorization", "Content-Type", "Range", "X-Request-ID"],
                expose_headers=list(EXPOSED_HEADERS),
                max_age=600,
            )
        )
    stack.append(Middleware(OriginCheckMiddleware, allowed=origins, public_url=settings.public_url))
    stack.append(Middleware(ApiKeyMiddleware, keys=api_keys, admin_keys=load_admin_keys(settings)))
    return stack


async def _check_health_forever(service: Service) -> None:
    """Call a model that keeps failing again every so often (its warm-up), in the model queue, so that
    readiness comes back by itself once it works."""
    while True:
        await asyncio.sleep(service.settings.health_check_seconds)
        await service.check_health()


async def _sweep_forever(results: ResultStore, personas: CreatedPersonas | None) -> None:
    """Expire results (and created personas) every so often, and at once when a new result takes them
    past the disk quota. Every replica sweeps: removing twice is harmless."""
    interval = min(60.0, max(1.0, results.ttl / 4))
    wake = asyncio.Event()
    loop = asyncio.get_running_loop()

    def wake_up() -> None:  # a result may be published from a worker thread too
        loop.call_soon_threadsafe(wake.set)

    results.wake_sweeper = wake_up
    while True:
        wake.clear()
        await asyncio.to_thread(results.sweep)
        if personas is not None:
            await asyncio.to_thread(personas.sweep)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(interval):  # not wait_for: it can swallow the shutdown's cancellation
                await wake.wait()


def lower_thread_priority() -> None:
    """Run the calling worker thread (and the threads it starts: torch's OpenMP team) at a lower CPU
    priority than the event loop. With every core busy on a turn, the loop thread would otherwise
    wait its turn on the CPU for a few hundred milliseconds, and so would /healthz."""
    if sys.platform != "linux":  # per-thread nice values are a Linux feature
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WORKER_NICENESS)
    except OSError:
        log.warning("cannot lower worker thread priority; probes may be slow during turns")


def serve(settings: Settings) -> None:
    """Run the service in this process until SIGTERM or Ctrl+C.

    On SIGTERM uvicorn stops accepting connections, lets in-flight requests finish for up to
    ``shutdown_grace_seconds``, then the lifespan releases the models; the process then exits 0.
    """
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; by then the work
    # is done, and a SIGTERM is how an orchestrator says "stop", so exit 0 rather than die of it.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.Server(uvicorn_config(settings, create_app(settings))).run()


def uvicorn_config(settings: Settings, app: Starlette) -> uvicorn.Config:
    """How uvicorn serves the app: the address, the graceful shutdown and the slow-client guards."""
    proxies = list(settings.trusted_proxy_list)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        lifespan="on",
        log_config=None,  # keep our structlog set-up; uvicorn's loggers propagate to it
        access_log=False,  # the request middleware writes one line per request, with its id
        server_header=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
        # Slow and idle clients (limits.py): head deadline and connection cap, idle keep-alive, head size.
        http=SlowClientProtocol.configured(
            header_timeout=settings.header_timeout_seconds, max_connections=settings.max_connections
        ),
        timeout_keep_alive=settings.keep_alive_seconds,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        # X-Forwarded-For/-Proto are believed only from the configured proxies (uvicorn would trust
        # 127.0.0.1 by default); the Host header never makes a URL (urls.py).
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
    )


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
