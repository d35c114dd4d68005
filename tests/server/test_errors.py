"""Bad input gets the right 4xx and a JSON error body; nothing half-made is left behind."""

from __future__ import annotations

import io
import socket

import httpx
import pytest
from live_server import MAX_UPLOAD_MB, ServerProcess, error_code
from PIL import Image

pytestmark = pytest.mark.slow  # drives the real server with the embedded models

CONVERSATION = "/api/v1/conversation"


def test_corrupt_audio_is_400(client: httpx.Client) -> None:
    junk = b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8
    response = client.post(CONVERSATION, files={"audio": ("question.wav", junk, "audio/wav")})
    assert response.status_code == 400
    assert error_code(response) == "invalid_audio"


def test_undecodable_audio_is_400(client: httpx.Client) -> None:
    response = client.post("/api/v1/transcribe", files={"audio": ("q.mp3", b"not audio at all" * 100, "audio/mpeg")})
    assert response.status_code == 400
    assert error_code(response) == "invalid_audio"


def test_declared_oversize_is_413_before_reading(client: httpx.Client) -> None:
    big = b"\0" * (MAX_UPLOAD_MB * 2**20 + 1)
    response = client.post(CONVERSATION, files={"audio": ("big.wav", big, "audio/wav")})
    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"


def test_streamed_oversize_is_413_while_streaming(server: ServerProcess) -> None:
    """Chunked, so no Content-Length to judge by: the server counts bytes as they arrive and answers
    413 once past the limit, while the client is still holding the rest of its body back."""
    host, port = server.base_url.removeprefix("http://").split(":")
    head = (
        f"POST {CONVERSATION} HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
        "Content-Type: multipart/form-data; boundary=xyzzy\r\nX-Request-ID: streamed-413\r\n\r\n"
    ).encode()
    part = (
        b'--xyzzy\r\nContent-Disposition: form-data; name="audio"; filename="big.wav"\r\n'
        b"Content-Type: audio/wav\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head + _chunk(part))
        piece = b"\0" * 65536
        for _ in range(MAX_UPLOAD_MB * 16 + 2):  # just past the limit; the body never ends
            sock.sendall(_chunk(piece))
        reply = _read_response(sock)  # times out (fails) if the server waits for the end of the body
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:200]
    assert b'"payload_too_large"' in reply


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _content_length(data):
        more = sock.recv(65536)
        if not more:
            break
        data += more
    return data


def _content_length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def test_not_audio_part_is_415(client: httpx.Client) -> None:
    response = client.post(CONVERSATION, files={"audio": ("notes.txt", b"hello there", "text/plain")})
    assert response.status_code == 415
    assert error_code(response) == "unsupported_media_type"


def test_not_a_form_is_415(client: httpx.Client, planet_question: bytes) -> None:
    response = client.post("/api/v1/transcribe", content=planet_question, headers={"Content-Type": "audio/wav"})
    assert response.status_code == 415
    assert error_code(response) == "unsupported_media_type"


def test_image_of_wrong_type_is_415(client: httpx.Client, planet_question: bytes) -> None:
    files = {"audio": ("q.wav", planet_question, "audio/wav"), "image": ("face.wav", planet_question, "audio/wav")}
    response = client.post("/api/v1/animate", files=files)
    assert response.status_code == 415


@pytest.mark.parametrize(
    ("path", "data"),
    [
        (CONVERSATION, {"persona": "eileen"}),
        ("/api/v1/transcribe", {"language": "en"}),
        ("/api/v1/chat", {"text": "   "}),
        ("/api/v1/speak", {"persona": "eileen"}),
        ("/api/v1/animate", {"persona": "eileen"}),
    ],
)
def test_missing_field_is_422(client: httpx.Client, path: str, data: dict[str, str]) -> None:
    # files={} with a dummy part keeps the body multipart, as a browser form would send it.
    response = client.post(path, data=data, files={"unused": ("x", b"", "application/octet-stream")})
    assert response.status_code == 422
    assert error_code(response) == "invalid_request"


def test_both_audio_and_text_is_422(client: httpx.Client, planet_question: bytes) -> None:
    response = client.post(CONVERSATION, data={"text": "hello"}, files={"audio": ("q.wav", planet_question)})
    assert response.status_code == 422


def test_silence_is_422_no_speech_and_leaves_nothing(
    server: ServerProcess, client: httpx.Client, silence_wav: bytes
) -> None:
    before = server.result_folders()
    response = client.post(CONVERSATION, files={"audio": ("silence.wav", silence_wav, "audio/wav")})
    assert response.status_code == 422
    assert error_code(response) == "no_speech"
    assert server.result_folders() == before
    assert server.staging_folders() == []


