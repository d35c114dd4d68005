"""Who may call: API keys, browser origins and CORS, URLs that ignore the Host header, forwarded headers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import ALLOWED_ORIGIN, API_KEYS, PUBLIC_URL, Served, ServerProcess, error_code
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from avatar.config import load_settings
from avatar.errors import ConfigError
from avatar.server.security import ApiKeyMiddleware, OriginCheckMiddleware, load_api_keys, requires_key

KEY = API_KEYS[0]


# --- in process: the middleware on a bare app --------------------------------------------------------


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def guarded_app(keys: tuple[str, ...] = API_KEYS, allowed: tuple[str, ...] = (), public_url: str = "") -> Starlette:
    paths = ["/healthz", "/metrics", "/api/v1/chat", "/api/v1/results/{rid}/video.mp4", "/"]
    return Starlette(
        routes=[Route(path, ok, methods=["GET", "POST"]) for path in paths],
        middleware=[
            Middleware(OriginCheckMiddleware, allowed=allowed, public_url=public_url),
            Middleware(ApiKeyMiddleware, keys=keys),
        ],
    )


def call(app: Starlette, method: str, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://avatar.local:8000") as http:
            return await http.request(method, path, headers=headers)

    return asyncio.run(go())


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (None, "API key is required"),
        ("Basic dXNlcjpwYXNz", "Bearer <key>"),
        ("Bearer ", "Bearer <key>"),
        ("Bearer not-a-configured-key-at-all", "not valid"),
        (f"Bearer {KEY}x", "not valid"),
        (f"Bearer {KEY[:-1]}", "not valid"),
    ],
)
def test_api_without_a_valid_key_is_401(header: str | None, fragment: str) -> None:
    response = call(guarded_app(), "POST", "/api/v1/chat", {"Authorization": header} if header else None)
    assert response.status_code == 401
    assert error_code(response) == "unauthorized" and fragment in response.json()["error"]["message"]
    assert response.headers["www-authenticate"] == 'Bearer realm="avatar"'


@pytest.mark.parametrize("key", API_KEYS)
def test_every_configured_key_works(key: str) -> None:
    for scheme in ("Bearer", "bearer"):
        assert call(guarded_app(), "POST", "/api/v1/chat", {"Authorization": f"{scheme} {key}"}).text == "ok"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/"), ("GET", "/api/v1/results/0123/video.mp4")],
)
def test_probes_page_metrics_and_result_urls_stay_open(method: str, path: str) -> None:
    assert call(guarded_app(), method, path).status_code == 200


def test_no_keys_configured_means_open() -> None:
    assert call(guarded_app(keys=()), "POST", "/api/v1/chat").status_code == 200
    assert requires_key("POST", "/api/v1/results/x") and not requires_key("GET", "/api/v1/results/x/video.mp4")
    assert requires_key("GET", "/api/v1/results/x")  # a summary is the caller's own: it needs the key


def test_keys_from_settings_and_file(tmp_path: Path) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text("# operators' keys\nthird-key-000000000000\n\n")
    settings = load_settings({"AVATAR_API_KEYS": ",".join(API_KEYS), "AVATAR_API_KEYS_FILE": str(keyfile)})
    assert load_api_keys(settings) == (*API_KEYS, "third-key-000000000000")


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"AVATAR_API_KEYS": "short"}, "shorter than"),
        ({"AVATAR_API_KEYS_FILE": "/nonexistent/keys"}, "cannot be read"),
    ],
)
def test_bad_key_settings_stop_start_up(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        load_api_keys(load_settings(environ))


def test_an_empty_key_file_stops_start_up(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="holds no key"):
        load_api_keys(load_settings({"AVATAR_API_KEYS_FILE": str(tmp_path / "keys")}))


@pytest.mark.parametrize(
    ("origin", "allowed", "public_url", "status"),
    [
        (None, (), "", 200),  # not a browser's cross-site request (curl, SDKs)
        ("http://avatar.local:8000", (), "", 200),  # this server's own page
        ("https://evil.example", (), "", 403),
        ("null", (), "", 403),  # sandboxed frames, file:// pages
        ("http://avatar.local:8001", (), "", 403),  # another port is another origin
        ("https://app.example.test", ("https://app.example.test",), "", 200),
        ("https://APP.example.test", ("https://app.example.test",), "", 200),
        ("https://avatar.example.com", (), "https://avatar.example.com/base", 200),
        ("https://evil.example", ("*",), "", 200),
    ],
)
def test_state_changing_requests_from_foreign_pages_are_403(
    origin: str | None, allowed: tuple[str, ...], public_url: str, status: int
) -> None:
    app = guarded_app(keys=(), allowed=allowed, public_url=public_url)
    response = call(app, "POST", "/api/v1/chat", {"Origin": origin} if origin else None)
    assert response.status_code == status, response.text
    if status == 403:
        assert error_code(response) == "forbidden_origin"
    # Reading is not state-changing: a foreign origin may GET (CORS decides whether its page sees the answer).
    assert call(app, "GET", "/api/v1/chat", {"Origin": origin} if origin else None).status_code == 200


# --- the live guarded server ---------------------------------------------------------------------------


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.slow
def test_live_keys_probes_and_results(guarded_server: Served) -> None:
    with httpx.Client(base_url=guarded_server.base_url, timeout=120) as http:
        refused = http.post("/api/v1/conversation", data={"text": "Hello!"})
        assert refused.status_code == 401 and error_code(refused) == "unauthorized"
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert http.get("/api/v1/personas").status_code == 401
        for open_path in ("/healthz", "/readyz", "/metrics", "/openapi.json"):
            assert http.get(open_path).status_code == 200, open_path

        turn = http.post("/api/v1/conversation", data={"text": "Hello!"}, headers=auth(API_KEYS[1]))
        assert turn.status_code == 200, turn.text
        summary = turn.json()
        # AVATAR_PUBLIC_URL: absolute URLs under it, whatever Host the request named.
        assert summary["video_url"] == f"{PUBLIC_URL}/api/v1/results/{summary['id']}/video.mp4"
        # The result itself is fetched with no key: its random id is the credential.
        path = summary["audio_url"].removeprefix(PUBLIC_URL)
        assert http.get(path).status_code == 200
        assert http.get(f"/api/v1/results/{summary['id']}", headers=auth(API_KEYS[1])).status_code == 200

        document = http.get("/openapi.json").json()
        assert document["security"] == [{"bearerKey": []}]
        assert "security" not in document["paths"]["/api/v1/conversation"]["post"]
        assert document["paths"]["/healthz"]["get"]["security"] == []


@pytest.mark.slow
def test_live_cors_and_origin_check(guarded_server: Served) -> None:
    with httpx.Client(base_url=guarded_server.base_url, timeout=60) as http:
        preflight = http.options(
            "/api/v1/chat",
            headers={
                "Origin": ALLOWED_ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization,content-type",
            },
        )
        assert preflight.status_code == 200  # answered before any key is asked for
        assert preflight.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()

        foreign = http.options(
            "/api/v1/chat", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in foreign.headers

        # A 401 to the allowed page carries CORS headers, so its script can read why.
        refused = http.post("/api/v1/chat", data={"text": "Hi"}, headers={"Origin": ALLOWED_ORIGIN})
        assert refused.status_code == 401
        assert refused.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
        assert "x-request-id" in refused.headers["access-control-expose-headers"].lower()

        forged = http.post("/api/v1/chat", data={"text": "Hi"}, headers={"Origin": "https://evil.example", **auth()})
        assert forged.status_code == 403 and error_code(forged) == "forbidden_origin"


@pytest.mark.slow
def test_host_header_never_makes_a_url(server: ServerProcess) -> None:
    """On a server without AVATAR_PUBLIC_URL, URLs are relative: a forged Host goes nowhere."""
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        turn = http.post("/api/v1/conversation", data={"text": "Hi!"}, headers={"Host": "evil.example"})
        assert turn.status_code == 200, turn.text
        summary: dict[str, Any] = turn.json()
        assert summary["video_url"] == f"/api/v1/results/{summary['id']}/video.mp4"
        assert summary["audio_url"] == f"/api/v1/results/{summary['id']}/audio.wav"
        again = http.get(f"/api/v1/results/{summary['id']}", headers={"Host": "evil.example"}).json()
        assert "evil" not in again["video_url"]


@pytest.mark.slow
def test_forwarded_headers_are_not_believed_by_default(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        http.get("/api/v1/personas", headers={"X-Forwarded-For": "203.0.113.9", "X-Request-ID": "fwd-check"})
    line = server.wait_for_log(event="request", request_id="fwd-check")
    assert line["client"] == "127.0.0.1"
