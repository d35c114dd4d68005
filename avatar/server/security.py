"""Who may call the API: optional bearer API keys, and browser origins for state-changing requests.

API keys (``AVATAR_API_KEYS``, ``AVATAR_API_KEYS_FILE``) guard everything under ``/api/`` except
fetching a finished result (``GET /api/v1/results/...``): a result's id is 128 random bits handed
only to the caller, so its URL is the credential, which lets a ``<video src>`` play it (a browser
cannot add an Authorization header there). Probes (``/healthz``, ``/readyz``), ``/metrics``,
``/openapi.json`` and the web page stay open. Keys are compared in constant time, as SHA-256
digests so that not even their length leaks.

A browser sends ``Origin`` with every cross-site POST/DELETE; one that is neither this server's
origin nor an allowed CORS origin (``AVATAR_CORS_ORIGINS``) is refused (403) before the handler runs,
so a page on another site cannot make a visitor's browser use this service (CSRF). Requests without
``Origin`` (curl, SDKs) are not browsers' cross-site requests and pass.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from avatar.config import Settings, split_list
from avatar.errors import ConfigError
from avatar.server.error_responses import ForbiddenOriginError, UnauthorizedError, error_response

MIN_KEY_CHARS = 16
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
RESULTS_PREFIX = "/api/v1/results/"
PERSONA_PICTURE = re.compile(r"^/api/v1/personas/[^/]+/(?:image|face\.jpg)$")


def load_api_keys(settings: Settings) -> tuple[str, ...]:
    """The configured keys (``AVATAR_API_KEYS`` and the lines of ``AVATAR_API_KEYS_FILE``); ConfigError,
    at start-up, for a missing file or a key too short to be secret."""
    keys = list(split_list(settings.api_keys.get_secret_value()))
    if settings.api_keys_file:
        path = Path(settings.api_keys_file).expanduser()
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"AVATAR_API_KEYS_FILE={path} cannot be read ({exc.strerror}); fix the path.") from None
        in_file = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
        if not in_file:
            raise ConfigError(f"AVATAR_API_KEYS_FILE={path} holds no key; put one key a line, or unset it.")
        keys += in_file
    for key in keys:
        if len(key) < MIN_KEY_CHARS or any(ch.isspace() or ch == "," for ch in key):
            raise ConfigError(
                f"An API key (AVATAR_API_KEYS / AVATAR_API_KEYS_FILE) is shorter than {MIN_KEY_CHARS} characters "
                "or holds spaces or commas; use long random tokens, e.g. `openssl rand -hex 32`."
            )
    return tuple(keys)


def requires_key(method: str, path: str) -> bool:
    """Whether a request needs an API key when keys are configured."""
    if not path.startswith("/api/"):
        return False  # probes, metrics, the API document, the web page and its files
    # Media a page shows with <img>/<video src>, which cannot send headers: a result's files (its random
    # id is the credential) and a persona's pictures (bundled ones are public; a created one's id is random).
    media = path.startswith(RESULTS_PREFIX) or PERSONA_PICTURE.match(path) is not None
    return not (method in ("GET", "HEAD") and media)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


class ApiKeyMiddleware:
    """401 ``unauthorized`` (with ``WWW-Authenticate: Bearer``) for an API request without a valid
    ``Authorization: Bearer <key>``. Does nothing when no key is configured."""

    def __init__(self, app: ASGIApp, keys: Sequence[str]) -> None:
        self.app = app
        self.digests = tuple(_digest(key) for key in keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.digests and requires_key(scope["method"], scope["path"]):
            problem = self._problem(Headers(scope=scope).get("authorization"))
            if problem is not None:
                await error_response(UnauthorizedError(problem))(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _problem(self, header: str | None) -> str | None:
        if header is None:
            return "An API key is required: send the header Authorization: Bearer <key>."
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "The Authorization header must be: Bearer <key>."
        given = _digest(token.strip())
        matched = False
        for digest in self.digests:  # every key compared, in constant time, whatever matches first
            matched |= hmac.compare_digest(given, digest)
        return None if matched else "The API key is not valid."


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lower case (an origin as browsers write it)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class OriginCheckMiddleware:
    """403 ``forbidden_origin`` for a state-changing request whose ``Origin`` is another site's."""

    def __init__(self, app: ASGIApp, *, allowed: Sequence[str], public_url: str = "") -> None:
        self.app = app
        self.any = "*" in allowed
        self.allowed = frozenset(origin.lower().rstrip("/") for origin in allowed if origin != "*")
        self.public_origin = origin_of(public_url) if public_url else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in STATE_CHANGING and not self.any:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if origin is not None and not self._allowed(origin.lower(), scope, headers):
                message = (
                    f"Requests from pages on {origin} may not call this service; the operator can allow "
                    "that origin in AVATAR_CORS_ORIGINS."
                )
                await error_response(ForbiddenOriginError(message))(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _allowed(self, origin: str, scope: Scope, headers: Headers) -> bool:
        if origin in self.allowed or origin == self.public_origin:
            return True
        # This server's own origin as the browser addressed it: the Host it sent (a page cannot forge
        # it) with the connection's scheme (from X-Forwarded-Proto when a trusted proxy set it).
        host = headers.get("host", "")
        return bool(host) and origin == f"{scope.get('scheme', 'http')}://{host}".lower()
