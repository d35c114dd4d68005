"""The real service in a subprocess (``python -m avatar serve``), and helpers to check what it returns.

The server's stderr (JSON log lines, as it is not a terminal) goes to a file the tests read.
Imported by name: pytest puts this folder on ``sys.path`` (it is not a package).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import httpx
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from avatar.bench.sse import EventReader
from avatar.config import PROJECT_ROOT
from avatar.server.live.ice import use_host_addresses

# schemathesis' checks of a response against the served OpenAPI document: no 5xx, a documented status,
# content type and headers, a body of the documented schema.
RESPONSE_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

READY_TIMEOUT_S = 180.0
MAX_UPLOAD_MB = 1  # small, so the 413 tests send little

# The guarded server (conftest.guarded_server): every access and slow-client guard configured.
API_KEYS = ("first-key-0123456789abcdef", "second-key-fedcba9876543210")
ADMIN_KEY = "admin-key-0123456789abcdef0123"
ALLOWED_ORIGIN = "https://app.example.test"
PUBLIC_URL = "https://avatar.example.test/base"
HEADER_TIMEOUT_S = 2.0
BODY_TIMEOUT_S = 2.0
MIN_UPLOAD_RATE = 2000
MAX_CONNECTIONS = 40
GUARDED_ENV = {
    "AVATAR_API_KEYS": ",".join(API_KEYS),
    "AVATAR_ADMIN_API_KEYS": ADMIN_KEY,
    "AVATAR_CORS_ORIGINS": ALLOWED_ORIGIN,
    "AVATAR_PUBLIC_URL": PUBLIC_URL,
    "AVATAR_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT_S),
    "AVATAR_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT_S),
    "AVATAR_MIN_UPLOAD_BYTES_PER_SECOND": str(MIN_UPLOAD_RATE),
    "AVATAR_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Served:
    """A running service a test talks to over HTTP, its JSON log lines in ``log_path`` and its results
    in ``output_dir``: a server process, or one in the test process (in_process.py)."""

    base_url: str
    output_dir: Path
    log_path: Path

    def log_lines(self) -> list[dict[str, Any]]:
        """The server's JSON log lines so far (native libraries' own stderr lines are skipped)."""
        lines = []
        for raw in self.log_path.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                try:
                    lines.append(json.loads(raw))
                except ValueError:
                    pass
        return lines

    def wait_for_log(self, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The first log line whose fields include ``match``, waiting for it up to ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if all(line.get(k) == v for k, v in match.items()):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {match} within {timeout} s")

    def result_folders(self) -> set[str]:
        return {p.name for p in self.output_dir.iterdir() if not p.name.startswith(".")}

    def staging_folders(self) -> list[Path]:
        """Turns being made (or left behind) in any replica's staging folder."""
        return list((self.output_dir / ".staging").glob("*/*"))


@dataclass
class ServerProcess(Served):
    process: subprocess.Popen[bytes]
    base_url: str
    output_dir: Path
    log_path: Path

    def wait_listening(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the port answers (the models may still be loading)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                httpx.get(f"{self.base_url}/healthz", timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"server not listening within {timeout} s:\n{self.log_path.read_text()[-4000:]}")

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"server not ready within {timeout} s:\n{self.log_path.read_text()[-4000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(workdir: Path, **env: str) -> ServerProcess:
    """Start ``python -m avatar serve`` on a free port; returns at once (the models load meanwhile)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    output_dir = workdir / "results"
    log_path = workdir / "server.log"
    environ = {
        # A developer's own AVATAR_* settings must not change the server under test.
        **{k: v for k, v in os.environ.items() if not k.startswith("AVATAR_")},
        "AVATAR_OUTPUT_DIR": str(output_dir),
        "AVATAR_MAX_UPLOAD_MB": str(MAX_UPLOAD_MB),
        # Shorter replies keep each turn quick; the path through every stage is the same.
        "AVATAR_LLM_MAX_NEW_TOKENS": "32",
        **env,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "avatar", "serve", "--host", "127.0.0.1", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return ServerProcess(process, f"http://127.0.0.1:{port}", output_dir, log_path)


@contextmanager
def live_mode_server(workdir: Path, **env: str) -> Iterator[ServerProcess]:
    """``serving``, with live (WebRTC) connections kept on loopback (this process's clients' too)."""
    use_host_addresses(["127.0.0.1"])
    yield from serving(workdir, AVATAR_LIVE_HOST_ADDRESSES="127.0.0.1", **env)


def probe_mp4(data: bytes) -> dict[str, Any]:
    """Stream codecs and frame count of an MP4 held in memory (decoding every frame proves it plays)."""
    with av.open(io.BytesIO(data), mode="r") as container:
        video = [s.codec_context.name for s in container.streams.video]
        audio = [s.codec_context.name for s in container.streams.audio]
        frames = len(list(container.decode(video=0)))
    return {"video": video, "audio": audio, "frames": frames}


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as wav:
        return wav.getnframes() / wav.getframerate()


def error_code(response: httpx.Response) -> str:
    """The error code of a JSON error response, checking the body has exactly the documented shape."""
    body = response.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return str(body["error"]["code"])


def sse_events(response: httpx.Response) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event, data) of a Server-Sent Events response as they arrive (keep-alive comments skipped)."""
    reader = EventReader()
    for line in response.iter_lines():
        if (event := reader.feed(line)) is not None:
            yield event


def serving(workdir: Path, **env: str) -> Iterator[ServerProcess]:
    """A started, ready server for a fixture (``yield from serving(...)``), stopped afterwards. With live
    mode on, also settled: the default persona's idle face, drawn in the background once the models
    are ready, is done, so the first request a test sends is not queued behind it."""
    server = start_server(workdir, **env)
    try:
        server.wait_ready()
        if env.get("AVATAR_MAX_LIVE_SESSIONS") != "0":  # drawn, or failed (a test may break the face)
            deadline = time.monotonic() + 120
            while not any(line.get("event") in ("idle loop ready", "idle loop failed") for line in server.log_lines()):
                assert time.monotonic() < deadline, "live mode's idle face was neither drawn nor failed in 120 s"
                time.sleep(0.1)
        yield server
    finally:
        server.stop()


def listening_tcp_ports(pid: int) -> set[int]:
    """The TCP ports process ``pid`` listens on (its sockets' inodes looked up in /proc/net/tcp*)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # state 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
