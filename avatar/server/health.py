"""Probes and the API description: none of them waits on the models."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from avatar.server.openapi import document
from avatar.server.service import AppState


async def healthz(request: Request[AppState]) -> JSONResponse:
    """Liveness: answering at all is the proof that the process and its event loop are alive."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request[AppState]) -> JSONResponse:
    """Readiness: 200 once every model is loaded and warm, 503 with per-model states before or on failure."""
    service = request.state["service"]
    body = service.readiness()
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)


async def openapi(request: Request[AppState]) -> JSONResponse:
    return JSONResponse(document())
