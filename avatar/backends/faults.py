"""Injected faults: a real backend made to fail or hang on command, for tests and failure drills.

``AVATAR_FAULTS`` lists faults, comma-separated, each ``kind:mode[:option=value...]``:

- ``kind``: ``asr``, ``llm``, ``tts`` or ``face``;
- ``mode``: ``raise`` (a RuntimeError), ``oom`` (an error worded like CUDA running out of memory) or
  ``hang`` (the call sleeps ``seconds``, then goes on as usual);
- ``skip=N``: the first N calls work; ``count=N``: then N calls fail, after which it works again
  (default: every call from then on); ``seconds=S``: how long a hang lasts (default 30).

Only the calls a turn makes are touched (recognising, generating, speaking, drawing) and the warm-up
calls of later health checks, never loading, the first warm-up or preparing a persona's face, so a
faulty server still starts. Empty by default.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from avatar.errors import ConfigError

KINDS = ("asr", "llm", "tts", "face")
MODES = ("raise", "oom", "hang")
CALLS = {"asr": ("transcribe",), "llm": ("reply",), "tts": ("synthesize", "synthesize_timed"), "face": ("render",)}
STREAMS = {"llm": "stream", "face": "render_chunks"}  # generators: the fault strikes at each item


@dataclass
class Fault:
    kind: str
    mode: str
    skip: int = 0
    count: int | None = None
    seconds: float = 30.0
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def strike(self) -> None:
        """Called before each call of the model: fail or hang when this call falls in the fault's window."""
        with self._lock:
            self.calls += 1
            n = self.calls - self.skip
        if n < 1 or (self.count is not None and n > self.count):
            return
        if self.mode == "hang":
            time.sleep(self.seconds)
        elif self.mode == "oom":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (injected fault)")
        else:
            raise RuntimeError(f"injected fault in the {self.kind} model")


def parse_faults(text: str) -> dict[str, Fault]:
    """``AVATAR_FAULTS`` as faults by model kind (ConfigError naming what is wrong)."""
    faults: dict[str, Fault] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        kind, _, rest = item.partition(":")
        mode, *options = rest.split(":") if rest else [""]
        if kind not in KINDS or mode not in MODES:
            raise ConfigError(
                f"AVATAR_FAULTS: {item!r} is not kind:mode with kind one of {', '.join(KINDS)} and mode one of "
                f"{', '.join(MODES)} (e.g. llm:raise or tts:hang:seconds=5)."
            )
        fault = Fault(kind, mode)
        for option in options:
            key, _, value = option.partition("=")
            try:
                if key in ("skip", "count"):
                    setattr(fault, key, int(value))
                elif key == "seconds":
                    fault.seconds = float(value)
                else:
                    raise ValueError(key)
            except ValueError:
                raise ConfigError(
                    f"AVATAR_FAULTS: option {option!r} of {item!r}: use skip=N, count=N or seconds=S."
                ) from None
        faults[kind] = fault
    return faults


class FaultyModel:
    """A loaded backend whose turn-time calls strike ``fault`` first; everything else passes through."""

    def __init__(self, inner: Any, fault: Fault) -> None:
        self._inner = inner
        self._fault = fault
        self._warmed = False

    def warmup(self) -> None:
        """The first warm-up (at loading) is left alone; later ones (health checks) meet the fault."""
        if self._warmed:
            self._fault.strike()
        self._warmed = True
        self._inner.warmup()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if name in CALLS[self._fault.kind]:
            return self._call(value)
        if name == STREAMS.get(self._fault.kind):
            return self._stream(value)
        return value

    def _call(self, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            self._fault.strike()
            return method(*args, **kwargs)

        return call

    def _stream(self, method: Any) -> Any:
        def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            items = method(*args, **kwargs)
            try:
                while True:
                    self._fault.strike()
                    try:
                        item = next(items)
                    except StopIteration:
                        return
                    yield item
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()

        return stream
