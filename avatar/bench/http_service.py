"""The real HTTP service in a child process on a free loopback port, and turns asked of it with httpx."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from avatar.bench.fixtures import BenchTurn
from avatar.bench.memory import peak_rss_mb
from avatar.bench.samples import TurnSample

HOST = "127.0.0.1"
CONVERSATION = "/api/v1/conversation"
STREAM = "/api/v1/conversation/stream"


def service_support() -> str | None:
    """None when the HTTP service exists in this checkout; otherwise why it cannot be benchmarked."""
    if importlib.util.find_spec("avatar.server") is None:
        return "not available: the HTTP service (avatar/server/) is not in this checkout yet"
    return None


def free_port() -> int:
    """A port nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ServerError(RuntimeError):
    """The service exited or never became ready."""


class ServerProcess:
    """``avatar serve`` as a child process; ``start`` returns the seconds from spawn to /readyz 200."""

    def __init__(self, work_dir: Path, *, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.work_dir = work_dir
        self.log_path = work_dir / "server.log"
        self._env = {**(env if env is not None else os.environ), "AVATAR_OUTPUT_DIR": str(work_dir / "results")}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.peak_rss_mb: float | None = None

    def start(self, timeout: float = 180.0) -> float:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        command = [sys.executable, "-m", "avatar", "serve", "--host", HOST, "--port", str(self.port)]
        started = time.perf_counter()
        self._proc = subprocess.Popen(command, env=self._env, stdout=self._log, stderr=subprocess.STDOUT)
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.perf_counter() - started < timeout:
                if self._proc.poll() is not None:
                    raise ServerError(f"the service exited with code {self._proc.returncode}: {self.log_tail()}")
                try:
                    if client.get("/readyz").status_code == 200:
                        return time.perf_counter() - started
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(0.05)
        raise ServerError(f"the service was not ready within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, chars: int = 600) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def sample_memory(self) -> float | None:
        """The child's peak resident memory so far, MiB (read while it is alive)."""
        if self._proc is not None:
            self.peak_rss_mb = peak_rss_mb(self._proc.pid) or self.peak_rss_mb
        return self.peak_rss_mb

    def stop(self, grace: float = 30.0) -> None:
        if self._proc is None:
            return
        self.sample_memory()
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        if self._log is not None:
            self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class WholeTurns:
    """Asks the service one spoken question per call and waits for the whole answer, as a client of the
    JSON route does: upload, the summary, then the MP4 (its first frame plays only once it is there)."""

    mode = "whole"

    def __init__(self, client: httpx.AsyncClient, questions: dict[str, bytes]) -> None:
        self.client = client
        self.questions = questions  # turn name → WAV bytes
        self.last_audio_url: str | None = None  # the reply WAV of the latest turn that succeeded

    async def __call__(self, turn: BenchTurn) -> TurnSample:
        clock = _UploadClock()
        try:
            response = await self.client.post(
                CONVERSATION,
                files={"audio": (f"{turn.name}.wav", self.questions[turn.name], "audio/wav")},
                extensions={"trace": clock.trace},
            )
            if response.status_code != 200:
                return _failed(turn, self.mode, clock, f"HTTP {response.status_code}: {_error_text(response)}")
            body: dict[str, Any] = response.json()
            video = await self.client.get(body["video_url"])
            video.raise_for_status()
            self.last_audio_url = str(body["audio_url"])
        except httpx.HTTPError as exc:
            return _failed(turn, self.mode, clock, f"{type(exc).__name__}: {exc}")
        wall = clock.since()
        return _sample(turn, self.mode, wall, body, first_frame=wall)


class StreamedTurns:
    """Asks for a streamed turn as the web page does: Server-Sent Events, each video segment fetched as
    soon as it is announced. The client's own clock says when each first thing reached it, counted
    from the end of its upload; ``first_frame`` is when the first segment had arrived (playable)."""

    mode = "streamed"

    def __init__(self, client: httpx.AsyncClient, questions: dict[str, bytes]) -> None:
        self.client = client
        self.questions = questions

    async def __call__(self, turn: BenchTurn) -> TurnSample:
        clock = _UploadClock()
        seen: dict[str, float] = {}
        fetches: list[asyncio.Task[None]] = []
        done: dict[str, Any] | None = None

        async def fetch(url: str, first: bool) -> None:
            (await self.client.get(url)).raise_for_status()
            if first:
                seen["first_frame"] = seen["first_audio"] = clock.since()

        try:
            files = {"audio": (f"{turn.name}.wav", self.questions[turn.name], "audio/wav")}
            async with self.client.stream("POST", STREAM, files=files, extensions={"trace": clock.trace}) as response:
                if response.status_code != 200:
                    await response.aread()
                    return _failed(turn, self.mode, clock, f"HTTP {response.status_code}: {_error_text(response)}")
                async for event, data in _sse(response):
                    moment = {"transcript": "first_transcript", "reply": "first_token", "segment": "segment_event"}
                    if event in moment:
                        seen.setdefault(moment[event], clock.since())
                    if event == "segment":
                        fetches.append(asyncio.create_task(fetch(str(data["url"]), not fetches)))
                    elif event == "error":
                        return _failed(turn, self.mode, clock, f"{data.get('code')}: {data.get('message')}")
                    elif event == "done":
                        done = data
            await asyncio.gather(*fetches)
        except httpx.HTTPError as exc:
            for task in fetches:
                task.cancel()
            return _failed(turn, self.mode, clock, f"{type(exc).__name__}: {exc}")
        if done is None:
            return _failed(turn, self.mode, clock, "the stream ended without a done event")
        sample = _sample(turn, self.mode, clock.since(), done, first_frame=seen.get("first_frame"))
        sample.client = seen
        return sample


class _UploadClock:
    """Seconds since the request body was completely sent (httpcore's trace says when)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    async def trace(self, name: str, info: dict[str, Any]) -> None:
        if name == "http11.send_request_body.complete":
            self.started = time.perf_counter()

    def since(self) -> float:
        return time.perf_counter() - self.started


async def _sse(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    event, data = "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


def _sample(turn: BenchTurn, mode: str, wall: float, body: dict[str, Any], first_frame: float | None) -> TurnSample:
    return TurnSample(
        turn=turn.name,
        mode=mode,
        wall=wall,
        timings={k: float(v) for k, v in body.get("timings", {}).items()},
        rtf={k: float(v) for k, v in body.get("rtf", {}).items()},
        audio_seconds=float(body.get("audio_seconds", 0.0)),
        first_frame=first_frame,
        reply=str(body.get("reply", "")),
        transcript=body.get("transcript"),
    )


def _failed(turn: BenchTurn, mode: str, clock: _UploadClock, error: str) -> TurnSample:
    return TurnSample(turn.name, mode, clock.since(), error=error)


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
