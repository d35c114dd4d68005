"""The live mode's routes: ``POST /api/v1/live`` (WebRTC signalling: an SDP offer in, the answer out)
and ``GET /api/v1/live`` (what a client needs before it makes its offer)."""

from __future__ import annotations

import re

from starlette.requests import Request
from starlette.responses import JSONResponse

from avatar.errors import InvalidRequestError, UnsupportedMediaTypeError
from avatar.server.live import ice
from avatar.server.live.hub import InvalidSdpError, LiveOffer
from avatar.server.live.offers import offer_problem
from avatar.server.security import caller_of
from avatar.server.service import AppState
from avatar.server.uploads import read_form

MAX_OFFER_BYTES = 256 * 1024  # a browser's offer is 3-10 KB
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


async def offer(request: Request[AppState]) -> JSONResponse:
    """Open a live session: ``{"sdp", "type": "offer", "persona"?, "session_id"?}`` →
    ``{"sdp", "type": "answer", "session_id", "live_session"}``."""
    checked = await read_offer(request)
    return JSONResponse(await request.state["live"].open(checked), headers={"Cache-Control": "no-store"})


async def info(request: Request[AppState]) -> JSONResponse:
    """The ICE servers to put in the client's RTCPeerConnection, and how many sessions are open."""
    live = request.state["live"]
    settings = live.settings
    return JSONResponse(
        {
            "ice_servers": ice.client_ice_servers(settings),
            "sessions": len(live),
            "max_sessions": settings.max_live_sessions,
            "end_silence_ms": settings.live_end_silence_ms,
            "turn_detector": live.turn_end.status()["using"],  # what ends a turn now (docs/live.md)
        }
    )


async def read_offer(request: Request[AppState]) -> LiveOffer:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise UnsupportedMediaTypeError(
            f"Send the offer as application/json (not {media_type or 'no content type'}): "
            '{"sdp": "...", "type": "offer"}.'
        )
    form = await read_form(request, max_bytes=MAX_OFFER_BYTES, files={})
    fields = form.fields
    if fields.get("type") != "offer":
        raise InvalidRequestError(f'"type" must be "offer", not {fields.get("type", "missing")!r}.')
    sdp = fields.get("sdp", "")
    if not sdp.strip():
        raise InvalidRequestError('"sdp" is missing or empty: send the SDP of RTCPeerConnection.createOffer().')
    session_id = fields.get("session_id") or None
    if session_id is not None and not SESSION_ID.fullmatch(session_id):
        raise InvalidRequestError('"session_id" must be the session_id of an earlier answer or turn.')
    lines = sdp.strip().splitlines()
    if lines[0].strip() != "v=0" or not any(line.startswith("m=") for line in lines):
        raise InvalidSdpError(
            '"sdp" is not an SDP offer: it must begin with "v=0" and have media sections ("m=" lines).'
        )
    problem = offer_problem(sdp)  # before any peer connection is made for it
    if problem is not None:
        raise InvalidSdpError(problem)
    caller = caller_of(request.scope)
    return LiveOffer(sdp=sdp, persona=form.choice("persona"), session_id=session_id, caller=caller)
