"""The served OpenAPI document tells the truth: real responses of every route, successes and errors, are
validated against it (status documented, content type, headers, body schema) with schemathesis' checks."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from live_server import API_KEYS, RESPONSE_CHECKS, Served, ServerProcess
from PIL import Image
from schemathesis.schemas import BaseSchema
from starlette.routing import Mount, Route

from avatar.config import PROJECT_ROOT, Settings
from avatar.server import create_app

pytestmark = pytest.mark.slow  # the real server with the embedded models

CHECKS = RESPONSE_CHECKS
Ask = Callable[..., httpx.Response]


def served_schema(server: Served) -> BaseSchema:
    return schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")


@pytest.fixture(scope="module")
def checked(server: ServerProcess) -> Iterator[tuple[Ask, dict[tuple[str, str], set[int]]]]:
    """``ask(method, template, url, **request)``: send a request, validate the response against the served
    document's operation for ``template``; and what was seen per operation."""
    schema = served_schema(server)
    seen: dict[tuple[str, str], set[int]] = {}
    with httpx.Client(base_url=server.base_url, timeout=120) as http:

        def ask(method: str, template: str, url: str, **request: Any) -> httpx.Response:
            response = http.request(method, url, **request)
            response.request.read()  # a multipart body is streamed; the checks look at what was sent
            schema[template][method].Case().validate_response(response, checks=CHECKS)
            seen.setdefault((method, template), set()).add(response.status_code)
            return response

        yield ask, seen


