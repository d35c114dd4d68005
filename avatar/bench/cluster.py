"""Several replicas of the service on loopback, the way a cluster runs them: Redis, HAProxy, N servers.

Everything here is a real program started as a child process on 127.0.0.1 and free ports: Debian's
``redis-server`` (persistence off) holds the conversations, Debian's ``haproxy`` balances with the
configuration shipped in ``deploy/haproxy/`` (active checks on ``/readyz``, retries of GETs only, our
JSON error bodies), and each replica is ``avatar serve`` sharing one results folder. The replica test
(tests/scale) and the replica benchmark (``python -m avatar.bench.replicas``) both build on it.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import redis

from avatar.bench.http_service import HOST, ServerProcess, free_port
from avatar.config import PROJECT_ROOT

HAPROXY_DIR = PROJECT_ROOT / "deploy" / "haproxy"
START_TIMEOUT_S = 20.0


class MissingProgramError(RuntimeError):
    """A program the cluster needs is not installed; the message says how to install it."""


def program(name: str) -> str:
    """The path of a Debian program (``/usr/sbin`` is not on every user's PATH)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin")
    if found is None:
        raise MissingProgramError(f"{name} is not installed: run `make system-deps` (Debian package {name}).")
    return found


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode}: {log.read_text(errors='replace')}")
        with socket.socket() as sock:
            if sock.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {HOST}:{port} within {START_TIMEOUT_S:g} s")


def _stop(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class RedisServer:
    """``redis-server`` on a free loopback port, persistence off, stopped on exit."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.url = f"redis://{HOST}:{self.port}/0"
        self.log_path = work_dir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        command = [
            program("redis-server"),
            "--bind", HOST, "--port", str(self.port), "--dir", str(self.work_dir),
            "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", str(self.log_path),
        ]  # fmt: skip
        self._proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait_for_port(self.port, self._proc, "redis-server", self.log_path)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)

    def stop(self) -> None:
        _stop(self._proc)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class LoadBalancer:
    """``haproxy`` with ``deploy/haproxy/haproxy.cfg`` in front of ``servers`` (name → port).

    The shipped file is used as it is: its addresses come from environment variables and the server
    lines, the only part that depends on where the replicas run, are appended to its backend.
    """

    def __init__(self, work_dir: Path, servers: Mapping[str, int]) -> None:
        self.work_dir = work_dir
        self.port = free_port()
        self.base_url = f"http://{HOST}:{self.port}"
        self.servers = dict(servers)
        self.config_path = work_dir / "haproxy.cfg"
        self.socket_path = work_dir / "admin.sock"
        self.log_path = work_dir / "haproxy.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def config(self) -> str:
        shipped = (HAPROXY_DIR / "haproxy.cfg").read_text()
        lines = [f"    server {name} {HOST}:{port}" for name, port in self.servers.items()]
        return shipped.rstrip() + "\n" + "\n".join(lines) + "\n"

    def start(self) -> LoadBalancer:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())
        env = {
            **os.environ,
            "AVATAR_LB_BIND": f"{HOST}:{self.port}",
            "AVATAR_LB_ERRORS": str(HAPROXY_DIR / "errors"),
            "AVATAR_LB_SOCKET": str(self.socket_path),
        }
        haproxy = program("haproxy")
        check = subprocess.run([haproxy, "-c", "-f", str(self.config_path)], env=env, capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy rejects {self.config_path}:\n{check.stdout}{check.stderr}")
        self._log = self.log_path.open("ab")
        # -db: stay in the foreground, so this process owns it and its log goes to the file.
        self._proc = subprocess.Popen(
            [haproxy, "-db", "-f", str(self.config_path)], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )
        self._wait_started()
        return self

    def _wait_started(self) -> None:
        # The admin socket answers once every listener is bound (a probe connection to the port itself
        # would be logged as a bad request).
        assert self._proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"haproxy exited with code {self._proc.returncode}: {self.log_path.read_text()}")
            try:
                if "Name: HAProxy" in self.admin("show info"):
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"haproxy did not start within {START_TIMEOUT_S:g} s: {self.log_path.read_text()}")

    def admin(self, command: str) -> str:
        """One command on HAProxy's runtime API (its admin socket)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket_path))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def states(self) -> dict[str, dict[str, Any]]:
        """Each server's status as HAProxy sees it (``UP``, ``DOWN``, ``UP 1/2``…), its current and total
        sessions and its last health-check result."""
        table = self.admin("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(table))
        return {
            row["svname"]: {
                "status": row["status"],
                "sessions_now": int(row["scur"] or 0),
                "sessions_total": int(row["stot"] or 0),
                "check": row["check_status"],
            }
            for row in rows
            if row["pxname"] == "avatar" and row["svname"] in self.servers
        }

    def wait_status(self, name: str, status: str, timeout: float = 60.0) -> float:
        """Seconds until HAProxy reports ``name`` as exactly ``status`` (``UP`` or ``DOWN``)."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if self.states()[name]["status"] == status:
                return time.monotonic() - started
            time.sleep(0.1)
        raise RuntimeError(f"haproxy did not report {name} {status} within {timeout:g} s: {self.states()}")

    def stop(self) -> None:
        _stop(self._proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LoadBalancer:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


@dataclass
class Cluster:
    """Redis, ``replicas`` services sharing ``output_dir`` and Redis, and HAProxy in front of them."""

    work_dir: Path
    replicas: int
    env: Mapping[str, str] = field(default_factory=dict)
    redis_server: RedisServer = field(init=False)
    servers: dict[str, ServerProcess] = field(init=False, default_factory=dict)
    balancer: LoadBalancer = field(init=False)

    def __post_init__(self) -> None:
        self.output_dir = self.work_dir / "results"
        self.redis_server = RedisServer(self.work_dir / "redis")
        for index in range(1, self.replicas + 1):
            self.servers[f"r{index}"] = self._server(f"r{index}")
        self.balancer = LoadBalancer(self.work_dir / "haproxy", {n: s.port for n, s in self.servers.items()})

    def _server(self, name: str, port: int | None = None) -> ServerProcess:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AVATAR_")},
            **self.env,
            "AVATAR_REDIS_URL": self.redis_server.url,
            "AVATAR_REPLICA_ID": name,
        }
        return ServerProcess(self.work_dir / name, env=env, port=port, output_dir=self.output_dir)

    def start(self, timeout: float = 240.0) -> dict[str, float]:
        """Start everything; the seconds each replica took to be ready (they load side by side)."""
        self.redis_server.start()
        for server in self.servers.values():
            server.spawn()
        ready = {name: server.wait_ready(timeout) for name, server in self.servers.items()}
        self.balancer.start()
        for name in self.servers:
            self.balancer.wait_status(name, "UP")
        return ready

    def kill(self, name: str) -> None:
        self.servers[name].kill()

    def restart(self, name: str) -> None:
        """A new process for a killed replica, on its old port (HAProxy's checks find it there)."""
        old = self.servers[name]
        old.kill()
        self.servers[name] = self._server(name, port=old.port)
        self.servers[name].spawn()

    def stop(self) -> None:
        for step in (self.balancer.stop, *(s.stop for s in self.servers.values()), self.redis_server.stop):
            try:
                step()
            except Exception:  # noqa: BLE001 - stop the rest regardless
                continue

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
