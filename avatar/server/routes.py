"""Every route of the service (``openapi.py`` describes each; a test keeps the two in step)."""

from __future__ import annotations

from starlette.routing import Mount, Route

from avatar.server import conversation, downloads, metrics, personas, probes, stage_routes, web
from avatar.server.live import api as live

API = "/api/v1"

ROUTES = [
    Route("/", web.page, methods=["GET"]),
    Mount("/static", app=web.static, name="static"),
    Route("/healthz", probes.healthz, methods=["GET"]),
    Route("/readyz", probes.readyz, methods=["GET"]),
    Route("/openapi.json", probes.openapi, methods=["GET"]),
    Route("/metrics", metrics.metrics_endpoint, methods=["GET"]),
    Route(f"{API}/conversation", conversation.conversation, methods=["POST"]),
    Route(f"{API}/conversation/stream", conversation.conversation_stream, methods=["POST"]),
    Route(f"{API}/conversation/{{turn_id}}", conversation.cancel, methods=["DELETE"]),
    Route(f"{API}/personas", personas.list_personas, methods=["GET"]),
    Route(f"{API}/personas", personas.create_persona, methods=["POST"]),
    Route(f"{API}/personas/{{persona}}", personas.get_persona, methods=["GET"], name="persona"),
    Route(f"{API}/personas/{{persona}}", personas.delete_persona, methods=["DELETE"]),
    Route(f"{API}/personas/{{persona}}/image", personas.persona_image, methods=["GET"], name="persona_image"),
    Route(f"{API}/personas/{{persona}}/face.jpg", personas.persona_face, methods=["GET"], name="persona_face"),
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
