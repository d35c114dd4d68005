"""Turns run through the pipeline inside this process, sequential or overlapped (streamed)."""

from __future__ import annotations

import contextlib
import inspect
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from avatar.bench.fixtures import BenchTurn
from avatar.bench.samples import TurnSample
from avatar.config import Settings
from avatar.pipeline import Pipeline, TurnResult
from avatar.runtime import Runtime, running
from avatar.types import AudioArray

# Sibling-method names the overlapped turn may land under, besides ``run(..., overlapped=True)``.
OVERLAPPED_METHODS = ("run_overlapped", "run_streamed", "run_streaming")


def overlap_support(pipeline: Pipeline) -> str | None:
    """None when ``pipeline`` can run an overlapped turn; otherwise why it cannot."""
    if "overlapped" in inspect.signature(pipeline.run).parameters:
        return None
    if any(callable(getattr(pipeline, name, None)) for name in OVERLAPPED_METHODS):
        return None
    return "not available: the pipeline has no overlapped/streamed turn yet (Pipeline.run(..., overlapped=True))"


async def _run(pipeline: Pipeline, out_dir: Path, audio: AudioArray, overlapped: bool) -> TurnResult:
    run: Any = pipeline.run
    if "overlapped" in inspect.signature(pipeline.run).parameters:
        # Always explicit: the pipeline's default follows AVATAR_OVERLAP.
        result: TurnResult = await run(out_dir, audio=audio, overlapped=overlapped)
        return result
    if not overlapped:
        plain: TurnResult = await run(out_dir, audio=audio)
        return plain
    for name in OVERLAPPED_METHODS:
        method = getattr(pipeline, name, None)
        if callable(method):
            found: TurnResult = await method(out_dir, audio=audio)
            return found
    raise RuntimeError(overlap_support(pipeline))


def seed_llm(seed: int) -> None:
    """Fix the sampler's random state so every repetition of a turn gets the same reply (and so the
    same amount of work): the spread then measures the machine, not the dice."""
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


class InProcessBench:
    """A started Runtime and a scratch folder; each turn's files are deleted once measured."""

    def __init__(self, settings: Settings, work_dir: Path) -> None:
        self.settings = settings
        self.work_dir = work_dir
        self.runtime: Runtime | None = None
        self._stack = contextlib.ExitStack()
        self._count = 0

    def start(self) -> float:
        """Load and warm every model; the seconds it took (construction to ready)."""
        started = time.perf_counter()
        self.runtime = self._stack.enter_context(running(self.settings))
        return time.perf_counter() - started

    @property
    def pipeline(self) -> Pipeline:
        if self.runtime is None:
            raise RuntimeError("InProcessBench.start() first")
        return self.runtime.pipeline

    async def turn(self, turn: BenchTurn, audio: AudioArray, *, overlapped: bool = False, seed: int = 0) -> TurnSample:
        """One measured turn; a failure is recorded in the sample, not raised."""
        self._count += 1
        out_dir = self.work_dir / f"{turn.name}-{self._count}"
        out_dir.mkdir(parents=True)
        mode = "overlapped" if overlapped else "sequential"
        seed_llm(seed)
        started = time.perf_counter()
        try:
            result = await _run(self.pipeline, out_dir, audio, overlapped)
        except Exception as exc:  # noqa: BLE001 - a failed turn is a result to report
            return TurnSample(turn.name, mode, time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        wall = time.perf_counter() - started
        timings = dict(result.timings)
        reported = timings.pop("first_frame", None)
        # The pipeline's own mark (first frame drawn) when it gives one; a whole-video turn without it
        # has its first frame at its end, since nothing can play before the file is complete.
        first_frame = reported if reported is not None or overlapped else timings.get("total", wall)
        return TurnSample(
            turn=turn.name,
            mode=mode,
            wall=wall,
            timings=timings,
            rtf=dict(result.rtf),
            audio_seconds=result.audio_seconds,
            first_frame=first_frame,
            reply=result.reply,
            transcript=result.transcript,
            error=None if first_frame is not None else "the overlapped turn reported no timings['first_frame']",
        )

    def close(self) -> None:
        self._stack.close()
        self.runtime = None
