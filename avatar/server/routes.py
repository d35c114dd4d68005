"""Every route of the service (``openapi.py`` describes each; a test keeps the two in step)."""

from __future__ import annotations

from starlette.routing import Route

from avatar.server import conversation, downloads, health, metrics, stages

API = "/api/v1"

ROUTES = [
    Route("/healthz", health.healthz, methods=["GET"]),
    Route("/readyz", health.readyz, methods=["GET"]),
    Route("/openapi.json", health.openapi, methods=["GET"]),
    Route("/metrics", metrics.metrics_endpoint, methods=["GET"]),
    Route(f"{API}/conversation", conversation.conversation, methods=["POST"]),
    Route(f"{API}/personas", conversation.personas, methods=["GET"]),
    Route(f"{API}/results/{{result_id}}", downloads.result_summary, methods=["GET"]),
    Route(f"{API}/results/{{result_id}}/video.mp4", downloads.result_video, methods=["GET"], name="result_video"),
    Route(f"{API}/results/{{result_id}}/audio.wav", downloads.result_audio, methods=["GET"], name="result_audio"),
    Route(f"{API}/transcribe", stages.transcribe, methods=["POST"]),
    Route(f"{API}/chat", stages.chat, methods=["POST"]),
    Route(f"{API}/speak", stages.speak, methods=["POST"]),
    Route(f"{API}/animate", stages.animate, methods=["POST"]),
]
