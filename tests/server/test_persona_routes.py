"""Bring your own photo: a persona from an uploaded portrait, usable at once in every route."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from live_server import ServerProcess
from PIL import Image

pytestmark = pytest.mark.slow  # drives the real server with the embedded models

PERSONAS = "/api/v1/personas"
CONSENT = {"consent": "true"}  # the uploader may use the photo


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def photo(portrait: Path) -> bytes:
    """Someone's holiday snapshot: the portrait smaller, on a wider canvas."""
    face = Image.open(portrait).convert("RGB").resize((360, 360))
    canvas = Image.new("RGB", (800, 560), (70, 110, 150))
    canvas.paste(face, (300, 120))
    return jpeg(canvas)


@pytest.fixture(scope="module")
def created(server: ServerProcess, photo: bytes) -> dict[str, Any]:
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        response = http.post(
            PERSONAS, files={"image": ("me.jpg", photo, "image/jpeg")}, data={"name": "Sam", **CONSENT}
        )
    assert response.status_code == 201, response.text
    body = dict(response.json())
    assert response.headers["location"] == f"{PERSONAS}/{body['name']}"
    return body


def test_the_photo_becomes_a_persona(client: httpx.Client, created: dict[str, Any], server: ServerProcess) -> None:
    assert created["name"].startswith("p-") and created["display_name"] == "Sam"
    assert created["created"] and created["expires"] > 0 and created["faces_found"] == 1
    listing = client.get(PERSONAS).json()
    assert listing["default"] == "eileen"
    names = [p["name"] for p in listing["personas"]]
    assert names[0] == "eileen" and created["name"] not in names  # keys off: reached by its name only
    assert client.get(f"{PERSONAS}/{created['name']}").json()["display_name"] == "Sam"
    folder = server.output_dir / "personas" / created["name"]
    assert sorted(p.name for p in folder.iterdir()) == ["persona.toml", "portrait.jpg"]
    face = client.get(f"{PERSONAS}/{created['name']}/face.jpg")
    assert face.status_code == 200 and face.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(face.content)).size == (512, 512)
    photo = client.get(created["image_url"])
    assert photo.status_code == 200 and photo.headers["content-type"] == "image/jpeg"


def test_the_new_persona_answers(client: httpx.Client, created: dict[str, Any], server: ServerProcess) -> None:
    # Made, its prompt is read into the model's cache while the user gets ready to speak.
    server.wait_for_log(timeout=60, event="persona prompt read ahead", persona=created["name"])
    response = client.post("/api/v1/conversation", data={"text": "Hello, who are you?", "persona": created["name"]})
    assert response.status_code == 200, response.text
    turn = response.json()
    assert turn["persona"] == created["name"] and turn["reply"]
    assert client.get(turn["video_url"]).status_code == 200


def test_a_photo_without_a_face_is_refused_and_leaves_nothing(
    client: httpx.Client, faceless_png: bytes, server: ServerProcess
) -> None:
    before = set((server.output_dir / "personas").iterdir())
    response = client.post(PERSONAS, files={"image": ("wall.png", faceless_png, "image/png")}, data=CONSENT)
    assert response.status_code == 422 and response.json()["error"]["code"] == "no_face"
    assert "face" in response.json()["error"]["message"].lower()
    assert set((server.output_dir / "personas").iterdir()) == before


def test_with_two_faces_the_largest_is_used(client: httpx.Client, portrait: Path) -> None:
    face = Image.open(portrait).convert("RGB")
    canvas = Image.new("RGB", (900, 500), (40, 40, 40))
    canvas.paste(face.resize((420, 420)), (20, 40))
    canvas.paste(face.resize((200, 200)), (620, 150))
    response = client.post(PERSONAS, files={"image": ("two.jpg", jpeg(canvas), "image/jpeg")}, data=CONSENT)
    assert response.status_code == 201, response.text
    assert response.json()["faces_found"] == 2 and "largest" in response.json()["note"]
    assert client.delete(f"{PERSONAS}/{response.json()['name']}").status_code == 204
    assert client.get(f"{PERSONAS}/{response.json()['name']}").status_code == 404


