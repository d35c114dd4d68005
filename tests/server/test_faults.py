"""Faults injected into the real backends of a real server (AVATAR_FAULTS): the turn degrades instead of
failing, a model that keeps failing or hangs turns /readyz to 503 naming it, and both recover."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import ServerProcess, serving

pytestmark = pytest.mark.slow

CONVERSATION = "/api/v1/conversation"


def _serve(tmp_path_factory: pytest.TempPathFactory, name: str, **env: str) -> Iterator[ServerProcess]:
    yield from serving(tmp_path_factory.mktemp(name), AVATAR_HEALTH_CHECK_SECONDS="1", **env)


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory, prepared_models: Path) -> Iterator[ServerProcess]:
    """The language model fails three calls running, the face two (after two good chunks)."""
    yield from _serve(tmp_path_factory, "failing", AVATAR_FAULTS="llm:raise:count=3,face:oom:skip=2:count=2")


@pytest.fixture(scope="module")
def hanging(tmp_path_factory: pytest.TempPathFactory, prepared_models: Path) -> Iterator[ServerProcess]:
    """Recognition hangs once for 8 s (past a 1 s limit); the voice fails once."""
    yield from _serve(
        tmp_path_factory,
        "hanging",
        AVATAR_FAULTS="asr:hang:seconds=8:count=1,tts:raise:count=1",
        AVATAR_STAGE_TIMEOUT_SECONDS="1",
    )


def _ready(http: httpx.Client) -> tuple[int, dict[str, Any]]:
    response = http.get("/readyz")
    return response.status_code, response.json()


def _wait(http: httpx.Client, status: int, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = _ready(http)
        if code == status:
            return body
        assert time.monotonic() < deadline, (code, body)
        time.sleep(0.2)


def test_a_failing_model_degrades_turns_then_readiness_until_it_recovers(failing: ServerProcess) -> None:
    with httpx.Client(base_url=failing.base_url, timeout=120) as http:
        first = http.post(CONVERSATION, data={"text": "Tell me about the Moon."})
        assert first.status_code == 200, first.text
        turn = first.json()
        codes = [d["code"] for d in turn["degraded"]]
        assert codes[0] == "llm_fallback" and "injected fault" in turn["degraded"][0]["reason"]
        assert "face_failed" in codes and "out of memory" in turn["degraded"][1]["reason"]
        assert turn["reply"] == "Sorry, I lost my train of thought there. Could you ask me that again?"
        video = http.get(turn["video_url"])  # a still picture speaks: the video still plays, to the end
        assert video.status_code == 200 and len(video.content) > 1000
        assert _ready(http)[0] == 200  # one failure is a bad moment, not an unhealthy model
        for _ in range(2):
            again = http.post(CONVERSATION, data={"text": "And the stars?"})
            assert again.status_code == 200 and again.json()["degraded"][0]["code"] == "llm_fallback"
        body = _wait(http, 503, timeout=5)
        assert body["status"] == "unhealthy" and "llm model failing" in body["reason"], body
        assert body["models"]["llm"]["health"] == "failing" and body["models"]["llm"]["failures_in_a_row"] == 3
        # Turns are still answered meanwhile (the fallback), and the health check brings the model back.
        recovered = _wait(http, 200)
        assert recovered["models"]["llm"]["health"] == "ok"
        good = http.post(CONVERSATION, data={"text": "Hello!"})
        assert good.status_code == 200 and good.json()["degraded"] == [], good.json()["degraded"]
    assert failing.wait_for_log(event="model recovered", kind="llm")


def test_a_hung_model_times_out_and_is_reported_until_it_returns(
    hanging: ServerProcess, planet_question: bytes
) -> None:
    with httpx.Client(base_url=hanging.base_url, timeout=120) as http:
        started = time.monotonic()
        stuck = http.post(CONVERSATION, files={"audio": ("q.wav", planet_question, "audio/wav")})
        assert stuck.status_code == 504 and stuck.json()["error"]["code"] == "model_timeout", stuck.text
        assert time.monotonic() - started < 7  # answered at the limit, not when the call returned
        assert hanging.staging_folders() == []
        body = _wait(http, 503, timeout=2)
        assert body["status"] == "unhealthy" and body["models"]["asr"]["health"] == "hung"
        refused = http.post(CONVERSATION, data={"text": "Hello?"})
        assert refused.status_code == 503 and "asr" in refused.json()["error"]["message"]
        assert int(refused.headers["retry-after"]) >= 1
        _wait(http, 200, timeout=30)  # the call returned: the model answers again
        # The voice fails on the first piece: the reply comes as text alone, with no video or audio.
        turn = http.post(CONVERSATION, data={"text": "Tell me about the Moon, please."}).json()
        # (the reply is sampled: a refusal is replaced by the fallback line, which the voice fails on instead)
        codes = [d["code"] for d in turn["degraded"]]
        assert codes[-1] == "tts_failed" and set(codes) <= {"llm_fallback", "tts_failed"}, turn
        assert turn["reply"] and turn["video_url"] is None and turn["audio_url"] is None and turn["segments"] == 0
        assert http.get(f"/api/v1/results/{turn['id']}").json()["video_url"] is None
        assert http.get(f"/api/v1/results/{turn['id']}/video.mp4").status_code == 404
        spoken = http.post(CONVERSATION, data={"text": "And the Sun?"}).json()  # the voice is back
        # (the reply itself is sampled: a refusal is spoken as the fallback line, which is no voice failure)
        assert "tts_failed" not in [d["code"] for d in spoken["degraded"]], spoken
        assert spoken["audio_url"] and http.get(spoken["video_url"]).status_code == 200
