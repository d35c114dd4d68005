"""The real HTTP service in a child process on a free loopback port, and turns asked of it with httpx."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import httpx

from avatar.bench.fixtures import BenchTurn
from avatar.bench.memory import peak_rss_mb
from avatar.bench.samples import TurnSample

HOST = "127.0.0.1"
CONVERSATION = "/api/v1/conversation"


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
    """``avatar serve`` as a child process; ``start`` returns the seconds from spawn to /readyz 200.

    ``port`` and ``output_dir`` are chosen when not given; replicas sharing one results folder pass it,
    and a replica restarted in place passes its old port.
    """

    def __init__(
        self,
        work_dir: Path,
        *,
        env: dict[str, str] | None = None,
        port: int | None = None,
        output_dir: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.work_dir = work_dir
        self.log_path = work_dir / "server.log"
        output_dir = output_dir or work_dir / "results"
        self._env = {**(env if env is not None else os.environ), "AVATAR_OUTPUT_DIR": str(output_dir)}
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._spawned = 0.0
        self.peak_rss_mb: float | None = None

    def start(self, timeout: float = 180.0) -> float:
        self.spawn()
        return self.wait_ready(timeout)

    def spawn(self) -> None:
        """Start the process and return at once (its models load meanwhile)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        command = [sys.executable, "-m", "avatar", "serve", "--host", HOST, "--port", str(self.port)]
        self._spawned = time.perf_counter()
        self._proc = subprocess.Popen(command, env=self._env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> float:
        """Seconds from spawn to /readyz 200; ServerError if the process exits or is not ready in time."""
        if self._proc is None:
            raise ServerError("spawn() the service first")
        with httpx.Client(base_url=self.base_url, timeout=2.0) as client:
            while time.perf_counter() - self._spawned < timeout:
                if self._proc.poll() is not None:
                    raise ServerError(f"the service exited with code {self._proc.returncode}: {self.log_tail()}")
                try:
                    if client.get("/readyz").status_code == 200:
                        return time.perf_counter() - self._spawned
                except httpx.TransportError:
                    pass  # not listening yet
                time.sleep(0.05)
        raise ServerError(f"the service was not ready within {timeout:.0f} s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: the process dies at once, as in a crash or an evicted pod (nothing drains)."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        self._forget()

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
        self._forget()

    def _forget(self) -> None:
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class HttpTurns:
    """Asks the service one spoken question per call, the way a browser would: upload, then fetch the video."""

    def __init__(self, client: httpx.AsyncClient, questions: dict[str, bytes]) -> None:
        self.client = client
        self.questions = questions  # turn name → WAV bytes
        self.last_audio_url: str | None = None  # the reply WAV of the latest turn that succeeded

    async def __call__(self, turn: BenchTurn) -> TurnSample:
        started = time.perf_counter()
        try:
            response = await self.client.post(
                CONVERSATION, files={"audio": (f"{turn.name}.wav", self.questions[turn.name], "audio/wav")}
            )
            if response.status_code != 200:
                return TurnSample(
                    turn.name,
                    "sequential",
                    time.perf_counter() - started,
                    error=f"HTTP {response.status_code}: {_error_text(response)}",
                )
            body: dict[str, Any] = response.json()
            video = await self.client.get(body["video_url"])
            video.raise_for_status()
            self.last_audio_url = str(body["audio_url"])
        except httpx.HTTPError as exc:
            return TurnSample(
                turn.name, "sequential", time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}"
            )
        wall = time.perf_counter() - started
        return TurnSample(
            turn=turn.name,
            mode="sequential",
            wall=wall,
            timings={k: float(v) for k, v in body.get("timings", {}).items()},
            rtf={k: float(v) for k, v in body.get("rtf", {}).items()},
            audio_seconds=float(body.get("audio_seconds", 0.0)),
            first_frame=wall,  # the whole video must arrive before its first frame can play
            reply=str(body.get("reply", "")),
            transcript=body.get("transcript"),
        )


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return response.text[:200]