def test_every_route_is_documented(server: ServerProcess, settings: Settings) -> None:
    document = httpx.get(f"{server.base_url}/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    routes: dict[str, set[str]] = {}
    for route in create_app(settings).routes:
        if isinstance(route, Mount):  # /static: the page's files, not part of the API
            continue
        assert isinstance(route, Route) and route.methods is not None
        path = re.sub(r":\w+}", "}", route.path)  # {index:int} → {index}
        routes.setdefault(path, set()).update(route.methods - {"HEAD"})
    assert set(document["paths"]) == set(routes)
    for path, methods in routes.items():
        assert {m.lower() for m in methods} == set(document["paths"][path]), path


def test_the_validator_catches_a_response_that_breaks_the_document(server: ServerProcess) -> None:
    """The checks can fail: a real 200 body of another route is not a Health document."""
    schema = served_schema(server)
    personas = httpx.get(f"{server.base_url}/api/v1/personas")
    with pytest.raises(BaseExceptionGroup) as caught:
        schema["/healthz"]["GET"].Case().validate_response(personas, checks=CHECKS)
    assert "violates schema" in str(caught.value.exceptions[0])


def test_real_responses_match_the_document(
    checked: tuple[Ask, dict[tuple[str, str], set[int]]],
    planet_question: bytes,
    silence_wav: bytes,
    faceless_png: bytes,
) -> None:
    ask, seen = checked
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/api/v1/personas"):
        assert ask("GET", path, path).status_code == 200

    conv = "/api/v1/conversation"
    turn = ask("POST", conv, conv, data={"text": "Hello!"})
    assert turn.status_code == 200, turn.text
    assert ask("POST", conv, conv, data={"text": "Hi", "voice": "nobody"}).status_code == 422
    assert ask("POST", conv, conv, files={"audio": ("s.wav", silence_wav, "audio/wav")}).status_code == 422
    assert ask("POST", conv, conv, files={"audio": ("j.mp3", b"junk" * 50, "audio/mpeg")}).status_code == 400
    assert ask("POST", conv, conv, files={"audio": ("n.txt", b"hello", "text/plain")}).status_code == 415
    assert ask("POST", conv, conv, files={"audio": ("b.wav", b"\0" * 2**21, "audio/wav")}).status_code == 413
    assert ask("POST", conv, conv, data={"text": "Hi", "persona": "nobody"}).status_code == 404
    assert ask("POST", conv, conv, content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert ask("POST", conv, conv, json={"text": "Hi", "persona": "nobody"}).status_code == 404

    result_id = turn.json()["id"]
    summary = "/api/v1/results/{result_id}"
    assert ask("GET", summary, summary.format(result_id=result_id)).status_code == 200
    assert ask("GET", summary, summary.format(result_id="0" * 32)).status_code == 404
    video = "/api/v1/results/{result_id}/video.mp4"
    url = video.format(result_id=result_id)
    assert ask("GET", video, url).status_code == 200
    assert ask("GET", video, url, headers={"Range": "bytes=0-99"}).status_code == 206
    assert ask("GET", video, url, headers={"Range": "bytes=0-9,20-29"}).status_code == 206
    assert ask("GET", video, url, headers={"Range": "bytes=999999999-"}).status_code == 416
    assert ask("GET", video, url, headers={"Range": "pages=1"}).status_code == 400
    audio = "/api/v1/results/{result_id}/audio.wav"
    assert ask("GET", audio, audio.format(result_id=result_id)).status_code == 200

    transcribe = "/api/v1/transcribe"
    assert ask("POST", transcribe, transcribe, files={"audio": ("q.wav", planet_question, "audio/wav")}).is_success
    assert ask("POST", transcribe, transcribe, data={"language": "en"}).status_code == 422  # no file in it

    chat = "/api/v1/chat"
    assert ask("POST", chat, chat, data={"text": "Hi there!"}).status_code == 200
    assert ask("POST", chat, chat, json={"text": "🙂🙂"}).status_code == 422
    assert ask("POST", chat, chat, json={"text": "x" * 5000}).status_code == 422

    speak = "/api/v1/speak"
    assert ask("POST", speak, speak, data={"text": "Hello there."}).status_code == 200
    assert ask("POST", speak, speak, data={"text": "!!!"}).status_code == 422
    assert ask("POST", speak, speak, data={"text": "Hello there.", "voice": "jm_kumo"}).status_code == 200
    assert ask("POST", speak, speak, json={"text": "Hello there.", "voice": "nobody"}).status_code == 422

    voices = "/api/v1/voices"
    listed = ask("GET", voices, voices)
    assert listed.status_code == 200
    sample = "/api/v1/voices/{voice}/sample.wav"
    assert ask("GET", sample, listed.json()["voices"][1]["sample_url"]).status_code == 200
    assert ask("GET", sample, f"{voices}/nobody/sample.wav").status_code == 404

    animate = "/api/v1/animate"
    short = planet_question
    assert ask("POST", animate, animate, files={"audio": ("q.wav", short, "audio/wav")}).status_code == 200
    photo = {"audio": ("q.wav", short, "audio/wav"), "image": ("sky.png", faceless_png, "image/png")}
    assert ask("POST", animate, animate, files=photo).status_code == 422
    bomb = io.BytesIO()
    Image.new("1", (8000, 8000)).save(bomb, format="PNG")
    huge = {"audio": ("q.wav", short, "audio/wav"), "image": ("huge.png", bomb.getvalue(), "image/png")}
    assert ask("POST", animate, animate, files=huge).status_code == 400

    page = ask("GET", "/", "/")
    assert page.status_code == 200 and "<html" in page.text

    stream = "/api/v1/conversation/stream"
    streamed = ask("POST", stream, stream, data={"text": "Hello again!"})
    assert streamed.status_code == 200 and "event: done" in streamed.text, streamed.text[-500:]
    assert ask("POST", stream, stream, data={"text": "Hi", "video_format": "divx"}).status_code == 422
    streamed_id = next(line for line in streamed.text.splitlines() if line.startswith("data:"))[5:]
    streamed_id = json.loads(streamed_id)["id"]
    segment = "/api/v1/results/{result_id}/segments/{index}.m4s"
    assert ask("GET", segment, f"/api/v1/results/{streamed_id}/segments/0.m4s").status_code == 200
    assert ask("GET", segment, f"/api/v1/results/{streamed_id}/segments/9999.m4s").status_code == 404
    stop = "/api/v1/conversation/{turn_id}"
    assert ask("DELETE", stop, f"/api/v1/conversation/{streamed_id}").status_code == 404  # it has ended
    assert (
        ask("DELETE", stop, f"/api/v1/conversation/{streamed_id}?played=soon").status_code == 422
    )  # the query is checked first

    personas = "/api/v1/personas"
    portrait = (PROJECT_ROOT / "assets" / "personas" / "eileen" / "portrait.png").read_bytes()
    consent = {"consent": "true"}
    made = ask(
        "POST", personas, personas, files={"image": ("me.png", portrait, "image/png")}, data={"name": "Sam", **consent}
    )
    assert made.status_code == 201, made.text
    faceless = ask("POST", personas, personas, files={"image": ("sky.png", faceless_png, "image/png")}, data=consent)
    assert faceless.status_code == 422 and faceless.json()["error"]["code"] == "no_face"
    assert ask("POST", personas, personas, files={"image": ("me.png", portrait, "image/png")}).status_code == 422
    one = "/api/v1/personas/{persona}"
    name = made.json()["name"]
    assert ask("GET", one, f"{personas}/{name}").status_code == 200
    assert ask("GET", one, f"{personas}/nobody").status_code == 404
    for picture in ("/api/v1/personas/{persona}/image", "/api/v1/personas/{persona}/face.jpg"):
        assert ask("GET", picture, picture.format(persona=name)).status_code == 200
    assert ask("DELETE", one, f"{personas}/eileen").status_code == 422
    assert ask("DELETE", one, f"{personas}/{name}").status_code == 204

    live = "/api/v1/live"  # an answer needs a WebRTC peer: tests/live/test_server.py
    assert ask("GET", live, live).status_code == 200
    assert ask("POST", live, live, json={"sdp": "hello", "type": "offer"}).status_code == 400
    assert ask("POST", live, live, json={"sdp": "v=0", "type": "answer"}).status_code == 422
    assert ask("POST", live, live, content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415

    documented = {(m.upper(), p) for p, ops in served_schema_paths(checked) for m in ops}
    assert documented <= set(seen), f"routes never exercised: {documented - set(seen)}"


def served_schema_paths(checked: tuple[Ask, dict[tuple[str, str], set[int]]]) -> list[tuple[str, dict[str, Any]]]:
    ask, _ = checked
    return list(ask("GET", "/openapi.json", "/openapi.json").json()["paths"].items())


def test_guarded_responses_match_the_guarded_document(guarded_server: Served) -> None:
    """401 and 403 are documented where keys are configured, and answered as documented."""
    schema = served_schema(guarded_server)
    with httpx.Client(base_url=guarded_server.base_url, timeout=60) as http:
        responses = [
            ("/api/v1/chat", http.post("/api/v1/chat", data={"text": "Hi"})),
            ("/api/v1/personas", http.get("/api/v1/personas")),
            (
                "/api/v1/chat",
                http.post("/api/v1/chat", data={"text": "Hi"}, headers={"Origin": "https://evil.example"}),
            ),
            ("/api/v1/personas", http.get("/api/v1/personas", headers={"Authorization": f"Bearer {API_KEYS[0]}"})),
        ]
    assert [r.status_code for _, r in responses] == [401, 401, 403, 200]
    for template, response in responses:
        response.request.read()
        schema[template][response.request.method].Case().validate_response(response, checks=CHECKS)
