"""Measure a typed turn's first audio with each embedded voice, Kokoro's first piece cut short
(``quick_start``, as shipped) against the first clause hibari is handed, A/B in one run.

    PYTHONPATH=$PWD .venv/bin/python scripts/voice_first_piece.py [REPS] > results.jsonl

Each line: one turn (voice, cut, question, first token/audio/frame from the request, the pieces, when
each was voiced, and the seconds the listener waits between pieces); the summary goes to stderr. Every
question's prompt is read once before its variants, and the order of the two Kokoro cuts alternates.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from avatar.backends.kokoro_tts import KokoroSynthesizer
from avatar.config import load_settings
from avatar.personas import Persona
from avatar.pipeline.stages import SpeakStage
from avatar.runtime import running
from avatar.types import Speech, VoiceSpec

QUESTIONS = (
    "What did you enjoy most about flying the Space Shuttle?",
    "When you looked down at the Earth from orbit at night, what did the cities look like?",
    "What was the hardest part of your training?",
)
VARIANTS = (("heart", False), ("jm_kumo", False), ("jm_kumo", True), ("jf_gongitsune", False), ("jf_gongitsune", True))
SWAPPED = (VARIANTS[0], VARIANTS[2], VARIANTS[1], VARIANTS[4], VARIANTS[3])

quick = {"on": True}
voiced: list[tuple[float, str]] = []  # when each piece's speech was ready, and its text


def _quick_start(self: KokoroSynthesizer, voice: VoiceSpec) -> bool:
    return quick["on"]


_speech = SpeakStage.speech


async def _timed_speech(self: SpeakStage, text: str, persona: Persona) -> Speech:
    speech = await _speech(self, text, persona)
    voiced.append((time.perf_counter(), text))
    return speech


KokoroSynthesizer.quick_start = _quick_start  # type: ignore[method-assign]
SpeakStage.speech = _timed_speech  # type: ignore[method-assign]


def waiting(ready: list[float], lengths: list[float]) -> float:
    """Seconds the listener waits between pieces: each starts once voiced and once the one before ends."""
    wait, end = 0.0, None
    for at, length in zip(ready, lengths, strict=False):
        if end is not None and at > end:
            wait += at - end
        end = max(at, end if end is not None else at) + length
    return wait


async def measure(runtime: Any, reps: int) -> list[dict[str, Any]]:
    pipe = runtime.pipeline
    work = Path(tempfile.mkdtemp(prefix="first-piece-"))
    rows: list[dict[str, Any]] = []
    try:
        for voice, _ in VARIANTS[::2]:  # warm-up, each voice
            await pipe.run_request(await pipe.request(text=QUESTIONS[0], voice=voice), work / f"warm-{voice}")
        for rep in range(reps):
            for number, question in enumerate(QUESTIONS):
                await pipe.run_request(await pipe.request(text=question, voice="heart"), work / f"p{rep}-{number}")
                for voice, cut in VARIANTS if rep % 2 == 0 else SWAPPED:
                    quick["on"] = cut
                    voiced.clear()
                    request = await pipe.request(text=question, voice=voice)
                    result = await pipe.run_request(request, work / f"{rep}-{number}-{voice}-{cut}")
                    ready = [at - request.received for at, _ in voiced]
                    lengths = [p.end - p.start for p in result.spoken.pieces]
                    row = {
                        "voice": voice,
                        "quick": cut,
                        "question": number,
                        **{k: result.timings.get(k) for k in ("first_token", "first_audio", "first_frame")},
                        "pieces": [text for _, text in voiced],
                        "ready": [round(at, 3) for at in ready],
                        "waiting": round(waiting(ready, lengths), 3),
                        "audio": round(sum(lengths), 2),
                        "load": round(os.getloadavg()[0], 2),
                    }
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main() -> None:
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    with running(load_settings()) as runtime:
        rows = asyncio.run(measure(runtime, reps))
    for voice, cut in VARIANTS:
        sel = [r for r in rows if r["voice"] == voice and r["quick"] == cut]

        def p50(key: str, sel: list[dict[str, Any]] = sel) -> float:
            return statistics.median(r[key] for r in sel if r[key] is not None)

        print(
            f"{voice:14} quick={cut!s:5} n={len(sel)} first_audio={p50('first_audio'):.3f} "
            f"first_frame={p50('first_frame'):.3f} waiting={p50('waiting'):.3f}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
