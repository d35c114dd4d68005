"""Every route of the service (``openapi.py`` describes each; a test keeps the two in step)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from avatar.server import conversation, downloads, metrics, persona_routes, probes, stage_routes, voice_routes, web
from avatar.server.live import api as live

API = "/api/v1"

_DECLARED = [
    Route("/", web.page, methods=["GET"]),
    Mount("/static", app=web.static, name="static"),
    Route("/healthz", probes.healthz, methods=["GET"]),
    Route("/readyz", probes.readyz, methods=["GET"]),
    Route("/openapi.json", probes.openapi, methods=["GET"]),
    Route("/metrics", metrics.metrics_endpoint, methods=["GET"]),
    Route(f"{API}/conversation", conversation.conversation, methods=["POST"]),
    Route(f"{API}/conversation/stream", conversation.conversation_stream, methods=["POST"]),
    Route(f"{API}/conversation/{{turn_id}}", conversation.cancel, methods=["DELETE"]),
    Route(f"{API}/personas", persona_routes.list_personas, methods=["GET"]),
    Route(f"{API}/personas", persona_routes.create_persona, methods=["POST"]),
    Route(f"{API}/personas/{{persona}}", persona_routes.get_persona, methods=["GET"], name="persona"),
    Route(f"{API}/personas/{{persona}}", persona_routes.delete_persona, methods=["DELETE"]),
    Route(f"{API}/personas/{{persona}}/image", persona_routes.persona_image, methods=["GET"], name="persona_image"),
    Route(f"{API}/personas/{{persona}}/face.jpg", persona_routes.persona_face, methods=["GET"], name="persona_face"),
    Route(f"{API}/voices", voice_routes.list_voices, methods=["GET"]),
    Route(f"{API}/voices/{{voice}}/sample.wav", voice_routes.voice_sample, methods=["GET"], name="voice_sample"),
    Route(f"{API}/results/{{result_id}}", downloads.result_summary, methods=["GET"]),
    Route(f"{API}/results/{{result_id}}/video.mp4", downloads.result_video, methods=["GET"], name="result_video"),
    Route(f"{API}/results/{{result_id}}/audio.wav", downloads.result_audio, methods=["GET"], name="result_audio"),
    Route(
        f"{API}/results/{{result_id}}/segments/{{index:int}}.m4s",
        downloads.result_segment,
        methods=["GET"],
        name="result_segment",
    ),
    Route(f"{API}/transcribe", stage_routes.transcribe, methods=["POST"]),
    Route(f"{API}/chat", stage_routes.chat, methods=["POST"]),
    Route(f"{API}/speak", stage_routes.speak, methods=["POST"]),
    Route(f"{API}/animate", stage_routes.animate, methods=["POST"]),
    Route(f"{API}/live", live.offer, methods=["POST"]),
    Route(f"{API}/live", live.info, methods=["GET"]),
]


Endpoint = Callable[[Request[Any]], Awaitable[Response]]


def by_path(routes: Sequence[BaseRoute]) -> list[BaseRoute]:
    """One route per path: the routes of a path that differ by method become one that dispatches on it,
    so that a 405 lists every method of the path in ``Allow`` (Starlette answers a wrong method with the
    first matching route's methods only). The merged route keeps the name one of them had."""
    merged: list[BaseRoute] = []
    groups: dict[str, list[Route]] = {}
    for route in routes:
        if isinstance(route, Route) and route.path in groups:
            groups[route.path].append(route)
            continue
        if isinstance(route, Route):
            groups[route.path] = [route]
        merged.append(route)
    for index, route in enumerate(merged):
        group = groups.get(route.path) if isinstance(route, Route) else None
        if group is not None and len(group) > 1:
            merged[index] = _dispatching(group)
    return merged


def _dispatching(group: list[Route]) -> Route:
    endpoints: dict[str, Endpoint] = {}
    for route in group:
        for method in route.methods or ():
            endpoints[method] = route.endpoint

    async def dispatch(request: Request[Any]) -> Response:
        return await endpoints[request.method](request)

    name = next((r.name for r in group if r.name != r.endpoint.__name__), group[0].name)
    return Route(group[0].path, dispatch, methods=sorted(endpoints), name=name)


ROUTES = by_path(_DECLARED)
