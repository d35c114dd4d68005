"""Slow and idle clients, on real sockets against the real server (the guarded one: 2 s deadlines,
2000 bytes/s minimum upload rate, at most 40 connections)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from live_server import (
    API_KEYS,
    BODY_TIMEOUT_S,
    HEADER_TIMEOUT_S,
    MAX_CONNECTIONS,
    MIN_UPLOAD_RATE,
    Served,
)

pytestmark = pytest.mark.slow  # a real server (in this process) with the embedded models

MARGIN_S = 3.0  # scheduling slack on a shared 2-core machine; the deadlines themselves are 2 s
AUTH = f"Authorization: Bearer {API_KEYS[0]}\r\n"


@contextmanager
def connection(server: Served, timeout: float = 15.0) -> Iterator[socket.socket]:
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        yield sock


def closed_by_server(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (a timeout here fails the test)."""
    data = b""
    while True:
        try:
            more = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not more:
            return data
        data += more


def status_and_body(reply: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


def test_an_idle_connection_is_closed(guarded_server: Served) -> None:
    with connection(guarded_server) as sock:
        started = time.monotonic()
        assert closed_by_server(sock) == b""  # nothing to answer: just closed
        assert time.monotonic() - started < HEADER_TIMEOUT_S + MARGIN_S


def test_slowloris_headers_are_cut_off(guarded_server: Served) -> None:
    """A request head sent a byte at a time (each byte resets no timer) is cut off at the deadline."""
    head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Padding: " + b"a" * 200 + b"\r\n\r\n"
    with connection(guarded_server) as sock:
        started = time.monotonic()
        sent = 0
        try:
            for byte in head:
                sock.sendall(bytes([byte]))
                sent += 1
                time.sleep(0.1)
            reply = closed_by_server(sock)
        except OSError:  # broken pipe or reset: the server closed while we were still sending
            reply = b""
        elapsed = time.monotonic() - started
    assert sent < len(head), f"the server waited for the whole slow head and answered {reply[:40]!r}"
    assert elapsed < HEADER_TIMEOUT_S + MARGIN_S


@pytest.mark.parametrize("byte_every_s", [None, 0.2])  # a stalled body; one at 5 bytes/s
def test_a_slow_body_is_408_and_closed(guarded_server: Served, byte_every_s: float | None) -> None:
    head = (
        "POST /api/v1/chat HTTP/1.1\r\nHost: test\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: 5000\r\n{AUTH}\r\ntext="
    ).encode()
    with connection(guarded_server) as sock:
        sock.sendall(head)
        started = time.monotonic()
        reply = b""
        if byte_every_s is not None:
            sock.settimeout(byte_every_s)
            while time.monotonic() - started < BODY_TIMEOUT_S + MARGIN_S and not reply:
                try:
                    sock.sendall(b"a")
                    reply = sock.recv(65536)
                except TimeoutError:
                    continue
            sock.settimeout(15)
        reply += closed_by_server(sock)
        elapsed = time.monotonic() - started
    status, body = status_and_body(reply)
    assert status == 408 and body["error"]["code"] == "request_timeout"  # type: ignore[index]
    assert b"connection: close" in reply.lower()
    assert elapsed < BODY_TIMEOUT_S + MARGIN_S


def test_a_steady_upload_above_the_minimum_rate_goes_through(guarded_server: Served) -> None:
    """~8 kB/s for 3 s (past the 2 s body deadline, above 2000 bytes/s): read whole, then judged
    (not audio: 400 invalid_audio, after the last byte)."""
    part = b'--b\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
    payload = b"\x01" * 24_000
    body = part + payload + b"\r\n--b--\r\n"
    head = (
        "POST /api/v1/transcribe HTTP/1.1\r\nHost: test\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        f"Content-Length: {len(body)}\r\n{AUTH}\r\n"
    ).encode()
    assert len(payload) / 3 > 2 * MIN_UPLOAD_RATE
    with connection(guarded_server) as sock:
        sock.sendall(head)
        for start in range(0, len(body), 2000):
            sock.sendall(body[start : start + 2000])
            time.sleep(0.25)
        reply = sock.recv(65536)
    status, answer = status_and_body(reply)
    assert status == 400 and answer["error"]["code"] == "invalid_audio"  # type: ignore[index]


def test_many_idle_sockets_are_reaped_and_the_cap_holds(guarded_server: Served) -> None:
    """200 idle connections: past the cap a request is told 503 busy (JSON) instead of being served
    alongside them; within the head deadline they are all closed and the server serves again."""
    sockets = []
    with connection(guarded_server) as first:
        sockets.append(first)
        host, port = first.getpeername()[:2]
        for _ in range(199):
            sockets.append(socket.create_connection((host, port), timeout=15))
        try:
            with connection(guarded_server) as late:
                late.sendall(f"GET /api/v1/personas HTTP/1.1\r\nHost: test\r\n{AUTH}\r\n".encode())
                status, body = status_and_body(closed_by_server(late))
            assert status == 503 and body["error"]["code"] == "busy"  # type: ignore[index]
            assert str(MAX_CONNECTIONS) in body["error"]["message"]  # type: ignore[index]
            # The probes are answered all the same, with their own bodies: a liveness probe must not
            # fail (a restart) because a client holds idle sockets.
            with httpx.Client(base_url=guarded_server.base_url, timeout=10, headers={"Connection": "close"}) as http:
                assert http.get("/healthz").json() == {"status": "ok"}
                ready = http.get("/readyz")
                assert ready.status_code == 200 and ready.json()["status"] == "ready"
                metrics = http.get("/metrics", headers={"Authorization": f"Bearer {API_KEYS[0]}"})
                assert metrics.status_code == 200 and "avatar_" in metrics.text

            deadline = time.monotonic() + HEADER_TIMEOUT_S + MARGIN_S
            for sock in sockets:
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                assert closed_by_server(sock) == b""
        finally:
            for sock in sockets[1:]:
                sock.close()
    with httpx.Client(base_url=guarded_server.base_url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200


def test_keep_alive_clients_are_served_across_requests(guarded_server: Served) -> None:
    """The head deadline restarts after each response: a client that comes back within it on the same
    connection is served; one that dawdles longer finds it closed and reconnects (httpx does)."""
    with httpx.Client(base_url=guarded_server.base_url, timeout=10) as http:
        for pause in (0.0, HEADER_TIMEOUT_S / 2, HEADER_TIMEOUT_S + 1.0):
            time.sleep(pause)
            assert http.get("/healthz").status_code == 200
