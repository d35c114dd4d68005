"""Whose face is whose: with API keys, what a key made (a created persona, its photo and face, its
sessions, its results' summaries) is seen and removed only with that key (another gets 404, as if there
were none); the admin key sees and removes everything. With keys off, the list shows the bundled
personas only and a created one is reached by its unguessable name."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import ADMIN_KEY, API_KEYS, PUBLIC_URL, ServerProcess, error_code
from PIL import Image

pytestmark = pytest.mark.slow  # a real server with the embedded models

PERSONAS = "/api/v1/personas"
OWNER, OTHER = ({"Authorization": f"Bearer {key}"} for key in API_KEYS)
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture(scope="module")
def photo(portrait: Path) -> bytes:
    out = io.BytesIO()
    Image.open(portrait).convert("RGB").resize((320, 320)).save(out, format="JPEG")
    return out.getvalue()


def create(http: httpx.Client, photo: bytes, headers: dict[str, str] | None = None) -> dict[str, Any]:
    made = http.post(
        PERSONAS,
        files={"image": ("me.jpg", photo, "image/jpeg")},
        data={"name": "Sam", "consent": "true"},
        headers=headers,
    )
    assert made.status_code == 201, made.text
    return dict(made.json())


def listed(http: httpx.Client, headers: dict[str, str] | None = None) -> set[str]:
    response = http.get(PERSONAS, headers=headers)
    assert response.status_code == 200, response.text
    return {p["name"] for p in response.json()["personas"]}


def test_with_keys_a_persona_its_pictures_sessions_and_results_are_its_keys(
    guarded_server: ServerProcess, photo: bytes
) -> None:
    with httpx.Client(base_url=guarded_server.base_url, timeout=120) as http:
        made = create(http, photo, OWNER)
        name = made["name"]
        assert name in listed(http, OWNER) and name in listed(http, ADMIN)
        assert name not in listed(http, OTHER) and "eileen" in listed(http, OTHER)
        path = f"{PERSONAS}/{name}"
        for method in ("GET", "DELETE"):
            refused = http.request(method, path, headers=OTHER)
            assert refused.status_code == 404 and error_code(refused) == "unknown_persona", (method, refused.text)
        used = http.post("/api/v1/chat", data={"text": "Hello!", "persona": name}, headers=OTHER)
        assert used.status_code == 404 and error_code(used) == "unknown_persona"
        assert http.get(path, headers=OWNER).status_code == 200
        # The pictures: an <img src> sends no key, so the owner's listing gives URLs with a token.
        image_url = made["image_url"].removeprefix(PUBLIC_URL)
        assert "token=" in image_url and http.get(image_url).status_code == 200
        assert http.get(image_url.split("?")[0]).status_code == 404
        assert http.get(image_url.split("?")[0] + "?token=" + "0" * 32).status_code == 404
        assert http.get(image_url.split("?")[0], headers=OWNER).status_code == 200

        # A session is its key's: another key continuing it starts its own, and reads nothing back.
        first = http.post("/api/v1/chat", data={"text": "My name is Sam."}, headers=OWNER).json()
        session = first["session_id"]
        stolen = http.post("/api/v1/chat", data={"text": "What is my name?", "session_id": session}, headers=OTHER)
        assert stolen.status_code == 200 and stolen.json()["session_id"] != session
        again = http.post("/api/v1/chat", data={"text": "And now?", "session_id": session}, headers=OWNER)
        assert again.json()["session_id"] == session

        # A result's summary is its key's; its files stay reachable by their random URL.
        turn = http.post("/api/v1/conversation", data={"text": "Hello!", "persona": name}, headers=OWNER)
        assert turn.status_code == 200, turn.text
        summary = f"/api/v1/results/{turn.json()['id']}"
        assert http.get(summary, headers=OWNER).status_code == 200
        assert http.get(summary, headers=ADMIN).status_code == 200
        assert http.get(summary, headers=OTHER).status_code == 404
        assert http.get(summary).status_code == 401

        # The admin key removes anyone's persona.
        assert http.delete(path, headers=ADMIN).status_code == 204
        assert http.get(path, headers=OWNER).status_code == 404


def test_with_keys_off_the_list_shows_bundled_personas_only(server: ServerProcess, photo: bytes) -> None:
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        made = create(http, photo)
        assert made["name"] not in listed(http) and "eileen" in listed(http)
        assert http.get(f"{PERSONAS}/{made['name']}").status_code == 200  # by its unguessable name
        assert len(made["name"]) >= 18  # "u-" and 64 random bits
        assert http.delete(f"{PERSONAS}/{made['name']}").status_code == 204
