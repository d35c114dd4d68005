"""A server's whole life on its own process: the port answers while loading, then ready; SIGTERM drains."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from live_server import READY_TIMEOUT_S, start_server

pytestmark = pytest.mark.slow  # drives the real server with the embedded models

GRACE_S = 30


def test_start_up_readiness_then_graceful_sigterm(
    tmp_path: Path, planet_question: bytes, prepared_models: Path
) -> None:
    server = start_server(tmp_path, AVATAR_SHUTDOWN_GRACE_SECONDS=str(GRACE_S))
    try:
        # --- start-up: poll from the moment the process exists.
        seen: list[tuple[int, dict[str, Any]]] = []
        not_ready: httpx.Response | None = None
        deadline = time.monotonic() + READY_TIMEOUT_S
        with httpx.Client(base_url=server.base_url, timeout=5) as http:
            while time.monotonic() < deadline:
                assert server.process.poll() is None, server.log_path.read_text()
                try:
                    response = http.get("/readyz")
                except httpx.TransportError:
                    time.sleep(0.05)  # not listening yet
                    continue
                seen.append((response.status_code, response.json()))
                if response.status_code == 200:
                    break
                if not_ready is None:
                    not_ready = http.post("/api/v1/chat", data={"text": "Are you there?"})
                time.sleep(0.1)
        statuses = [status for status, _ in seen]
        assert statuses[0] == 503 and statuses[-1] == 200, statuses
        loading = seen[0][1]
        assert loading["status"] == "loading"
        assert set(loading["models"]) == {"asr", "llm", "tts", "face"}
        assert {"state", "backend"} <= set(loading["models"]["asr"])
        assert seen[-1][1]["status"] == "ready"
        assert all(m["state"] == "ready" for m in seen[-1][1]["models"].values())
        assert not_ready is not None and not_ready.status_code == 503
        assert not_ready.json()["error"]["code"] == "not_ready"
        assert int(not_ready.headers["retry-after"]) >= 1  # while loading: when to ask again
        assert loading["reason"].startswith("loading")

        # --- shutdown: SIGTERM while a turn is in flight; the turn still completes.
        outcome: dict[str, Any] = {}

        def turn() -> None:
            with httpx.Client(base_url=server.base_url, timeout=120) as http:
                outcome["response"] = http.post(
                    "/api/v1/conversation", files={"audio": ("q.wav", planet_question, "audio/wav")}
                )
                outcome["at"] = time.monotonic()

        worker = threading.Thread(target=turn)
        worker.start()
        time.sleep(0.5)  # upload sent; the turn takes a few seconds
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        worker.join(timeout=GRACE_S)
        returncode = server.process.wait(timeout=GRACE_S)
        exited = time.monotonic()
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()

    assert outcome["response"].status_code == 200, outcome["response"].text
    assert outcome["at"] > signalled, "the turn had finished before the signal; nothing was in flight"
    assert returncode == 0, server.log_path.read_text()[-3000:]
    assert exited - signalled < GRACE_S
    events = [line["event"] for line in server.log_lines()]
    assert "models released" in events
    assert events.index("models released") > events.index("Shutting down")
    # The finished turn is still on disk for the next process to serve.
    assert (server.output_dir / outcome["response"].json()["id"] / "reply.mp4").is_file()


def test_a_turn_cut_off_by_the_grace_period_leaves_nothing(
    tmp_path: Path, planet_question: bytes, prepared_models: Path
) -> None:
    server = start_server(tmp_path, AVATAR_SHUTDOWN_GRACE_SECONDS="0")
    try:
        server.wait_ready()
        outcome: dict[str, Any] = {}

        def turn() -> None:
            with httpx.Client(base_url=server.base_url, timeout=120) as http:
                outcome["response"] = http.post(
                    "/api/v1/conversation", files={"audio": ("q.wav", planet_question, "audio/wav")}
                )

        worker = threading.Thread(target=turn)
        worker.start()
        deadline = time.monotonic() + 30
        while not server.staging_folders() and time.monotonic() < deadline:
            time.sleep(0.02)  # the turn is rendering once its staging folder exists
        assert server.staging_folders(), "the turn never started"
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        returncode = server.process.wait(timeout=GRACE_S)
        worker.join(timeout=GRACE_S)
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()
    assert outcome["response"].status_code == 503
    assert outcome["response"].json()["error"]["code"] == "shutting_down"
    assert returncode == 0
    assert server.result_folders() == set()
    assert server.staging_folders() == []
    assert "models released" in [line["event"] for line in server.log_lines()]


def test_a_wrong_setting_fails_at_start_up_naming_it(tmp_path: Path) -> None:
    server = start_server(tmp_path, AVATAR_DEFAULT_PERSONA="nobody")
    try:
        returncode = server.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise
    assert returncode != 0
    assert "nobody" in server.log_path.read_text()