@pytest.mark.parametrize(
    ("files", "data", "status", "code"),
    [
        ({"image": ("x.png", b"not a picture at all", "image/png")}, {}, 400, "invalid_image"),
        ({"image": ("x.txt", b"hello", "text/plain")}, {}, 415, "unsupported_media_type"),
        ({}, {"name": "Nobody"}, 422, "invalid_request"),
        (None, {"name": "x" * 65}, 422, "invalid_request"),
        (None, {"name": "bad\x00name"}, 422, "invalid_request"),
        (None, {"language": "english please"}, 422, "invalid_request"),
        (None, {"system_prompt": "y" * 2001}, 422, "invalid_request"),
        (None, {"consent": "false"}, 422, "invalid_request"),
        (None, {"consent": ""}, 422, "invalid_request"),
    ],
)
def test_bad_uploads_get_clear_errors(
    client: httpx.Client, photo: bytes, files: Any, data: dict[str, str], status: int, code: str
) -> None:
    files = {"image": ("me.jpg", photo, "image/jpeg")} if files is None else files
    response = client.post(PERSONAS, files=files or None, data={**CONSENT, **data})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_a_voice_sample_is_checked(client: httpx.Client, photo: bytes, spoken_wav, silence_wav: bytes) -> None:
    image = {"image": ("me.jpg", photo, "image/jpeg")}
    short = client.post(PERSONAS, files={**image, "voice": ("v.wav", spoken_wav("Hi."), "audio/wav")}, data=CONSENT)
    assert short.status_code == 422 and "at least" in short.json()["error"]["message"]
    quiet = np.zeros(24_000 * 4, np.float32)
    from avatar import media

    silent = client.post(
        PERSONAS, files={**image, "voice": ("v.wav", media.wav_bytes(quiet, 24_000), "audio/wav")}, data=CONSENT
    )
    assert silent.status_code == 422 and silent.json()["error"]["code"] == "no_speech"
    sample = spoken_wav("This is my voice. I am reading a few sentences so that it can be cloned well.")
    good = client.post(PERSONAS, files={**image, "voice": ("v.wav", sample, "audio/wav")}, data=CONSENT)
    assert good.status_code == 201 and good.json()["has_voice_sample"]


def test_bundled_personas_cannot_be_removed(client: httpx.Client) -> None:
    response = client.delete(f"{PERSONAS}/eileen")
    assert response.status_code == 422 and "bundled" in response.json()["error"]["message"]
    assert client.delete(f"{PERSONAS}/p-0000000000000000").status_code == 404
    assert client.get(f"{PERSONAS}/../etc/passwd").status_code == 404


def test_a_persona_knows_what_it_is_given(client: httpx.Client, photo: bytes, server: ServerProcess) -> None:
    image = {"image": ("me.jpg", photo, "image/jpeg")}
    about = "I am Ada. I was born in Lyon in 1961, and I have kept bees on the hill above the town since 1990."
    response = client.post(PERSONAS, files=image, data={"name": "Ada", "knowledge": about, **CONSENT})
    assert response.status_code == 201, response.text
    made = response.json()
    assert made["knowledge"] == {"chars": len(about), "passages": 1}
    assert client.get(f"{PERSONAS}/{made['name']}").json()["knowledge"]["chars"] == len(about)
    folder = server.output_dir / "personas" / made["name"]
    assert (folder / "knowledge.md").read_text(encoding="utf-8").strip() == about  # beside the photo
    # The model is given it: the persona's reply is written from a prompt that holds it (the answer itself
    # is the model's; the grounded eval measures how often it is right).
    chat = client.post("/api/v1/chat", data={"text": "Where were you born?", "persona": made["name"]})
    assert chat.status_code == 200 and chat.json()["reply"]
    # As a Markdown file part, long enough to be searched per question rather than given whole.
    labels = "\n\n".join(
        f"# Room {i}\nRoom {i} holds {i * 3} paintings of the sea by painter number {i}." for i in range(80)
    )
    long = client.post(
        PERSONAS, files={**image, "knowledge": ("labels.md", labels.encode(), "text/markdown")}, data=CONSENT
    )
    assert long.status_code == 201, long.text
    assert long.json()["knowledge"]["chars"] == len(labels.strip()) and long.json()["knowledge"]["passages"] == 80
    # Empty knowledge is no knowledge.
    empty = client.post(PERSONAS, files=image, data={"knowledge": "   ", **CONSENT})
    assert empty.status_code == 201 and empty.json()["knowledge"] == {"chars": 0, "passages": 0}


@pytest.mark.parametrize(
    ("knowledge", "status", "code", "says"),
    [
        ({"data": {"knowledge": "x" * 50_001}}, 422, "invalid_request", "50,000"),
        ({"data": {"knowledge": "é" * 140_000}}, 422, "invalid_request", "50,000"),  # past the field's bytes too
        ({"files": {"knowledge": ("a.md", b"x" * 60_000, "text/markdown")}}, 422, "invalid_request", "50,000"),
        ({"files": {"knowledge": ("a.txt", b"caf\xe9 au lait", "text/plain")}}, 400, "malformed_request", "UTF-8"),
    ],
)
def test_bad_knowledge_is_refused_and_leaves_nothing(
    client: httpx.Client,
    photo: bytes,
    server: ServerProcess,
    knowledge: dict[str, Any],
    status: int,
    code: str,
    says: str,
) -> None:
    before = set((server.output_dir / "personas").iterdir())
    files = {"image": ("me.jpg", photo, "image/jpeg"), **knowledge.get("files", {})}
    response = client.post(PERSONAS, files=files, data={**CONSENT, **knowledge.get("data", {})})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and says in error["message"], error
    assert set((server.output_dir / "personas").iterdir()) == before


def test_a_photo_sent_without_consent_is_refused_and_leaves_nothing(
    client: httpx.Client, photo: bytes, server: ServerProcess
) -> None:
    before = set((server.output_dir / "personas").iterdir())
    response = client.post(PERSONAS, files={"image": ("me.jpg", photo, "image/jpeg")}, data={"name": "Sam"})
    assert response.status_code == 422 and "consent=true" in response.json()["error"]["message"]
    assert set((server.output_dir / "personas").iterdir()) == before
