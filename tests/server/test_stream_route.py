"""Streamed turns over HTTP (Server-Sent Events) and the three ways to stop one: DELETE, the client
going away, and a newer turn of the same session. Each stop frees the models at once and leaves no
files; the next turn starts with nothing ahead of it."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from anyio.from_thread import BlockingPortal
from in_process import InProcessServer, in_process
from live_server import Served, ServerProcess, sse_events

from avatar.runtime import Runtime
from avatar.server.conversation import EVENTS_AHEAD, _Events

pytestmark = pytest.mark.slow  # drives the real server with the embedded models

STREAM = "/api/v1/conversation/stream"
STORY = "Tell me the whole story of your life, from childhood to today, in detail."


@pytest.fixture(scope="module")
def talkative(
    tmp_path_factory: pytest.TempPathFactory, model_loop: BlockingPortal, runtime: Runtime
) -> Iterator[InProcessServer]:
    """A server whose replies may run long (so that a stop lands in the middle of one): only the
    pipeline's settings differ, so it runs in this process on the models already loaded."""
    talkative_dir = tmp_path_factory.mktemp("talkative")
    yield from in_process(
        model_loop, runtime, talkative_dir, AVATAR_LLM_MAX_SENTENCES="40", AVATAR_LLM_MAX_NEW_TOKENS="400"
    )


@pytest.fixture(scope="module")
def storyteller(talkative: InProcessServer, portrait: Path) -> str:
    """A persona told to tell long stories: its replies run for many sentences."""
    prompt = (
        "You are Grandma Rose, a storyteller talking out loud with a visitor. Whatever you are asked, you answer "
        "with a long, detailed story of at least thirty sentences, speaking as I."
    )
    created = httpx.post(
        f"{talkative.base_url}/api/v1/personas",
        files={"image": ("rose.png", portrait.read_bytes(), "image/png")},
        data={"name": "Rose", "system_prompt": prompt, "consent": "true"},
        timeout=120,
    )
    assert created.status_code == 201, created.text
    return str(created.json()["name"])


def streamed(http: httpx.Client, **request: Any) -> list[tuple[str, dict[str, Any]]]:
    with http.stream("POST", STREAM, **request) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(sse_events(response))


def test_events_come_in_order_and_segments_play_gap_free(server: ServerProcess, planet_question: bytes) -> None:
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        seen: list[tuple[str, dict[str, Any]]] = []
        published_early: list[int] = []
        with http.stream("POST", STREAM, files={"audio": ("q.wav", planet_question, "audio/wav")}) as response:
            for event, data in sse_events(response):
                seen.append((event, data))
                if event == "segment" and data["index"] == 0:
                    # While the first segment is out, the whole video does not exist yet: it is streaming.
                    turn_id = seen[0][1]["id"]
                    published_early.append(http.get(f"/api/v1/results/{turn_id}/video.mp4").status_code)
        names = [event for event, _ in seen]
        assert names[:3] == ["queued", "started", "transcript"] and names[-1] == "done", names
        assert names.index("reply") < names.index("segment")
        assert published_early == [404]
        queued, done = seen[0][1], seen[-1][1]
        assert queued["position"] == 0 and len(queued["session_id"]) == 32
        assert "planet" in seen[2][1]["text"].lower()
        assert done["id"] == queued["id"] and done["transcript"] == seen[2][1]["text"]
        for stamp in ("first_transcript", "first_token", "first_audio", "first_frame", "total"):
            assert 0 < done["timings"][stamp] <= done["timings"]["total"]
        segments = [data for event, data in seen if event == "segment"]
        assert [s["index"] for s in segments] == list(range(done["segments"]))
        stream = b"".join(http.get(s["url"]).content for s in segments)
        # The segments end to end are one video as long as the reply (a frame, plus AAC's 21 ms priming).
        with av.open(io.BytesIO(stream), mode="r") as container:
            frames = list(container.decode(video=0))
        assert len(frames) == round(done["audio_seconds"] * 25)
        assert abs(frames[-1].time + 0.04 - done["audio_seconds"]) <= 0.04 + 0.025
        # ...and the finished file is an ordinary MP4 with its index up front.
        whole = http.get(done["video_url"])
        assert whole.status_code == 200 and whole.content[4:8] == b"ftyp"
        assert whole.content.find(b"moov") < whole.content.find(b"mdat")
        assert http.get(done["video_url"], headers={"Range": "bytes=0-99"}).status_code == 206


