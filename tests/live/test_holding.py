"""A paused or late reply keeps the client's frame rate: its held picture is sent again every slot,
and after it the reply's own frames decode as they should. Real puppet frames, real VP8 (libvpx),
decoded back with FFmpeg's decoder as a browser would."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from avatar.backends.face_puppet import PuppetAnimator
from avatar.config import Settings
from avatar.pipeline.stages import load_image
from avatar.server.live.codecs import silence_packet
from avatar.server.live.holding import REJOIN_EVERY_S
from avatar.server.live.idle import IdleLoop
from avatar.server.live.output import LiveOutput
from avatar.server.live.playout import Playout
from avatar.types import AudioArray

FPS, SIZE, KBPS, RATE = 25, 128, 300, 16_000
REJOIN = round(REJOIN_EVERY_S * FPS)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def drawn(
    settings: Settings, prepared_models: Path, portrait: Path, fixture_speech: Callable[[str, int], AudioArray]
) -> Iterator[tuple[np.ndarray, AudioArray]]:
    """Three seconds of the puppet speaking, and the speech."""
    animator = PuppetAnimator(settings.model_path(settings.face_model), size=SIZE, fps=FPS)
    try:
        face = animator.prepare(load_image(portrait.read_bytes(), max_pixels=settings.max_image_pixels))
        speech = fixture_speech("question-medium", RATE)
        speech = speech[int(np.argmax(np.abs(speech) > 0.05)) :][: 3 * RATE]  # loud at once: nothing skipped
        yield animator.render(face, speech, RATE), speech
    finally:
        animator.close()


def decode(frames: list[bytes]) -> list[np.ndarray]:
    decoder = av.CodecContext.create("vp8", "r")
    return [f.to_ndarray(format="rgb24") for data in frames for f in decoder.decode(av.Packet(data))]


def error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


async def play(
    frames: np.ndarray, speech: AudioArray, *, pause_at: int, pause_slots: int, late: bool = False
) -> tuple[list[bytes | None], Playout]:
    """Queue the reply, play ``pause_at`` slots, hold it for ``pause_slots`` (paused, or late: nothing
    queued yet) and play it to its end; the frame each slot sent."""
    idle = IdleLoop(forward=4, keyframe_every=2)
    idle.packets = [b"idle"] * idle.cycle
    idle.ready.set()
    playout = Playout(FPS, idle, silence_packet(), clock=Clock(), kbps=KBPS)
    playback = playout.begin(1, start_frame=0)
    output = LiveOutput(playout, playback, sample_rate=RATE, size=SIZE, kbps=KBPS, buffer_seconds=60)
    first = len(frames) if not late else pause_at
    await output.write(frames[:first], speech[: first * RATE // FPS])
    sent: list[bytes | None] = []
    n = 0
    for _ in range(pause_at):
        sent.append(playout.slot(n).video)
        n += 1
    playback.paused = not late
    for _ in range(pause_slots):
        sent.append(playout.slot(n).video)
        n += 1
        holding = playback.holding
        if holding is not None and not holding.made.done():
            await asyncio.wait([holding.made])  # made in a worker thread: here, within the slot
    playback.paused = False
    if late:
        await output.write(frames[first:], speech[first * RATE // FPS :])
    await output.finish(0)
    while not playback.done.is_set():
        sent.append(playout.slot(n).video)
        n += 1
    return sent, playout


@pytest.mark.parametrize("late", [False, True], ids=["paused", "late"])
def test_a_held_reply_sends_its_picture_every_slot_and_its_frames_decode_after_it(
    drawn: tuple[np.ndarray, AudioArray], late: bool
) -> None:
    frames, speech = drawn
    pause_at, pause_slots = 33, 20  # paused between keyframes (one every REJOIN frames)
    sent, _ = asyncio.run(play(frames, speech, pause_at=pause_at, pause_slots=pause_slots, late=late))
    held = sent[pause_at : pause_at + pause_slots]
    missing = sum(1 for video in held if video is None)
    assert missing <= (4 if late else 2), missing  # the first slot or two, while the held frame is made
    pictures = decode([video for video in sent if video is not None])
    assert len(pictures) == len(sent) - sent.count(None)  # every frame sent decodes
    shown = pictures[pause_at : pause_at + pause_slots - missing]
    for picture in shown:  # the face on screen when it paused, every slot
        assert error(picture, frames[pause_at - 1]) < 4
        assert error(picture, shown[-1]) < 1
    after = pictures[pause_at + pause_slots - missing :]
    assert len(after) == len(frames) - pause_at
    errors = [error(picture, frames[pause_at + i]) for i, picture in enumerate(after)]
    assert max(errors) < 5, errors  # bridged to the next keyframe, then the reply's own frames
    rejoin = (pause_at // REJOIN + 1) * REJOIN - pause_at
    untouched = decode([v for v in sent if v is not None][:pause_at])  # the reply as it was encoded
    plain = decode([v for v in sent if v is not None][pause_at + pause_slots - missing :][rejoin:])
    assert all(np.array_equal(a, b) for a, b in zip(plain, after[rejoin:], strict=True))
    assert len(untouched) == pause_at


def test_a_reply_that_resumes_at_once_goes_on_with_its_own_frames(drawn: tuple[np.ndarray, AudioArray]) -> None:
    """Resumed before a held frame was sent: nothing was sent again, and the reply's chain goes on."""
    frames, speech = drawn
    sent, _ = asyncio.run(play(frames, speech, pause_at=10, pause_slots=1))
    assert sent[10] is None and sent.count(None) == 1
    pictures = decode([video for video in sent if video is not None])
    assert len(pictures) == len(frames)
    assert max(error(p, f) for p, f in zip(pictures, frames, strict=True)) < 5
