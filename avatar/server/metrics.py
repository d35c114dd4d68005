"""Prometheus metrics (``GET /metrics``), from the prometheus-client library.

Cheap by construction: requests are labelled by route *template* (``/api/v1/results/{result_id}``, never
the id) and status code, stage histograms by stage name, so the number of series is fixed by the code,
not by traffic. Queue depth, model states, token count and GPU memory are read when Prometheus scrapes,
not kept up to date on every request. Each app has its own registry (tests build several apps in one
process).

The names are a contract (dashboards, and the Kubernetes autoscaler scales on ``avatar_queue_waiting``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# Routes whose requests are turns (a turn is in flight while its request is).
TURN_ROUTES = frozenset({"/api/v1/conversation", "/api/v1/conversation/stream"})
UNMATCHED = "unmatched"  # the route label of a request no route took (404s): one series, not one per path

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
STAGE_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 40.0)
FIRST_FRAME_BUCKETS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0)


class Observed(Protocol):
    """What the scrape reads from the running service."""

    def queue_depth(self) -> tuple[int, int]:
        """(running, waiting) model requests."""
        ...

    def model_states(self) -> Mapping[str, str]:
        """Model kind → its state (``ready``, ``loading``, ``failed``…)."""
        ...

    def llm_tokens(self) -> int | None:
        """Tokens the loaded LLM has generated since it loaded; None before it is ready."""
        ...

    def thread_status(self) -> Mapping[str, Any] | None:
        """The LLM's thread counts and the cores they follow (avatar/cores.py); None without the watch."""
        ...


class Metrics:
    """The service's metrics. ``Service`` holds one; the request middleware and the turn code feed it."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("avatar_requests", "HTTP requests answered.", ["route", "status"], registry=r)
        self.request_seconds = Histogram(
            "avatar_request_seconds", "HTTP request duration.", ["route"], buckets=REQUEST_BUCKETS, registry=r
        )
        self.stage_seconds = Histogram(
            "avatar_stage_seconds", "Seconds per stage of finished turns.", ["stage"], buckets=STAGE_BUCKETS, registry=r
        )
        self.first_frame_seconds = Histogram(
            "avatar_first_frame_seconds",
            "From the start of a turn to its first video frame.",
            buckets=FIRST_FRAME_BUCKETS,
            registry=r,
        )
        self.turns_in_flight = Gauge("avatar_turns_in_flight", "Turns being answered now.", registry=r)
        self.live_sessions = Gauge("avatar_live_sessions", "Open live (WebRTC) sessions.", registry=r)
        ProcessCollector(registry=r)  # process_resident_memory_bytes, CPU seconds, open fds

    def watch(self, service: Observed) -> None:
        """Read ``service``'s queue, models and LLM at each scrape."""
        self.registry.register(_ServiceCollector(service))

    def observe_turn(self, timings: Mapping[str, float]) -> None:
        """A finished turn's ``timings`` (seconds per stage, ``first_frame`` and ``total``)."""
        for stage, seconds in timings.items():
            if stage == "first_frame":
                self.first_frame_seconds.observe(seconds)
            else:
                self.stage_seconds.labels(stage).observe(seconds)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.request_seconds.labels(route).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _ServiceCollector(Collector):
    def __init__(self, service: Observed) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        running, waiting = self.service.queue_depth()
        yield GaugeMetricFamily("avatar_queue_waiting", "Model requests waiting for the models.", value=waiting)
        yield GaugeMetricFamily("avatar_queue_running", "Model requests holding the models.", value=running)
        ready = GaugeMetricFamily("avatar_model_ready", "1 when the model is loaded and warm, else 0.", labels=["kind"])
        for kind, state in self.service.model_states().items():
            ready.add_metric([kind], 1.0 if state == "ready" else 0.0)
        yield ready
        tokens = self.service.llm_tokens()
        if tokens is not None:
            yield CounterMetricFamily("avatar_llm_tokens", "Tokens the LLM has generated.", value=tokens)
        threads = self.service.thread_status()
        if threads is not None:
            yield from _thread_metrics(threads)
        yield from _gpu_memory()


def _thread_metrics(status: Mapping[str, Any]) -> Iterator[Metric]:
    counts = GaugeMetricFamily("avatar_llm_threads", "The LLM's threads now, per phase.", labels=["phase"])
    counts.add_metric(["writing"], float(status["llm_writing"]))
    counts.add_metric(["reading"], float(status["llm_reading"]))
    yield counts
    cores = float(status["cores"])
    yield GaugeMetricFamily("avatar_cpu_cores", "Cores this process may use (affinity, CPU quota).", value=cores)
    if status.get("others_busy_cores") is not None:
        yield GaugeMetricFamily(
            "avatar_cpu_others_busy_cores",
            "Cores' worth of CPU other processes use (2 s mean).",
            value=status["others_busy_cores"],
        )
    yield CounterMetricFamily("avatar_llm_thread_changes", "Thread count changes since start.", value=status["changes"])


def _gpu_memory() -> Iterator[Metric]:
    """CUDA memory per device, only where a model already brought torch and CUDA up: a scrape must never
    import torch or create a CUDA context itself."""
    torch: Any = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return
    allocated = GaugeMetricFamily("avatar_gpu_memory_allocated_bytes", "CUDA memory in tensors.", labels=["device"])
    reserved = GaugeMetricFamily("avatar_gpu_memory_reserved_bytes", "CUDA memory torch holds.", labels=["device"])
    for device in range(torch.cuda.device_count()):
        allocated.add_metric([str(device)], float(torch.cuda.memory_allocated(device)))
        reserved.add_metric([str(device)], float(torch.cuda.memory_reserved(device)))
    yield allocated
    yield reserved


class MetricsMiddleware:
    """Counts and times every HTTP request by route template and status; tracks turns in flight.
    Pure ASGI: it sees the status when the response starts and the route the router chose (or, for a
    request refused before routing, e.g. without an API key, the route it was meant for)."""

    def __init__(self, app: ASGIApp, metrics: Metrics, routes: Sequence[BaseRoute] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        turn = scope["path"] in TURN_ROUTES and scope["method"] == "POST"
        if turn:
            self.metrics.turns_in_flight.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            if turn:
                self.metrics.turns_in_flight.dec()
            self.metrics.observe_request(self._template(scope), status or 500, time.perf_counter() - started)

    def _template(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.routes if r.matches(scope)[0] is not Match.NONE), None)
        return getattr(route, "path", None) or UNMATCHED


async def metrics_endpoint(request: Request[Any]) -> Response:
    """The Prometheus text exposition of this replica's metrics."""
    metrics: Metrics = request.state["service"].metrics
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
