"""The voices: listed with a sample each, chosen per persona (persona.toml, POST /personas) or per request
(/speak, /conversation), an unknown one refused naming those there are, another language accepted and said."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from live_server import ServerProcess

from avatar import media
from avatar.bench.voice_eval import median_pitch_hz

pytestmark = pytest.mark.slow  # drives the real server with the embedded models

VOICES = "/api/v1/voices"
CONSENT = {"consent": "true"}


def _pitch(wav: bytes) -> float:
    return median_pitch_hz(media.decode_audio(wav, 24_000), 24_000)


def test_the_voices_are_listed_each_with_a_sample_that_sounds_its_gender(client: httpx.Client) -> None:
    listing = client.get(VOICES).json()
    assert listing["engine"] == "hibari" and listing["default"] == "heart"
    voices = {v["name"]: v for v in listing["voices"]}
    assert set(voices) == {"heart", "jm_kumo", "jf_gongitsune"}
    assert {(v["engine"], v["gender"], v["language"]) for v in voices.values()} == {
        ("hibari", "female", "en"),
        ("kokoro", "male", "en"),
        ("kokoro", "female", "en"),
    }
    pitch = {}
    for name, voice in voices.items():
        sample = client.get(voice["sample_url"])
        assert sample.status_code == 200 and sample.headers["content-type"] == "audio/wav"
        assert 1.5 < media.decode_audio(sample.content, 24_000).size / 24_000 < 8
        assert client.get(voice["sample_url"]).content == sample.content  # made once, kept
        pitch[name] = _pitch(sample.content)
    assert pitch["jm_kumo"] < 140 < min(pitch["heart"], pitch["jf_gongitsune"])  # a man's voice, two women's
    assert client.get(f"{VOICES}/nobody/sample.wav").status_code == 404


def test_speak_with_another_voice_and_an_unknown_one(client: httpx.Client) -> None:
    own = client.post("/api/v1/speak", data={"text": "I flew the shuttle twice."})
    assert own.status_code == 200 and own.headers["x-voice"] == "heart"
    other = client.post("/api/v1/speak", data={"text": "I flew the shuttle twice.", "voice": "jm_kumo"})
    assert other.status_code == 200 and other.headers["x-voice"] == "jm_kumo" and "x-voice-note" not in other.headers
    assert _pitch(other.content) < _pitch(own.content) - 50
    unknown = client.post("/api/v1/speak", data={"text": "Hello.", "voice": "nobody"})
    assert unknown.status_code == 422
    message = unknown.json()["error"]["message"]
    assert "nobody" in message and all(name in message for name in ("heart", "jm_kumo", "jf_gongitsune"))


def test_a_turn_speaks_with_the_voice_asked_for(client: httpx.Client) -> None:
    turn = client.post("/api/v1/conversation", data={"text": "Hello!", "voice": "jf_gongitsune"})
    assert turn.status_code == 200, turn.text
    body = turn.json()
    assert body["voice"] == "jf_gongitsune" and body["voice_note"] is None
    assert client.post("/api/v1/conversation", data={"text": "Hello!"}).json()["voice"] == "heart"
    refused = client.post("/api/v1/conversation", data={"text": "Hello!", "voice": "HAL"})
    assert refused.status_code == 422 and "jm_kumo" in refused.json()["error"]["message"]


def test_a_persona_made_from_a_photo_keeps_its_voice_and_is_told_of_another_language(
    client: httpx.Client, portrait: Path, server: ServerProcess
) -> None:
    photo = {"image": ("me.png", portrait.read_bytes(), "image/png")}
    made = client.post("/api/v1/personas", files=photo, data={"voice": "jm_kumo", **CONSENT})
    assert made.status_code == 201, made.text
    name = made.json()["name"]
    assert made.json()["voice"] == "jm_kumo" and "voice_note" not in made.json()
    assert 'voice = "jm_kumo"' in (server.output_dir / "personas" / name / "persona.toml").read_text()
    spoken = client.post("/api/v1/speak", data={"text": "Good morning to you.", "persona": name})
    assert spoken.headers["x-voice"] == "jm_kumo"
    assert _pitch(spoken.content) < 140
    # A French persona with an English voice: made, and the answer says what it will sound like.
    french = client.post("/api/v1/personas", files=photo, data={"voice": "heart", "language": "fr", **CONSENT})
    assert french.status_code == 201, french.text
    assert "fr" in french.json()["voice_note"] and "heart" in french.json()["voice_note"]
    said = client.post("/api/v1/speak", data={"text": "Bonjour.", "persona": french.json()["name"]})
    assert said.status_code == 200 and "fr" in said.headers["x-voice-note"]
    unknown = client.post("/api/v1/personas", files=photo, data={"voice": "nobody", **CONSENT})
    assert unknown.status_code == 422 and "jf_gongitsune" in unknown.json()["error"]["message"]
    # A voice sample (a file part named voice) is still taken as before.
    sample = io.BytesIO(media.wav_bytes(np.zeros(8_000, np.float32), 16_000))
    short = client.post("/api/v1/personas", files={**photo, "voice": ("v.wav", sample, "audio/wav")}, data=CONSENT)
    assert short.status_code == 422 and "voice sample is 0.5 s long" in short.json()["error"]["message"]
