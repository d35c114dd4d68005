"""Probes and the API description: none of them waits on the models."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse

from avatar.errors import SessionStoreUnavailableError, StorageFullError
from avatar.server.openapi import document
from avatar.server.service import LOADING_RETRY_AFTER_S, AppState


async def healthz(request: Request[AppState]) -> JSONResponse:
    """Liveness: answering at all is the proof that the process and its event loop are alive."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request[AppState]) -> JSONResponse:
    """Readiness: 200 when this replica can take another request now; 503 while loading, after a model
    failed, while the model queue is full, while the output folder's disk is under its free-space floor
    or the session store does not answer, with the reason and per-model states."""
    service = request.state["service"]
    body = await service.readiness()
    body["live"] = {"turn_detector": request.state["live"].turn_end.status()}  # informs; never makes it 503
    status = body["status"]
    if status == "ready":
        return JSONResponse(body)
    retry = {
        "loading": LOADING_RETRY_AFTER_S,
        "busy": service.queue.retry_after_seconds(),
        "storage_full": StorageFullError.retry_after_seconds,
        "session_store_unavailable": SessionStoreUnavailableError.retry_after_seconds,
    }.get(status)
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return JSONResponse(body, status_code=503, headers=headers)


async def openapi(request: Request[AppState]) -> JSONResponse:
    settings = request.state["service"].settings
    return JSONResponse(
        document(settings, api_keys=bool(settings.api_keys or settings.api_keys_file or settings.admin_api_keys))
    )
