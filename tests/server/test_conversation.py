"""Whole turns over HTTP: spoken and typed questions, sessions, and the files a reply links to."""

from __future__ import annotations

import io
import json
from typing import Any

import c2pa
import httpx
import pytest
from live_server import ServerProcess, probe_mp4, wav_seconds

from avatar.provenance import AI_GENERATED

pytestmark = pytest.mark.slow  # drives the real server with the embedded models

CONVERSATION = "/api/v1/conversation"
STAGES = {"asr", "llm", "tts", "avatar", "mux", "total"}


@pytest.fixture(scope="module")
def spoken_turn(server: ServerProcess, planet_question: bytes) -> dict[str, Any]:
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        response = http.post(CONVERSATION, files={"audio": ("question.wav", planet_question, "audio/wav")})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_spoken_turn_summary(spoken_turn: dict[str, Any]) -> None:
    assert len(spoken_turn["id"]) == 32
    assert "planet" in spoken_turn["transcript"].lower()
    assert spoken_turn["reply"].strip()
    assert spoken_turn["persona"] == "eileen"
    assert STAGES <= set(spoken_turn["timings"])
    assert spoken_turn["audio_seconds"] > 0.5
    assert spoken_turn["video_url"].endswith(f"/api/v1/results/{spoken_turn['id']}/video.mp4")
    assert spoken_turn["audio_url"].endswith(f"/api/v1/results/{spoken_turn['id']}/audio.wav")


def test_spoken_turn_files_play(client: httpx.Client, spoken_turn: dict[str, Any]) -> None:
    video = client.get(spoken_turn["video_url"])
    assert video.status_code == 200
    assert video.headers["content-type"] == "video/mp4"
    assert video.headers["accept-ranges"] == "bytes"
    streams = probe_mp4(video.content)
    assert streams["video"] == ["h264"] and streams["audio"] == ["aac"]
    assert streams["frames"] >= 25 * spoken_turn["audio_seconds"] - 2
    # It says what it is: a C2PA manifest marking it AI-generated (avatar.provenance), which verifies.
    with c2pa.Reader("video/mp4", io.BytesIO(video.content)) as reader:
        report = json.loads(reader.json())
    assert AI_GENERATED in json.dumps(report["manifests"][report["active_manifest"]]["assertions"])
    assert {s["code"] for s in report.get("validation_status", [])} == {"signingCredential.untrusted"}

    audio = client.get(spoken_turn["audio_url"])
    assert audio.status_code == 200
    assert audio.headers["content-type"] == "audio/wav"
    assert wav_seconds(audio.content) == pytest.approx(spoken_turn["audio_seconds"], abs=0.01)


def test_result_summary_is_kept(client: httpx.Client, spoken_turn: dict[str, Any]) -> None:
    response = client.get(f"/api/v1/results/{spoken_turn['id']}")
    assert response.status_code == 200
    assert response.json() == spoken_turn


@pytest.mark.parametrize(
    ("header", "first", "last"),
    [("bytes=0-99", 0, 99), ("bytes=100-", 100, None), ("bytes=-500", None, None)],
)
def test_range_requests(
    client: httpx.Client, spoken_turn: dict[str, Any], header: str, first: int | None, last: int | None
) -> None:
    whole = client.get(spoken_turn["video_url"]).content
    size = len(whole)
    start = first if first is not None else size - 500
    end = last if last is not None else size - 1
    response = client.get(spoken_turn["video_url"], headers={"Range": header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{size}"
    assert response.content == whole[start : end + 1]


def test_unsatisfiable_range_is_416(client: httpx.Client, spoken_turn: dict[str, Any]) -> None:
    response = client.get(spoken_turn["audio_url"], headers={"Range": "bytes=999999999-"})
    assert response.status_code == 416


def test_typed_turns_keep_a_session(client: httpx.Client, followup_question: bytes) -> None:
    first = client.post(CONVERSATION, data={"text": "What is your favourite planet?", "persona": "eileen"})
    assert first.status_code == 200, first.text
    summary = first.json()
    assert summary["transcript"] is None
    assert "asr" not in summary["timings"] and {"llm", "tts", "avatar", "mux"} <= set(summary["timings"])

    # The follow-up is spoken: the session carries across both kinds of input.
    second = client.post(
        CONVERSATION,
        data={"session_id": summary["session_id"]},
        files={"audio": ("followup.wav", followup_question, "audio/wav")},
    )
    assert second.status_code == 200, second.text
    assert second.json()["session_id"] == summary["session_id"]
    assert second.json()["id"] != summary["id"]


def test_unknown_session_starts_a_new_one(client: httpx.Client) -> None:
    response = client.post(CONVERSATION, data={"text": "Hello there!", "session_id": "no-such-session"})
    assert response.status_code == 200, response.text
    session_id = response.json()["session_id"]
    assert session_id != "no-such-session" and len(session_id) == 32


def test_personas(client: httpx.Client) -> None:
    body = client.get("/api/v1/personas").json()
    assert body["default"] == "eileen"
    assert "eileen" in [p["name"] for p in body["personas"]]