def test_a_bad_request_is_a_plain_error_before_any_event(client: httpx.Client) -> None:
    response = client.post(STREAM, data={"text": "Hi", "persona": "nobody"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_persona"
    response = client.post(STREAM, data={"text": "Hi", "video_format": "divx"})
    assert response.status_code == 422 and "h264" in response.json()["error"]["message"]


def test_no_speech_is_an_error_event(client: httpx.Client, silence_wav: bytes) -> None:
    events = streamed(client, files={"audio": ("s.wav", silence_wav, "audio/wav")})
    assert [e for e, _ in events] == ["queued", "started", "error"]
    assert events[-1][1]["code"] == "no_speech"


def _first_segment(events: Iterator[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Read events up to the first segment; the queued event's data (the turn's id and session)."""
    queued: dict[str, Any] = {}
    for event, data in events:
        if event == "queued":
            queued = data
        if event == "segment":
            return queued
        assert event not in ("done", "error"), (event, data)
    raise AssertionError("the stream ended before its first segment")


def _next_turn_starts_at_once(http: httpx.Client, session_id: str | None = None, persona: str | None = None) -> None:
    """With the stopped turn gone, a new turn has nobody ahead of it and completes."""
    deadline = time.monotonic() + 20
    while http.get("/readyz").json()["queue"]["running"]:
        assert time.monotonic() < deadline, "the stopped turn still holds the models"
        time.sleep(0.05)
    data = {"text": "Hello! Please answer in one sentence."}
    data |= {"session_id": session_id} if session_id else {}
    data |= {"persona": persona} if persona else {}
    events = streamed(http, data=data)
    assert events[0][0] == "queued" and events[0][1]["position"] == 0
    assert events[-1][0] == "done"


def _left_nothing(server: Served, turn_id: str) -> None:
    """No result, and (once the stopped turn's clean-up has run, a moment after it stopped) no staging."""
    assert turn_id not in server.result_folders()
    deadline = time.monotonic() + 10
    while server.staging_folders():
        assert time.monotonic() < deadline, server.staging_folders()
        time.sleep(0.05)


def test_delete_stops_the_turn(talkative: InProcessServer, storyteller: str) -> None:
    with httpx.Client(base_url=talkative.base_url, timeout=120) as http:
        with http.stream("POST", STREAM, data={"text": STORY, "persona": storyteller}) as response:
            events = sse_events(response)
            queued = _first_segment(events)
            stopped = http.delete(f"/api/v1/conversation/{queued['id']}", params={"played": "0.5"})
            assert stopped.status_code == 200 and stopped.json() == {"id": queued["id"], "status": "cancelled"}
            rest = list(events)
        assert rest[-1][0] == "error" and rest[-1][1]["code"] == "cancelled", rest[-1]
        _left_nothing(talkative, queued["id"])
        line = talkative.wait_for_log(event="turn cancelled", reason="stopped by the client")
        assert line["heard_s"] == 0.5 and line["heard"].endswith("…")
        # Stopping it again, or a turn that does not exist, is a clear 404.
        again = http.delete(f"/api/v1/conversation/{queued['id']}")
        assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
        assert http.delete("/api/v1/conversation/../../etc").status_code == 404
        assert (
            http.delete(f"/api/v1/conversation/{queued['id']}", params={"played": "-1"}).status_code == 422
        )  # the query is checked first
        _next_turn_starts_at_once(http, queued["session_id"], storyteller)


def test_a_finished_reply_stopped_while_it_plays_keeps_what_was_heard(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        # A reply of the model's own (one that fell back to the persona's line is not kept in the history,
        # so there would be nothing to trim): the sampled model is asked until it gives one.
        for question in ("Tell me about your first flight in two sentences.", "What was it like to fly the shuttle?"):
            events = streamed(http, data={"text": question})
            done = events[-1][1]
            if not any(d["code"] == "llm_fallback" for d in done.get("degraded", [])):
                break
        assert events[-1][0] == "done" and done["audio_seconds"] > 1.0, done
        assert not any(d["code"] == "llm_fallback" for d in done.get("degraded", [])), done
        # Made in full; the client stops the video 0.4 s in: the history keeps the reply up to there.
        stopped = http.delete(f"/api/v1/conversation/{done['id']}", params={"played": "0.4"})
        assert stopped.status_code == 200, stopped.text
        body = stopped.json()
        assert body["id"] == done["id"] and body["status"] == "finished"
        # (the heard part may be a single word: "I…" of "I flew on STS-63…")
        assert body["heard"].endswith("…") and done["reply"].startswith(body["heard"].split()[0].rstrip("…"))
        assert len(body["heard"].split()) < len(done["reply"].split())
        line = server.wait_for_log(event="finished turn heard in part", turn_id=done["id"])
        assert line["heard"] == body["heard"] and line["heard_s"] == 0.4
        # Once only; without `played` there is nothing to stop; a newer turn of the session is not rewritten.
        assert http.delete(f"/api/v1/conversation/{done['id']}", params={"played": "0.2"}).status_code == 404
        older = streamed(http, data={"text": "Hi!", "session_id": done["session_id"]})[-1][1]
        assert http.delete(f"/api/v1/conversation/{older['id']}").status_code == 404
        # A newer turn that is recorded (a reply that fell back to the persona's line is not kept, and the
        # older turn would then still be the newest): the sampled model is asked until one is.
        for question in ("How are you?", "What do you like to do?", "Do you miss flying?"):
            newer = streamed(http, data={"text": question, "session_id": done["session_id"]})[-1][1]
            if not any(d["code"] == "llm_fallback" for d in newer.get("degraded", [])):
                break
        else:
            pytest.fail("every newer reply fell back to the persona's line: no newer turn was recorded")
        assert http.delete(f"/api/v1/conversation/{older['id']}", params={"played": "0.1"}).status_code == 404


def test_a_client_going_away_stops_the_turn(talkative: InProcessServer, storyteller: str) -> None:
    with httpx.Client(base_url=talkative.base_url, timeout=120) as http:
        with http.stream("POST", STREAM, data={"text": STORY, "persona": storyteller}) as response:
            queued = _first_segment(sse_events(response))
        # Leaving the block closed the connection.
        line = talkative.wait_for_log(event="turn cancelled", reason="the client disconnected", timeout=30)
        assert line["heard_s"] > 0
        _left_nothing(talkative, queued["id"])
        _next_turn_starts_at_once(http)


def test_a_new_turn_in_the_same_session_interrupts_the_old_one(talkative: InProcessServer, storyteller: str) -> None:
    with httpx.Client(base_url=talkative.base_url, timeout=120) as http:
        first_events: list[tuple[str, dict[str, Any]]] = []
        with http.stream("POST", STREAM, data={"text": STORY, "persona": storyteller}) as response:
            events = sse_events(response)
            queued = _first_segment(events)
            second: list[list[tuple[str, dict[str, Any]]]] = []
            interrupting = {"text": "Stop, please. How are you?", "session_id": queued["session_id"]}
            barge = threading.Thread(
                target=lambda: second.append(
                    streamed(
                        httpx.Client(base_url=talkative.base_url, timeout=120),
                        data=interrupting | {"persona": storyteller},
                    )
                )
            )
            barge.start()
            first_events = list(events)
            barge.join(120)
        assert first_events[-1][0] == "error" and first_events[-1][1]["code"] == "cancelled"
        assert "newer turn" in first_events[-1][1]["message"]
        assert second and second[0][-1][0] == "done"
        assert second[0][-1][1]["session_id"] == queued["session_id"]
        _left_nothing(talkative, queued["id"])
        # The history holds the interrupted question with the part of the reply that was heard.
        line = talkative.wait_for_log(event="turn cancelled", reason="interrupted by a newer turn of the same session")
        assert line["heard"]


def test_a_turn_never_waits_to_hand_events_to_a_client_that_has_gone() -> None:
    async def scenario() -> None:
        events = _Events()
        for index in range(EVENTS_AHEAD):
            await events.put("reply", {"index": index})
        blocked = asyncio.ensure_future(events.put("reply", {"index": EVENTS_AHEAD}))
        await asyncio.sleep(0.05)
        assert not blocked.done()  # a client that reads slowly holds the turn back ...
        events.close()  # ... until it has gone: then the turn goes on (to its stop)
        await asyncio.wait([blocked], timeout=2)
        assert blocked.done()
        left = events.queue.qsize()
        await events.put("segment", {"index": 0})  # later events are dropped
        assert events.queue.qsize() == left <= 1

    asyncio.run(scenario())
