"""Turns run through the pipeline inside this process (the streamed pipeline every route uses)."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from pathlib import Path

from avatar.bench.fixtures import BenchTurn
from avatar.bench.samples import TurnSample
from avatar.config import Settings
from avatar.pipeline import Pipeline
from avatar.runtime import Runtime, running
from avatar.types import AudioArray


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

    async def turn(self, turn: BenchTurn, audio: AudioArray, *, seed: int = 0) -> TurnSample:
        """One measured turn; a failure is recorded in the sample, not raised."""
        self._count += 1
        out_dir = self.work_dir / f"{turn.name}-{self._count}"
        seed_llm(seed)
        started = time.perf_counter()
        try:
            result = await self.pipeline.run(out_dir, audio=audio)
        except Exception as exc:  # noqa: BLE001 - a failed turn is a result to report
            return TurnSample(
                turn.name, "in-process", time.perf_counter() - started, error=f"{type(exc).__name__}: {exc}"
            )
        finally:
            shutil.rmtree(out_dir, ignore_errors=True)
        return TurnSample(
            turn=turn.name,
            mode="in-process",
            wall=time.perf_counter() - started,
            timings=dict(result.timings),
            rtf=dict(result.rtf),
            audio_seconds=result.audio_seconds,
            first_frame=result.timings.get("first_frame"),
            reply=result.reply,
            transcript=result.transcript,
        )

    def close(self) -> None:
        self._stack.close()
        self.runtime = None
