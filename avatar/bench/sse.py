"""Reading Server-Sent Events as a client, line by line (the bench's streaming client; the tests')."""

from __future__ import annotations

import json
from typing import Any


class EventReader:
    """Feed it the lines of a ``text/event-stream`` body; each blank line ends an event, which ``feed``
    returns as ``(event, data)`` with ``data`` parsed as JSON. Comments (keep-alive pings) are skipped."""

    def __init__(self) -> None:
        self._event, self._data = "message", list[str]()

    def feed(self, line: str) -> tuple[str, dict[str, Any]] | None:
        if not line:
            done = (self._event, json.loads("\n".join(self._data))) if self._data else None
            self._event, self._data = "message", []
            return done
        if line.startswith("event:"):
            self._event = line[6:].strip()
        elif line.startswith("data:"):
            self._data.append(line[5:].lstrip())
        return None
