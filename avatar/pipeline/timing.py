"""Wall time and real-time factor of each stage of a turn."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class TurnTimings:
    """Seconds per stage, and RTF (processing seconds / media seconds) where a stage makes media."""

    seconds: dict[str, float] = field(default_factory=dict)
    rtf: dict[str, float] = field(default_factory=dict)

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
