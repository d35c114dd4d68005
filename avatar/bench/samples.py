"""One measured turn, and the per-turn summaries built from many of them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from avatar.bench.stats import spread

STAGES = ("asr", "llm", "tts", "avatar", "mux")
MEDIA_STAGES = ("tts", "avatar")  # the stages whose RTF the issue asks for
FIRSTS = ("first_transcript", "first_token", "first_audio", "first_frame")
"""Moments of a turn, in seconds from the end of the upload (the server's timings, and a streaming
client's own clock: when each first event reached it, and when the first segment had downloaded)."""


@dataclass
class TurnSample:
    """What one turn took. ``wall`` is what the caller waited (for HTTP: upload to the last byte of
    video); ``first_frame`` the seconds until the first video frame could play: for a streamed turn
    at an HTTP client, when its first segment had arrived; for a whole-video answer, the end of the
    download; in-process, the pipeline's own mark. ``client`` holds a streaming client's first-event
    times (``FIRSTS``)."""

    turn: str
    mode: str  # "in-process", "streamed" (HTTP, Server-Sent Events) or "whole" (HTTP, JSON then the MP4)
    wall: float
    timings: dict[str, float] = field(default_factory=dict)
    rtf: dict[str, float] = field(default_factory=dict)
    audio_seconds: float = 0.0
    first_frame: float | None = None
    reply: str = ""
    transcript: str | None = None
    error: str | None = None
    client: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "turn": self.turn,
            "mode": self.mode,
            "wall": round(self.wall, 4),
            "timings": self.timings,
            "rtf": self.rtf,
            "audio_seconds": round(self.audio_seconds, 3),
            "first_frame": None if self.first_frame is None else round(self.first_frame, 4),
            "reply": self.reply,
            "transcript": self.transcript,
            "error": self.error,
            "client": {k: round(v, 4) for k, v in self.client.items()},
        }


def summarise(samples: Iterable[TurnSample]) -> dict[str, dict[str, Any]]:
    """Per turn: p50/p95 of every stage, of the whole turn, of the caller's wait, RTFs and reply length."""
    by_turn: dict[str, list[TurnSample]] = {}
    for sample in samples:
        if sample.error is None:
            by_turn.setdefault(sample.turn, []).append(sample)
    out: dict[str, dict[str, Any]] = {}
    for name, group in by_turn.items():
        stages = {s: _spread([g.timings[s] for g in group if s in g.timings]) for s in (*STAGES, "total")}
        out[name] = {
            "n": len(group),
            "stages": {k: v for k, v in stages.items() if v is not None},
            "wall": _spread([g.wall for g in group]),
            "rtf": {s: v for s in MEDIA_STAGES if (v := _spread([g.rtf[s] for g in group if s in g.rtf]))},
            "audio_seconds": _spread([g.audio_seconds for g in group]),
            "first_frame": _spread([g.first_frame for g in group if g.first_frame is not None]),
            "server_firsts": {k: v for k in FIRSTS if (v := _spread([g.timings[k] for g in group if k in g.timings]))},
            "client_firsts": {k: v for k in FIRSTS if (v := _spread([g.client[k] for g in group if k in g.client]))},
        }
    return out


def _spread(values: Sequence[float]) -> dict[str, float | int] | None:
    result = spread(values)
    return None if result is None else result.as_dict()


def errors(samples: Iterable[TurnSample]) -> list[str]:
    """The distinct error messages among ``samples``."""
    return sorted({s.error for s in samples if s.error})
