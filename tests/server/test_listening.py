"""The service listens on the one port it was asked for: no model, helper or library opens another."""

from __future__ import annotations

import httpx
from live_server import ServerProcess, listening_tcp_ports


def test_the_service_listens_on_its_own_port_only(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        turn = client.post("/api/v1/conversation", data={"text": "Hello!"})
    assert turn.status_code == 200, turn.text  # every model loaded and used, the chat model's engine too
    assert listening_tcp_ports(server.process.pid) == {int(server.base_url.rsplit(":", 1)[1])}
