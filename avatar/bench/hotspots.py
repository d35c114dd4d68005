"""Profile the hottest stage of a turn with cProfile, on a single-threaded copy of its engine.

cProfile sees only the thread it runs in, and the engines fan work out to thread pools, so the stage's
engine is built again with one thread (the same code, every frame in the calling thread). The wall time
of the production (multi-threaded) engine on the same input is recorded beside it.
"""

from __future__ import annotations

import cProfile
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avatar import fmp4, media
from avatar.backends import torch_thread
from avatar.backends.factory import model_specs
from avatar.images import load_image
from avatar.runtime import Runtime
from avatar.types import ASR_SAMPLE_RATE, AudioArray, ChatMessage

STAGE_KIND = {"asr": "asr", "llm": "llm", "tts": "tts", "avatar": "face"}
TOP = 15


def hottest_stage(per_turn: dict[str, dict[str, Any]]) -> str | None:
    """The stage with the largest median time summed over the benchmark's turns."""
    totals: dict[str, float] = {}
    for summary in per_turn.values():
        for stage, spread in summary["stages"].items():
            if stage != "total":
                totals[stage] = totals.get(stage, 0.0) + float(spread["p50"])
    return max(totals, key=lambda s: totals[s]) if totals else None


def _short(path: str) -> str:
    for marker in ("site-packages/", "/avatar/"):
        if marker in path:
            head = "avatar/" if marker == "/avatar/" else ""
            return head + path.split(marker, 1)[1]
    return path


def _rows(stats: pstats.Stats, key: str) -> list[dict[str, Any]]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]  # pstats keeps it undocumented
    entries = sorted(raw.items(), key=lambda kv: kv[1][2 if key == "tottime" else 3], reverse=True)
    rows = []
    for (file, line, func), (_cc, ncalls, tottime, cumtime, _callers) in entries[:TOP]:
        rows.append(
            {
                "function": f"{_short(file)}:{line}({func})",
                "calls": ncalls,
                "self_s": round(tottime, 4),
                "cumulative_s": round(cumtime, 4),
            }
        )
    return rows


def _call_for(stage: str, engine: Any, runtime: Runtime, question: AudioArray) -> Callable[[], object]:
    """The blocking call that stage makes, on inputs produced by the running pipeline's own models."""
    pipeline = runtime.pipeline
    persona = runtime.personas.get(runtime.settings.default_persona)
    transcript = pipeline.transcribe.asr.transcribe(question).text
    messages = [ChatMessage("system", persona.system_prompt), ChatMessage("user", transcript)]
    if stage == "asr":
        return lambda: engine.transcribe(question)
    if stage == "llm":
        return lambda: engine.reply(messages, max_new_tokens=runtime.settings.llm_max_new_tokens)
    reply = pipeline.respond.llm.reply(messages, max_new_tokens=runtime.settings.llm_max_new_tokens)
    if stage == "tts":
        return lambda: engine.synthesize(reply, persona.voice_spec)
    tts = pipeline.speak.tts
    speech = tts.synthesize(reply, persona.voice_spec)
    if stage == "avatar":
        face = engine.prepare(load_image(persona.image_path.read_bytes(), max_pixels=runtime.settings.max_image_pixels))
        return lambda: engine.render(face, speech, tts.sample_rate)
    animator = pipeline.animate.animator
    frames = animator.render(
        animator.prepare(load_image(persona.image_path.read_bytes(), max_pixels=runtime.settings.max_image_pixels)),
        speech,
        tts.sample_rate,
    )
    fitted = media.fit_audio_to_frames(speech, tts.sample_rate, len(frames), animator.fps)
    out = Path(tempfile.mkdtemp(prefix="avatar-profile-")) / "mux.mp4"
    return lambda: fmp4.write_mp4(out, frames, fitted, tts.sample_rate, animator.fps)


def profile_stage(stage: str, runtime: Runtime, question: AudioArray) -> dict[str, Any]:
    """cProfile one call of ``stage`` (single-threaded engine) and time the production engine on the same input."""
    kind = STAGE_KIND.get(stage)
    production = runtime.registry.get(kind) if kind else None
    single = model_specs(runtime.settings.replace(threads=1), (kind,))[0].factory() if kind else None
    try:
        if single is not None:
            single.warmup()
        timed = _call_for(stage, production, runtime, question) if production is not None else None
        call = _call_for(stage, single, runtime, question)
        started = time.perf_counter()
        (timed or call)()
        production_s = time.perf_counter() - started
        profiler = cProfile.Profile()
        started = time.perf_counter()
        # A CPU torch model computes on the torch thread: profile there, or cProfile sees only the wait.
        torch_thread.run(profiler.runcall, call)
        profiled_s = time.perf_counter() - started
    finally:
        if single is not None:
            single.close()
    stats = pstats.Stats(profiler)
    return {
        "stage": stage,
        "question_seconds": round(question.size / ASR_SAMPLE_RATE, 2),
        "production_seconds": round(production_s, 3),
        "single_thread_profiled_seconds": round(profiled_s, 3),
        "by_self_time": _rows(stats, "tottime"),
        "by_cumulative_time": _rows(stats, "cumtime"),
    }
