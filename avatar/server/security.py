"""Who may call the API: optional bearer API keys, and browser origins for state-changing requests.

API keys (``AVATAR_API_KEYS``, ``AVATAR_API_KEYS_FILE``) guard everything under ``/api/`` except
fetching a result's files (``GET /api/v1/results/<id>/video.mp4`` and the like) and a persona's
pictures: a result's id is 128 random bits handed only to the caller, so its URL is the credential,
which lets a ``<video src>`` play it (a browser cannot add an Authorization header there); an owned
persona's picture URLs carry a token only its owner's listing hands out. Probes (``/healthz``,
``/readyz``), ``/metrics``, ``/openapi.json`` and the web page stay open. Keys are compared in constant time, as SHA-256
digests so that not even their length leaks.

A browser sends ``Origin`` with every cross-site POST/DELETE; one that is neither this server's
origin nor an allowed CORS origin (``AVATAR_CORS_ORIGINS``) is refused (403) before the handler runs,
so a page on another site cannot make a visitor's browser use this service (CSRF). Requests without
``Origin`` (curl, SDKs) are not browsers' cross-site requests and pass.

What a key made belongs to it (``Caller``): a created persona (its details, photo and face, its use in a
turn, its removal), the sessions of its conversations and the summaries of its results are seen only
with the key that made them (another key gets 404, as if there were none); an admin key
(``AVATAR_ADMIN_API_KEYS``) sees and removes everything. A key is known here only by an id derived from
it (``key_id``), which is what a persona's folder or a session records as its owner. With keys off
there are no owners: the list of personas shows the bundled ones only, and a created one is reached by
its unguessable name alone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from avatar.config import Settings, split_list
from avatar.errors import ConfigError
from avatar.server.error_responses import ForbiddenOriginError, UnauthorizedError, error_response

MIN_KEY_CHARS = 16
STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
RESULTS_PREFIX = "/api/v1/results/"
RESULT_FILE = re.compile(r"^/api/v1/results/[^/]+/(?:video\.mp4|audio\.wav|segments/[^/]+)$")
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
    return _checked(keys)


def load_admin_keys(settings: Settings) -> tuple[str, ...]:
    """``AVATAR_ADMIN_API_KEYS``: keys that are valid everywhere and own everything (checked the same way)."""
    return _checked(list(split_list(settings.admin_api_keys.get_secret_value())))


def _checked(keys: list[str]) -> tuple[str, ...]:
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
    media = RESULT_FILE.match(path) is not None or PERSONA_PICTURE.match(path) is not None
    return not (method in ("GET", "HEAD") and media)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def key_id(key: str) -> str:
    """The id an owner is recorded by: derived from the key (one way), never the key itself."""
    return hashlib.sha256(b"avatar-owner:" + _digest(key)).hexdigest()[:32]


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the id of its API key (None with keys off, or on a route that needs none)
    and whether that key is an admin key."""

    key: str | None = None
    admin: bool = False

    def owns(self, owner: str | None) -> bool:
        """Whether this caller may see and remove what ``owner`` made (None: made with keys off)."""
        return owner is None or self.admin or owner == self.key


def caller_of(scope: Any) -> Caller:
    """The caller of a request (``ApiKeyMiddleware`` puts it in the request's state)."""
    found = scope.get("state", {}).get("caller")
    return found if isinstance(found, Caller) else Caller()


def picture_token(persona_name: str, owner: str) -> str:
    """The token in an owned persona's picture URLs: an ``<img src>`` cannot send a key, so the URL
    carries proof that it came from the owner's listing (derived from the owner's key id, which only
    that key's holder and the server can know)."""
    return hmac.new(owner.encode(), persona_name.encode(), hashlib.sha256).hexdigest()[:32]


class ApiKeyMiddleware:
    """401 ``unauthorized`` (with ``WWW-Authenticate: Bearer``) for an API request without a valid
    ``Authorization: Bearer <key>``. Does nothing when no key is configured."""

    def __init__(self, app: ASGIApp, keys: Sequence[str], admin_keys: Sequence[str] = ()) -> None:
        self.app = app
        self.digests = tuple(_digest(key) for key in (*keys, *admin_keys))
        self.ids = tuple(key_id(key) for key in (*keys, *admin_keys))
        self.admins = len(keys)  # the digests from here on are admin keys'

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.digests:
            header = Headers(scope=scope).get("authorization")
            problem, caller = self._check(header)
            if caller is not None:
                scope.setdefault("state", {})["caller"] = caller
            elif requires_key(scope["method"], scope["path"]):
                await error_response(UnauthorizedError(problem))(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _check(self, header: str | None) -> tuple[str, Caller | None]:
        """(what is wrong, or "") and the caller the header proves, if any."""
        if header is None:
            return "An API key is required: send the header Authorization: Bearer <key>.", None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return "The Authorization header must be: Bearer <key>.", None
        given = _digest(token.strip())
        matched = -1
        for index, digest in enumerate(self.digests):  # every key compared, in constant time
            if hmac.compare_digest(given, digest):
                matched = index
        if matched < 0:
            return "The API key is not valid.", None
        return "", Caller(self.ids[matched], admin=matched >= self.admins)


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
