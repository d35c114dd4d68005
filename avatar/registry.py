"""The model registry: load every configured model once, warm it, report its state, close it.

A model moves pending → loading → warming → ready, or to failed with the reason. The registry is
ready only when every model is. Loading is blocking work: ``start`` runs it in a worker thread so a
server's event loop keeps answering its probes meanwhile.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from avatar.errors import AvatarError, NotReadyError
from avatar.health import ModelHealth
from avatar.types import Backend

log = logging.getLogger(__name__)


class ModelState(enum.StrEnum):
    PENDING = "pending"
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    FAILED = "failed"
    CLOSED = "closed"


@dataclass(frozen=True)
class ModelSpec:
    """One model to load: its role (``asr``, ``llm``, ``tts``, ``face``), backend name and factory."""

    kind: str
    backend: str
    factory: Callable[[], Backend]


@dataclass
class ModelSlot:
    spec: ModelSpec
    state: ModelState = ModelState.PENDING
    error: str | None = None
    load_seconds: float | None = None
    warm_seconds: float | None = None
    model: Backend | None = field(default=None, repr=False)
    health: ModelHealth = field(init=False)

    def __post_init__(self) -> None:
        self.health = ModelHealth(self.spec.kind)

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.spec.backend,
            "name": getattr(self.model, "name", None),
            "state": self.state.value,
            "error": self.error,
            "load_seconds": _round(self.load_seconds),
            "warm_seconds": _round(self.warm_seconds),
            **self.health.describe(),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class ModelRegistry:
    def __init__(self, specs: list[ModelSpec]) -> None:
        self._slots = {spec.kind: ModelSlot(spec) for spec in specs}
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return all(slot.state is ModelState.READY for slot in self._slots.values())

    @property
    def failed(self) -> bool:
        return any(slot.state is ModelState.FAILED for slot in self._slots.values())

    def health(self, kind: str) -> ModelHealth:
        """How the ``kind`` model's calls have been going (counted by the stages that call it)."""
        return self._slots[kind].health

    def unhealthy(self) -> dict[str, str]:
        """Loaded models that keep failing or hang, with why: ``{kind: "failing: <error>"}``."""
        return {
            kind: f"{slot.health.state}: {slot.health.last_error}"
            for kind, slot in self._slots.items()
            if slot.state is ModelState.READY and not slot.health.healthy
        }

    def hung(self) -> list[str]:
        return [kind for kind, slot in self._slots.items() if slot.health.state == "hung"]

    def states(self) -> dict[str, dict[str, Any]]:
        return {kind: slot.describe() for kind, slot in self._slots.items()}

    def load_all(self) -> None:
        """Load and warm every model in turn (blocking). A failure marks that model failed and goes on,
        so the report names every broken model at once."""
        for slot in self._slots.values():
            if slot.state is not ModelState.PENDING:
                continue
            self._load(slot)

    def _load(self, slot: ModelSlot) -> None:
        kind = slot.spec.kind
        try:
            slot.state = ModelState.LOADING
            started = time.perf_counter()
            model = slot.spec.factory()
            slot.load_seconds = time.perf_counter() - started
            slot.model = model
            slot.state = ModelState.WARMING
            started = time.perf_counter()
            model.warmup()
            slot.warm_seconds = time.perf_counter() - started
            slot.state = ModelState.READY
            log.info("model ready", extra={"kind": kind, "load_s": slot.load_seconds, "warm_s": slot.warm_seconds})
        except Exception as exc:  # noqa: BLE001 - any failure is reported as this model's state
            slot.state = ModelState.FAILED
            slot.error = exc.message if isinstance(exc, AvatarError) else f"{type(exc).__name__}: {exc}"
            log.error("model failed", extra={"kind": kind, "error": slot.error})

    def get(self, kind: str) -> Any:
        """The ready model of this role; NotReadyError while loading or after a failure."""
        slot = self._slots.get(kind)
        if slot is None:
            raise NotReadyError(f"No {kind} model is configured.")
        if slot.state is not ModelState.READY or slot.model is None:
            reason = f": {slot.error}" if slot.error else ""
            raise NotReadyError(f"The {kind} model is {slot.state.value}{reason}.")
        return slot.model

    def failures(self) -> list[str]:
        return [f"{kind}: {slot.error}" for kind, slot in self._slots.items() if slot.state is ModelState.FAILED]

    def close(self) -> None:
        with self._lock:
            for slot in self._slots.values():
                if slot.model is not None:
                    try:
                        slot.model.close()
                    except Exception:
                        log.exception("closing model failed", extra={"kind": slot.spec.kind})
                    slot.model = None
                slot.state = ModelState.CLOSED
