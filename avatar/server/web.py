"""The web page at ``/``: plain HTML, CSS and JavaScript modules served as they are (no build step)."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.staticfiles import StaticFiles

WEB = Path(__file__).with_name("web")

static = StaticFiles(directory=WEB)


async def page(request: Request) -> FileResponse:
    return FileResponse(WEB / "index.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
