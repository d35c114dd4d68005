"""A bounded queue for the models: past the limit a request hears 503 busy at once, with Retry-After."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from anyio.from_thread import BlockingPortal
from in_process import InProcessServer, in_process
from live_server import sse_events

from avatar.runtime import Runtime

pytestmark = pytest.mark.slow  # drives the real server with the embedded models

CONVERSATION = "/api/v1/conversation"
STREAM = "/api/v1/conversation/stream"


@pytest.fixture(scope="module")
def one_waiting(
    tmp_path_factory: pytest.TempPathFactory, model_loop: BlockingPortal, runtime: Runtime
) -> Iterator[InProcessServer]:
    """A server on which one request may run and one more wait (live mode off: its idle face, drawn in
    the background after start-up, would take the models between the requests counted here). Only an
    app setting differs: in this process, on the models already loaded."""
    queue_dir = tmp_path_factory.mktemp("queue")
    yield from in_process(model_loop, runtime, queue_dir, AVATAR_MAX_QUEUED_REQUESTS="1", AVATAR_MAX_LIVE_SESSIONS="0")


def _queue(http: httpx.Client) -> dict[str, int]:
    response = http.get("/readyz")
    body = response.json()
    # Ready (200) while there is room; a full queue makes the replica unready (503 busy) until it drains.
    full = body["queue"]["running"] == 1 and body["queue"]["waiting"] >= body["queue"]["limit"]
    assert (response.status_code, body["status"]) == ((503, "busy") if full else (200, "ready")), body
    return dict(body["queue"])


def test_past_the_limit_a_request_is_told_to_retry(one_waiting: InProcessServer, planet_question: bytes) -> None:
    answers: dict[str, httpx.Response] = {}

    def ask(name: str, **request: object) -> None:
        with httpx.Client(base_url=one_waiting.base_url, timeout=120) as http:
            answers[name] = http.post(CONVERSATION, **request)  # type: ignore[arg-type]

    with httpx.Client(base_url=one_waiting.base_url, timeout=120) as http:
        assert _queue(http) == {"running": 0, "waiting": 0, "limit": 1}
        # A first duration to estimate from (a turn may take long on a busy machine).
        http.post(CONVERSATION, data={"text": "Hello!"}, timeout=120).raise_for_status()
        running = threading.Thread(
            target=ask, args=("running",), kwargs={"files": {"audio": ("q.wav", planet_question)}}
        )
        running.start()
        queued = threading.Thread(target=ask, args=("queued",), kwargs={"data": {"text": "And then?"}})
        deadline = time.monotonic() + 30
        while _queue(http)["running"] == 0:
            assert time.monotonic() < deadline, "the first turn never started"
            time.sleep(0.02)
        queued.start()
        while _queue(http)["waiting"] == 0:
            assert time.monotonic() < deadline, "the second request never queued"
            time.sleep(0.02)

        unready = http.get("/readyz")
        assert unready.status_code == 503 and unready.json()["status"] == "busy"
        assert "AVATAR_MAX_QUEUED_REQUESTS=1" in unready.json()["reason"]
        assert int(unready.headers["retry-after"]) >= 1
        busy = http.post(CONVERSATION, data={"text": "Me too?"})
        assert busy.status_code == 503
        assert busy.json()["error"]["code"] == "busy"
        assert "AVATAR_MAX_QUEUED_REQUESTS=1" in busy.json()["error"]["message"]
        assert int(busy.headers["retry-after"]) >= 1
        # The per-stage endpoints share the queue.
        assert http.post("/api/v1/chat", data={"text": "Me too?"}).json()["error"]["code"] == "busy"

        running.join()
        queued.join()
        assert answers["running"].status_code == 200 and answers["queued"].status_code == 200
        assert _queue(http) == {"running": 0, "waiting": 0, "limit": 1}
        assert http.post(CONVERSATION, data={"text": "Now?"}).status_code == 200
    refused = [line for line in one_waiting.log_lines() if line.get("event") == "busy; request refused"]
    assert len(refused) == 2 and refused[0]["waiting"] == 1


def test_streams_arriving_together_past_the_limit_are_refused_with_503_before_any_event(
    one_waiting: InProcessServer, planet_question: bytes
) -> None:
    """The JSON route's refusal, for the stream: a 503 busy with Retry-After, never a 200 whose only
    event is an error saying busy. Several at once: each must take its place before it answers."""
    answers: list[tuple[int, str, list[tuple[str, dict[str, Any]]]]] = []
    start = threading.Barrier(4)

    def stream(text: str) -> None:
        with httpx.Client(base_url=one_waiting.base_url, timeout=120) as http:
            start.wait()
            with http.stream("POST", STREAM, data={"text": text}) as response:
                events = list(sse_events(response)) if response.status_code == 200 else []
                answers.append((response.status_code, response.headers.get("retry-after", ""), events))
                response.read()

    with httpx.Client(base_url=one_waiting.base_url, timeout=120) as http:
        running = threading.Thread(
            target=http.post, args=(CONVERSATION,), kwargs={"files": {"audio": ("q.wav", planet_question)}}
        )
        running.start()
        deadline = time.monotonic() + 30
        while _queue(http)["running"] == 0:
            assert time.monotonic() < deadline, "the first turn never started"
            time.sleep(0.02)
        streams = [threading.Thread(target=stream, args=(f"Question {k}?",)) for k in range(4)]
        for thread in streams:
            thread.start()
        for thread in streams:
            thread.join()
        running.join()
    assert sorted(status for status, _, _ in answers) == [200, 503, 503, 503], answers
    for status, retry_after, events in answers:
        if status == 503:
            assert int(retry_after) >= 1
        else:
            assert events[-1][0] == "done" and not any(name == "error" for name, _ in events), events
