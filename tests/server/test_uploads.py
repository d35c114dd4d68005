"""Reading form bodies in process (no models): names in any script, duplicates, budgets, encodings."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from live_server import error_code
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from avatar.server.error_responses import HANDLERS
from avatar.server.uploads import MAX_PARTS, audio_type, image_type, read_form

BUDGET = 64 * 1024


async def echo(request: Request) -> JSONResponse:
    form = await read_form(request, max_bytes=BUDGET, files={"audio": audio_type, "image": image_type})
    files = {
        name: {
            "filename": upload.filename,
            "content_type": upload.content_type,
            "sha256": hashlib.sha256(upload.data).hexdigest(),
        }
        for name, upload in form.files.items()
    }
    return JSONResponse({"fields": form.fields, "files": files})


APP = Starlette(routes=[Route("/echo", echo, methods=["POST"])], exception_handlers=HANDLERS)


def post(**request: Any) -> httpx.Response:
    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=APP, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            return await http.post("/echo", **request)

    return asyncio.run(call())


def multipart(*parts: tuple[bytes, bytes]) -> tuple[bytes, dict[str, str]]:
    """A multipart body built by hand: (Content-Disposition value, data) per part, as a browser sends it
    (UTF-8 names straight in the header, which is what crashed the old reader)."""
    body = b""
    for disposition, data in parts:
        body += b"--xyz\r\nContent-Disposition: form-data; " + disposition + b"\r\n\r\n" + data + b"\r\n"
    return body + b"--xyz--\r\n", {"Content-Type": "multipart/form-data; boundary=xyz"}


@pytest.mark.parametrize("filename", ["запись.wav", "名前.mp3", "voix d’été.ogg", "🎤.webm"])
def test_file_names_in_any_script(filename: str) -> None:
    body, headers = multipart(
        (f'name="audio"; filename="{filename}"'.encode(), b"RIFF fake audio"),
        ('name="имя"'.encode(), "значение".encode()),
    )
    response = post(content=body, headers=headers)
    assert response.status_code == 200, response.text
    echoed = response.json()
    assert echoed["files"]["audio"]["filename"] == filename
    assert echoed["files"]["audio"]["sha256"] == hashlib.sha256(b"RIFF fake audio").hexdigest()
    assert echoed["fields"] == {"имя": "значение"}


def test_httpx_style_upload_with_unicode_filename() -> None:
    response = post(files={"audio": ("名前.mp3", b"ID3 data", "audio/mpeg")}, data={"text": "héllo"})
    assert response.status_code == 200, response.text
    assert response.json()["files"]["audio"] == {
        "filename": "名前.mp3",
        "content_type": "audio/mpeg",
        "sha256": hashlib.sha256(b"ID3 data").hexdigest(),
    }
    assert response.json()["fields"] == {"text": "héllo"}


@pytest.mark.parametrize(
    "request_kwargs",
    [
        {"data": {"text": ["one", "two"]}, "files": {"unused": ("x", b"", "application/octet-stream")}},
        {"content": b"text=one&text=two", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        {"content": b'{"text": "one", "text": "two"}', "headers": {"Content-Type": "application/json"}},
        {"files": [("audio", ("a.wav", b"1", "audio/wav")), ("audio", ("b.wav", b"2", "audio/wav"))]},
    ],
    ids=["multipart", "urlencoded", "json", "two-files"],
)
def test_a_field_sent_twice_is_422(request_kwargs: dict[str, Any]) -> None:
    response = post(**request_kwargs)
    assert response.status_code == 422, response.text
    assert error_code(response) == "invalid_request"
    assert "more than once" in response.json()["error"]["message"]


@pytest.mark.parametrize(("opening", "closing"), [(b"[", b"]"), (b'{"a":', b"}")])
def test_deeply_nested_json_is_400(opening: bytes, closing: bytes) -> None:
    depth = BUDGET // (len(opening) + len(closing)) - 10  # within the byte budget: the parser itself must cope
    response = post(content=opening * depth + b"1" + closing * depth, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert error_code(response) == "malformed_request"
    assert "nested" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("a\x00b", "NUL"), ("\ud800", "surrogate"), ("bell\x07", "control character"), ("x\ufffe", "non-character")],
)
def test_text_that_is_not_text_is_422(value: str, fragment: str) -> None:
    # JSON is the one encoding that can carry a lone surrogate (as \ud800).
    response = post(content=json.dumps({"text": value}).encode(), headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text
    assert fragment in response.json()["error"]["message"]


def test_nul_in_a_multipart_field_name_is_422() -> None:
    body, headers = multipart((b'name="te\x00xt"', b"hello"))
    response = post(content=body, headers=headers)
    assert response.status_code == 422, response.text  # a readable body whose field is not acceptable
    assert error_code(response) == "invalid_request"


def test_urlencoded_utf8_both_raw_and_escaped() -> None:
    raw = post(content="text=héllo wörld".encode(), headers={"Content-Type": "application/x-www-form-urlencoded"})
    escaped = post(content=b"text=h%C3%A9llo+w%C3%B6rld", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert raw.json()["fields"] == escaped.json()["fields"] == {"text": "héllo wörld"}


def test_urlencoded_bad_escapes_are_400() -> None:
    response = post(content=b"text=%ff%fe", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400 and error_code(response) == "malformed_request"


def test_file_part_type_is_checked_415() -> None:
    response = post(files={"audio": ("notes.txt", b"hello", "text/plain")})
    assert response.status_code == 415 and error_code(response) == "unsupported_media_type"


def test_a_file_field_sent_as_text_is_422() -> None:
    body, headers = multipart((b'name="audio"', b"RIFF...."))
    response = post(content=body, headers=headers)
    assert response.status_code == 422 and "file part" in response.json()["error"]["message"]


def test_a_text_field_sent_as_a_file_is_its_text() -> None:
    response = post(files={"text": ("question.txt", "Bonjour, ça va ?".encode(), "text/plain")})
    assert response.status_code == 200
    assert response.json()["fields"] == {"text": "Bonjour, ça va ?"}


def test_too_many_parts_is_400() -> None:
    fields = {f"f{i}": "x" for i in range(MAX_PARTS + 1)}
    response = post(data=fields, files={"unused": ("x", b"", "application/octet-stream")})
    assert response.status_code == 400 and error_code(response) == "malformed_request"


def test_declared_oversize_is_413() -> None:
    response = post(files={"audio": ("big.wav", b"\0" * (BUDGET + 1), "audio/wav")})
    assert response.status_code == 413 and error_code(response) == "payload_too_large"


def test_streamed_oversize_is_413_after_at_most_the_budget() -> None:
    """No Content-Length (a chunked upload): the bytes are counted as they arrive, and reading stops once
    past the budget, while the client still has most of its body to send."""
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'--xyz\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
        for _ in range(1000):
            sent += 4096
            yield b"\0" * 4096

    response = post(content=body(), headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert response.status_code == 413 and error_code(response) == "payload_too_large"
    assert sent <= BUDGET + 2 * 4096, f"read {sent} bytes of a {BUDGET}-byte budget"


@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [
        (b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\nhello', "multipart/form-data; boundary=b", 400),
        (b"anything", "multipart/form-data", 400),  # no boundary
        (b"--b\r\nno disposition\r\n\r\nx\r\n--b--\r\n", "multipart/form-data; boundary=b", 400),
        (b"{not json", "application/json", 400),
        (b'["a list"]', "application/json", 422),  # well-formed JSON, but not the object of fields a request is
    ],
)
def test_malformed_bodies_are_4xx(body: bytes, content_type: str, status: int) -> None:
    """A body that cannot be read as what it claims to be is 400 malformed_request; one that can, but is not
    a request's fields, 422 invalid_request (docs/api.md, "Errors")."""
    response = post(content=body, headers={"Content-Type": content_type})
    assert response.status_code == status, response.text
    assert error_code(response) == {400: "malformed_request", 422: "invalid_request"}[status]