def test_photo_without_face_is_422(client: httpx.Client, planet_question: bytes, faceless_png: bytes) -> None:
    files = {"audio": ("q.wav", planet_question, "audio/wav"), "image": ("sky.png", faceless_png, "image/png")}
    response = client.post("/api/v1/animate", files=files)
    assert response.status_code == 422
    assert error_code(response) == "no_face"


def test_photo_that_is_not_an_image_is_400(client: httpx.Client, planet_question: bytes) -> None:
    files = {"audio": ("q.wav", planet_question, "audio/wav"), "image": ("me.png", b"\x89PNG broken", "image/png")}
    response = client.post("/api/v1/animate", files=files)
    assert response.status_code == 400
    assert error_code(response) == "invalid_image"


def test_photo_with_too_many_pixels_is_400(client: httpx.Client, planet_question: bytes) -> None:
    buf = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buf, format="PNG")  # 400 Mpx in 50 kB
    files = {"audio": ("q.wav", planet_question, "audio/wav"), "image": ("huge.png", buf.getvalue(), "image/png")}
    response = client.post("/api/v1/animate", files=files)
    assert response.status_code == 400
    assert error_code(response) == "invalid_image"


@pytest.mark.parametrize("persona", ["nobody", "../../etc/passwd", "Eileen"])
def test_unknown_persona_is_404(client: httpx.Client, persona: str) -> None:
    response = client.post(CONVERSATION, data={"text": "Hello!", "persona": persona})
    assert response.status_code == 404
    assert error_code(response) == "unknown_persona"


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/results/0123456789abcdef0123456789abcdef",
        "/api/v1/results/0123456789abcdef0123456789abcdef/video.mp4",
        "/api/v1/results/not-an-id/audio.wav",
        "/api/v1/results/..%2F..%2Fetc/video.mp4",
        "/api/v1/results/%2E%2E/audio.wav",
        "/api/v1/results/..",
    ],
)
def test_unknown_or_malformed_result_is_404(client: httpx.Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert error_code(response) in ("not_found",)


def test_unknown_route_and_wrong_method_are_json(client: httpx.Client) -> None:
    missing = client.get("/api/v1/nothing-here")
    assert missing.status_code == 404 and error_code(missing) == "not_found"
    wrong = client.get(CONVERSATION)
    assert wrong.status_code == 405 and error_code(wrong) == "method_not_allowed"
    assert "POST" in wrong.headers["allow"]


def test_malformed_multipart_is_400(client: httpx.Client) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="text"\r\n\r\nhello'  # no closing boundary
    response = client.post("/api/v1/chat", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"})
    assert response.status_code == 400
    assert error_code(response) == "malformed_request"


def test_a_wrong_method_lists_every_method_of_the_path(client: httpx.Client) -> None:
    for path, methods in (
        ("/api/v1/personas", {"GET", "HEAD", "POST"}),
        ("/api/v1/personas/eileen", {"GET", "HEAD", "DELETE"}),
        ("/api/v1/live", {"GET", "HEAD", "POST"}),
    ):
        wrong = client.put(path)
        assert wrong.status_code == 405 and error_code(wrong) == "method_not_allowed"
        assert {m.strip() for m in wrong.headers["allow"].split(",")} == methods, (path, wrong.headers["allow"])


@pytest.mark.parametrize("size", [1_001, 70_000, 300_000])  # under and over a parser's part cap alike
@pytest.mark.parametrize("encoding", ["multipart", "urlencoded", "json"])
def test_an_over_long_text_field_is_422_naming_it_and_its_limit_at_any_size(
    client: httpx.Client, size: int, encoding: str
) -> None:
    text = "a" * size
    request = {
        "multipart": {"files": {"text": (None, text)}},
        "urlencoded": {"data": {"text": text}},
        "json": {"json": {"text": text}},
    }[encoding]
    response = client.post("/api/v1/chat", **request)  # type: ignore[arg-type]
    assert response.status_code == 422 and error_code(response) == "invalid_request", response.text
    message = response.json()["error"]["message"]
    assert "'text'" in message and "the limit is 1,000" in message, message


def test_an_empty_persona_is_422_not_the_default(client: httpx.Client) -> None:
    for route in (CONVERSATION, "/api/v1/chat"):
        response = client.post(route, data={"text": "Hello!", "persona": ""})
        assert response.status_code == 422 and "'persona'" in response.json()["error"]["message"], response.text


def test_a_file_part_named_by_rfc5987_filename_star_is_a_file(client: httpx.Client, planet_question: bytes) -> None:
    body = (
        b"--b\r\nContent-Disposition: form-data; name=\"audio\"; filename*=UTF-8''%E8%B3%AA%E5%95%8F.wav\r\n"
        b"Content-Type: audio/wav\r\n\r\n" + planet_question + b"\r\n--b--\r\n"
    )
    response = client.post(
        "/api/v1/transcribe", content=body, headers={"Content-Type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 200, response.text
    assert "planet" in response.json()["text"].lower()
