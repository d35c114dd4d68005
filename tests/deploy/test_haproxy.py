"""The shipped HAProxy configuration (deploy/haproxy/), run by Debian's haproxy in front of stand-in
replicas: small HTTP servers that answer, or that die on every request after reading it, as a replica
killed mid-request does. The balancer's own policy is what is tested here: which requests it retries,
which it never repeats, and that its own errors have the service's JSON shape. (The real replicas behind
it are tested in tests/scale.)"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from avatar.bench.cluster import HAPROXY_DIR, LoadBalancer, MissingProgramError, program
from avatar.bench.http_service import free_port


class StandIn(ThreadingHTTPServer):
    """A replica stand-in: /readyz is 200; any other request is answered ``{"replica": name}``, or, when
    ``dies``, read in full and then its connection is dropped without a byte of answer."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # HAProxy's health checks hang up before reading the answer: not worth a traceback

    def __init__(self, name: str, *, dies: bool) -> None:
        self.name = name
        self.dies = dies
        self.seen: list[tuple[str, str]] = []  # (method, path) of every request other than /readyz
        super().__init__(("127.0.0.1", 0), _Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: StandIn
    protocol_version = "HTTP/1.1"  # keep-alive, as uvicorn

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if self.path != "/readyz":
            self.server.seen.append((self.command, self.path))
            if self.server.dies:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
        body = json.dumps({"replica": self.server.name}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _answer


@pytest.fixture(scope="module", autouse=True)
def haproxy_installed() -> None:
    try:
        program("haproxy")
    except MissingProgramError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def stand_ins() -> Iterator[dict[str, StandIn]]:
    servers = {"dying": StandIn("dying", dies=True), "healthy": StandIn("healthy", dies=False)}
    yield servers
    for server in servers.values():
        server.close()


def _balancer(tmp_path: Path, servers: dict[str, int]) -> LoadBalancer:
    balancer = LoadBalancer(tmp_path / "haproxy", servers).start()
    return balancer


def _post_in_one_packet(balancer: LoadBalancer, text: str) -> bytes:
    """A POST whose head and body arrive together, so HAProxy holds it whole and could replay it."""
    body = f"text={text}".encode()
    head = (
        "POST /api/v1/conversation HTTP/1.1\r\nHost: avatar\r\nConnection: close\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", balancer.port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b"\r\n", 1)[0]


def _json_error(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert response.headers["content-type"] == "application/json"
    return str(body["error"]["code"])


def test_gets_are_retried_elsewhere_and_posts_never(tmp_path: Path, stand_ins: dict[str, StandIn]) -> None:
    balancer = _balancer(tmp_path, {name: s.port for name, s in stand_ins.items()})
    try:
        for name in stand_ins:
            balancer.wait_status(name, "UP", timeout=10)
        # One client connection, reused, as a browser or httpx keeps it: HAProxy must still answer.
        with httpx.Client(base_url=balancer.base_url, timeout=10) as http:
            gets = [http.get(f"/api/v1/results/{k}") for k in range(6)]
            posts = [http.post("/api/v1/conversation", data={"text": f"turn {k}"}) for k in range(6)]
        whole_posts = [_post_in_one_packet(balancer, f"whole {k}") for k in range(4)]
    finally:
        balancer.stop()
    dying, healthy = stand_ins["dying"], stand_ins["healthy"]
    # Every GET succeeded, from the healthy replica, though some were first sent to the dying one.
    assert [r.status_code for r in gets] == [200] * 6
    assert {r.headers["x-avatar-replica"] for r in gets} == {"healthy"}
    assert any(method == "GET" for method, _ in dying.seen), "no GET reached the dying replica: nothing was retried"
    # A POST that reached the dying replica is answered 502 in our shape, and never sent again.
    failed = [r for r in posts if r.status_code != 200]
    assert failed, "no POST reached the dying replica"
    assert {r.status_code for r in failed} == {502} and {_json_error(r) for r in failed} == {"replica_failed"}
    # Even a POST HAProxy holds whole (and so could replay) is not sent to a second replica.
    assert all(line.split()[1] in (b"200", b"502") for line in whole_posts), whole_posts
    whole_failed = sum(line.split()[1] == b"502" for line in whole_posts)
    assert whole_failed, "no one-packet POST reached the dying replica"
    dying_posts = [path for method, path in dying.seen if method == "POST"]
    healthy_posts = [path for method, path in healthy.seen if method == "POST"]
    assert len(dying_posts) == len(failed) + whole_failed
    assert len(healthy_posts) == 10 - len(failed) - whole_failed


def test_a_refused_connection_is_sent_to_another_replica_even_for_a_post(
    tmp_path: Path, stand_ins: dict[str, StandIn]
) -> None:
    """A replica that is gone refuses the connection: the request was never sent, so even a turn goes
    to the next replica; the dead one is taken out at its first refusal."""
    healthy = stand_ins["healthy"]
    balancer = _balancer(tmp_path, {"dead": free_port(), "healthy": healthy.port})
    try:
        balancer.wait_status("healthy", "UP", timeout=10)
        balancer.admin("disable health avatar/dead")  # keep it in rotation until traffic finds it dead
        balancer.admin("set server avatar/dead state ready")
        with httpx.Client(base_url=balancer.base_url, timeout=10) as http:
            posts = [http.post("/api/v1/conversation", data={"text": f"turn {k}"}) for k in range(4)]
        states = balancer.states()
    finally:
        balancer.stop()
    assert [r.status_code for r in posts] == [200] * 4
    assert len([m for m, _ in healthy.seen if m == "POST"]) == 4
    assert states["dead"]["status"].startswith("DOWN") or states["dead"]["status"].startswith("MAINT"), states


def test_no_replica_ready_is_a_json_503_with_retry_after(tmp_path: Path) -> None:
    balancer = _balancer(tmp_path, {"r1": free_port(), "r2": free_port()})
    try:
        balancer.wait_status("r1", "DOWN", timeout=10)
        balancer.wait_status("r2", "DOWN", timeout=10)
        response = httpx.post(f"{balancer.base_url}/api/v1/conversation", data={"text": "hi"}, timeout=10)
    finally:
        balancer.stop()
    assert response.status_code == 503 and _json_error(response) == "unavailable"
    assert response.headers["retry-after"].isdigit()


@pytest.mark.parametrize("path", sorted((HAPROXY_DIR / "errors").glob("*.http")), ids=lambda p: p.name)
def test_error_files_are_whole_http_answers_in_our_json_shape(path: Path) -> None:
    raw = path.read_bytes()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {path.stem} ")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message"} and error["code"].islower() and error["message"].endswith(".")
    if path.stem == "503":
        assert headers["Retry-After"].isdigit()


def test_every_error_haproxy_can_send_us_has_a_file() -> None:
    config = (HAPROXY_DIR / "haproxy.cfg").read_text()
    named = {line.split()[1] for line in config.splitlines() if line.strip().startswith("errorfile ")}
    files = {p.stem for p in (HAPROXY_DIR / "errors").glob("*.http")}
    assert named == files == {"400", "408", "500", "502", "503", "504"}
