"""Wall time and real-time factor of each stage of a turn."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class TurnTimings:
    """Seconds per stage, and RTF (processing seconds / media seconds) where a stage makes media."""

    origin: float = field(default_factory=time.perf_counter)
    """When the turn's input was complete (the end of an upload): ``mark`` and the total count from here."""
    seconds: dict[str, float] = field(default_factory=dict)
    rtf: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        """Note the first time something happened (first token, first frame …), from ``origin``."""
        self.seconds.setdefault(name, time.perf_counter() - self.origin)

    def elapsed(self) -> float:
        return time.perf_counter() - self.origin

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def media(self, name: str, media_seconds: float) -> None:
        if media_seconds > 0 and name in self.seconds:
            self.rtf[name] = self.seconds[name] / media_seconds

    def summary(self, total: float) -> tuple[dict[str, float], dict[str, float]]:
        seconds = {k: round(v, 3) for k, v in self.seconds.items()}
        seconds["total"] = round(total, 3)
        return seconds, {k: round(v, 3) for k, v in self.rtf.items()}
