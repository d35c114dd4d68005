"""Each stage on its own over HTTP: transcribe, chat, speak, animate."""

from __future__ import annotations

import httpx
import pytest
from live_server import probe_mp4, wav_seconds

from avatar.config import PROJECT_ROOT

pytestmark = pytest.mark.slow  # drives the real server with the embedded models


def test_transcribe(client: httpx.Client, planet_question: bytes) -> None:
    response = client.post("/api/v1/transcribe", files={"audio": ("q.wav", planet_question, "audio/wav")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "favourite planet" in body["text"].lower().replace("favorite", "favourite")
    assert body["language"] == "en"
    assert body["segments"] and body["segments"][0]["end"] > body["segments"][0]["start"]
    assert body["audio_seconds"] > 1
    assert set(body["timings"]) == {"asr"}


def test_chat_keeps_a_session(client: httpx.Client) -> None:
    first = client.post("/api/v1/chat", data={"text": "Hello! Who are you?"})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["reply"].strip() and body["persona"] == "eileen"
    # JSON works too, for callers that are not forms.
    second = client.post("/api/v1/chat", json={"text": "And what do you do?", "session_id": body["session_id"]})
    assert second.status_code == 200, second.text
    assert second.json()["session_id"] == body["session_id"]


def test_speak(client: httpx.Client) -> None:
    response = client.post("/api/v1/speak", data={"text": "Hello from the space station.", "persona": "eileen"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/wav"
    seconds = wav_seconds(response.content)
    assert 1.0 < seconds < 6.0
    assert float(response.headers["x-audio-seconds"]) == seconds.__round__(3)


def test_animate_persona(client: httpx.Client, planet_question: bytes) -> None:
    response = client.post(
        "/api/v1/animate", data={"persona": "eileen"}, files={"audio": ("q.wav", planet_question, "audio/wav")}
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "video/mp4"
    streams = probe_mp4(response.content)
    assert streams["video"] == ["h264"] and streams["audio"] == ["aac"]
    assert abs(streams["frames"] - 25 * wav_seconds(planet_question)) <= 2
    # The same file stays downloadable (and seekable) under its result URL.
    kept = client.get(response.headers["content-location"], headers={"Range": "bytes=0-9"})
    assert kept.status_code == 206 and kept.content == response.content[:10]


def test_animate_uploaded_photo(client: httpx.Client, planet_question: bytes) -> None:
    photo = (PROJECT_ROOT / "assets" / "personas" / "eileen" / "portrait.png").read_bytes()
    files = {"audio": ("q.wav", planet_question, "audio/wav"), "image": ("me.png", photo, "image/png")}
    response = client.post("/api/v1/animate", files=files)
    assert response.status_code == 200, response.text
    assert probe_mp4(response.content)["video"] == ["h264"]
