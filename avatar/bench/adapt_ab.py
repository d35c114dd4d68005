"""`avatar bench --contended --ab`: the LLM's threads fixed (A) against following the free cores (B),
in one run, on one loaded pipeline, with one core kept busy by another process all the while.

Turns alternate A, B, B, A, … per question, so a machine shared with other work slows both alike. Before
an A turn the core watch is paused (the configured counts are put back); before a B turn it resumes and
is given ``settle_s`` to see the busy core (its short window is 2 s). In-process turns: the first spoken
piece after the prompt (first audio less first transcript, as `avatar bench` reports it) and the first
video frame from the end of the question, with the thread counts each turn ran on.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from avatar.bench.fixtures import TURNS, question_audio
from avatar.bench.inprocess import InProcessBench
from avatar.bench.stats import spread
from avatar.config import Settings

MODES = {"A": "threads as configured", "B": "threads following the free cores"}


def run_adaptation_ab(
    settings: Settings, *, reps: int = 2, settle_s: float = 3.0, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Measure A and B ``reps`` times per question; the samples and their p50/p95 per mode."""
    questions = {t.name: question_audio(t) for t in TURNS}
    with tempfile.TemporaryDirectory(prefix="avatar-ab-") as tmp:
        bench = InProcessBench(settings, Path(tmp))
        try:
            log("a/b: loading models …")
            bench.start()
            runtime = bench.runtime
            watch = runtime.cores if runtime is not None else None
            if watch is None:
                raise RuntimeError("no core watch runs here (an LLM without set_threads, or the setting is off)")
            samples = asyncio.run(_turns(bench, watch, questions, reps, settle_s, log))
            engine = watch.status()["engine_waits"]
        finally:
            bench.close()
    out: dict[str, Any] = {
        "reps": reps,
        "engine_waits": engine,
        "runtime": settings.llamacpp_runtime,
        "samples": samples,
    }
    out["summary"] = {
        mode: {
            key: (s.as_dict() if (s := spread([x[key] for x in samples if x["mode"] == mode and x.get(key)])) else None)
            for key in ("first_clause_s", "first_frame_s")
        }
        for mode in MODES
    }
    return out


async def _turns(
    bench: InProcessBench, watch: Any, questions: dict[str, Any], reps: int, settle_s: float, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    await bench.turn(TURNS[1], questions[TURNS[1].name])  # warm-up
    samples = []
    for rep in range(reps):
        for i, turn in enumerate(TURNS):
            for mode in ("A", "B") if (rep + i) % 2 == 0 else ("B", "A"):
                (watch.pause if mode == "A" else watch.resume)()
                if mode == "B":
                    await asyncio.sleep(settle_s)  # the watch runs on its own thread: let it see the busy core
                    watch.resume()  # applies what it decided meanwhile
                threads = watch.status()
                sample = await bench.turn(turn, questions[turn.name], seed=i)
                t = sample.timings
                row = {
                    "mode": mode,
                    "turn": turn.name,
                    "llm_reading": threads["llm_reading"],
                    "llm_writing": threads["llm_writing"],
                    "others_busy_cores": threads["others_busy_cores"],
                    "first_clause_s": t["first_audio"] - t["first_transcript"]
                    if {"first_audio", "first_transcript"} <= t.keys()
                    else None,
                    "first_frame_s": sample.first_frame,
                    "error": sample.error,
                }
                piece, frame = (row[k] or float("nan") for k in ("first_clause_s", "first_frame_s"))
                log(f"a/b {mode} {turn.name}: {row['llm_reading']} reading, piece {piece:.2f} s, frame {frame:.2f} s")
                samples.append(row)
    return samples


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Runtime `{result['runtime']}` (its threads wait {result['engine_waits']}); {result['reps']} repetitions of "
        "each question per mode, the modes alternating; in-process turns, seconds from the end of the question.",
        "",
        "| mode | first spoken piece p50 (p95) | first video frame p50 (p95) | turns |",
        "|---|---|---|---|",
    ]
    for mode, label in MODES.items():
        row = result["summary"][mode]
        cells = [
            f"{s['p50']:.3f} ({s['p95']:.3f})" if (s := row[key]) else "–"
            for key in ("first_clause_s", "first_frame_s")
        ]
        n = sum(1 for x in result["samples"] if x["mode"] == mode)
        lines.append(f"| {mode}: {label} | {cells[0]} | {cells[1]} | {n} |")
    lines += ["", "| mode | turn | reading / writing threads | others' cores | first piece s | first frame s |"]
    lines.append("|---|---|---|---|---|---|")
    for x in result["samples"]:
        piece, frame = (f"{v:.3f}" if v else "–" for v in (x["first_clause_s"], x["first_frame_s"]))
        others = "–" if x["others_busy_cores"] is None else f"{x['others_busy_cores']:.2f}"
        lines.append(
            f"| {x['mode']} | {x['turn']} | {x['llm_reading']} / {x['llm_writing']} | {others} | {piece} | {frame} |"
        )
    return "\n".join(lines)
