"""Whether each loaded model still works: failures in a row, calls that hang, and recovery.

A model that fails once is having a bad moment (the turn degrades: a fallback line, a still face); one
that fails ``FAILURES_TO_UNHEALTHY`` calls in a row, or whose call runs past its time limit, is
unhealthy, and readiness says so (503 naming it) until a call succeeds again or the hung call returns
and a check succeeds. Thread-safe: model calls run in worker threads.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

FAILURES_TO_UNHEALTHY = 3


@dataclass
class ModelHealth:
    kind: str
    failures_in_a_row: int = 0
    hung_calls: int = 0
    calls: int = 0
    failures: int = 0
    last_error: str | None = None
    last_failure_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def state(self) -> str:
        """``ok``, ``failing`` (the last calls all failed) or ``hung`` (a call outlived its time limit)."""
        if self.hung_calls:
            return "hung"
        return "failing" if self.failures_in_a_row >= FAILURES_TO_UNHEALTHY else "ok"

    @property
    def healthy(self) -> bool:
        return self.state == "ok"

    def succeeded(self) -> None:
        with self._lock:
            self.calls += 1
            self.failures_in_a_row = 0

    def failed(self, error: BaseException | str) -> None:
        with self._lock:
            self.calls += 1
            self.failures += 1
            self.failures_in_a_row += 1
            self.last_error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
            self.last_failure_at = time.time()

    def hung(self, seconds: float) -> None:
        """A call has run ``seconds``, past its limit, and is still running."""
        with self._lock:
            self.hung_calls += 1
            self.last_error = f"a call has not returned after {seconds:g} s"
            self.last_failure_at = time.time()

    def returned(self) -> None:
        """A call reported by ``hung`` has finally returned (whatever its outcome)."""
        with self._lock:
            self.hung_calls = max(0, self.hung_calls - 1)

    def describe(self) -> dict[str, object]:
        return {
            "health": self.state,
            "failures_in_a_row": self.failures_in_a_row,
            "last_error": self.last_error if self.state != "ok" else None,
        }
