"""The idle face of a persona: drawn and encoded once, then played back and forth for every session.

Drawing and encoding the idle face for each session, all the time, would cost a core for a few
sessions. Instead ``forward`` frames of the face at rest (blinking, swaying; the animator's own idle
motion, from silent audio) are drawn once per persona and encoded as a loop that runs forwards and then
backwards through them, so it has no seam. A keyframe every ``keyframe_every`` loop frames lets a
session join the loop there after a reply (what the decoder holds then is the reply's last frame).

A reply starts where the loop is (``start_frame``) so the head moves on without a jump; when it ends,
the face is drawn on from there to the loop's next keyframe (``bridge``) and the loop takes over.
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from avatar.server.live.codecs import VideoEncoder
from avatar.types import FaceAnimator, FrameArray, PreparedFace

T = TypeVar("T")
ModelWork = Callable[[Callable[[], T]], Awaitable[T]]
"""Runs a blocking call on the models, after whoever is ahead (the service's admission)."""

RATE = 16_000  # the sample rate of the silence the idle face is drawn from (any rate works)


@dataclass
class IdleLoop:
    """Encoded idle frames, loop index → VP8 frame. Filled in the background; usable once ``ready``."""

    forward: int
    keyframe_every: int
    packets: list[bytes] = field(default_factory=list)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    failed: str | None = None

    @property
    def cycle(self) -> int:
        """Loop frames in one round trip: forwards, then backwards without repeating either end."""
        return max(1, 2 * self.forward - 2)

    def position(self, index: int) -> int:
        """The frame of the idle motion shown at loop ``index`` (0 … forward-1)."""
        i = index % self.cycle
        return i if i < self.forward else self.cycle - i

    def is_keyframe(self, index: int) -> bool:
        return index % self.keyframe_every == 0

    def bridge(self, position: int) -> tuple[int, int]:
        """After a reply that ended at motion frame ``position``: how many idle frames to draw on from
        there, and the loop index to go on with. Within reach of a forward keyframe the motion is
        seamless; past the loop's end the face goes to the nearest keyframe instead."""
        if not self.ready.is_set():
            return 0, 0
        ahead = math.ceil(position / self.keyframe_every) * self.keyframe_every
        if position >= 0 and ahead < self.forward:
            return ahead - position, ahead
        return 0, self.nearest_keyframe(position)

    def nearest_keyframe(self, position: int) -> int:
        """The loop index of the keyframe whose frame of motion is closest to ``position``."""
        if not self.ready.is_set():
            return 0
        keys = range(0, self.cycle, self.keyframe_every)
        return min(keys, key=lambda i: abs(self.position(i) - position))


def _silence(frames: int, fps: int) -> np.ndarray:
    return np.zeros(frames * RATE // fps, np.float32)


async def build_idle_loop(
    loop: IdleLoop,
    animator: FaceAnimator,
    face: PreparedFace,
    *,
    size: int,
    fps: int,
    kbps: int,
    model_work: ModelWork[list[bytes]],
) -> None:
    """Draw and encode ``loop`` a fifth of a second at a time, each piece its own model work (a request
    arriving meanwhile waits for one piece, tens of milliseconds, not for the loop). The backwards half
    is drawn a second time, piece by piece, rather than kept: 10 s of raw frames would be 200 MB."""
    encoder = VideoEncoder(size, fps, kbps)
    step = max(1, fps // 5)
    n = loop.forward

    def draw(start: int, count: int) -> FrameArray:
        chunks = animator.render_chunks(face, _silence(count, fps), RATE, chunk_frames=count, start_frame=start)
        return np.concatenate(list(chunks))[:count]

    def encode(frames: FrameArray, first_index: int) -> list[bytes]:
        return [encoder.encode(f, loop.is_keyframe(first_index + i)).data for i, f in enumerate(frames)]

    def forwards(start: int) -> list[bytes]:
        return encode(draw(start, min(step, n - start)), start)

    def backwards(stop: int) -> list[bytes]:
        # loop indices n .. cycle-1 show frames n-2 … 1
        start = max(1, stop - step)
        frames = draw(start, stop - start)[::-1]
        return encode(frames, loop.cycle - (stop - 1))

    try:
        for start in range(0, n, step):
            loop.packets += await model_work(functools.partial(forwards, start))
        for stop in range(n - 1, 1, -step):
            loop.packets += await model_work(functools.partial(backwards, stop))
    except Exception as exc:
        loop.failed = f"{type(exc).__name__}: {exc}"
        raise
    if len(loop.packets) != loop.cycle:
        raise AssertionError(f"idle loop has {len(loop.packets)} frames, expected {loop.cycle}")
    loop.ready.set()
