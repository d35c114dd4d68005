"""Events of a live session, as JSON messages on the data channel the client opens.

Each message is ``{"event": NAME, ...data}``. Messages sent before the channel is open wait for it
(a bounded number: a client that never opens one loses the oldest)."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc import RTCDataChannel

PENDING_LIMIT = 256


class EventChannel:
    def __init__(self) -> None:
        self.channel: RTCDataChannel | None = None
        self.sent: deque[str] = deque(maxlen=PENDING_LIMIT)  # not yet on the wire
        self.on_message: Callable[[Any], None] | None = None
        self.on_close: Callable[[], None] | None = None

    def attach(self, channel: RTCDataChannel) -> None:
        """The client's channel has arrived; anything waiting goes out now."""
        self.channel = channel

        @channel.on("message")
        def message(raw: object) -> None:
            if self.on_message is not None:
                self.on_message(raw)

        @channel.on("close")
        def closed() -> None:
            if self.on_close is not None:
                self.on_close()

        self._flush()

    def send(self, event: str, **data: Any) -> None:
        self.sent.append(json.dumps({"event": event, **data}))
        self._flush()

    def _flush(self) -> None:
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        while self.sent:
            channel.send(self.sent.popleft())
