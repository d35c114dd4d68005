"""URLs the service hands out (result files, segments): never built from the client's Host header.

By default they are relative (``/api/v1/results/<id>/video.mp4``), which every HTTP client and browser
resolves against the address it used; with ``AVATAR_PUBLIC_URL`` set they are absolute under it. A
forged ``Host: evil.example`` therefore cannot make the service point anyone at another site.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request


def public_url_for(request: Request[Any], name: str, **path_params: Any) -> str:
    """The URL of the named route: under the configured public URL, else relative to the server root."""
    path = request.app.url_path_for(name, **path_params)
    base = request.state["service"].settings.public_url.rstrip("/")
    return f"{base}{path}" if base else f"{request.scope.get('root_path', '')}{path}"
