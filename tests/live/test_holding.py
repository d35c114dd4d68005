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
from avatar.server.live.playout import HOLD_AFTER_LATE, Playout
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
    """Five seconds of the puppet speaking, and the speech."""
    animator = PuppetAnimator(settings.model_path(settings.face_model), size=SIZE, fps=FPS)
    try:
        face = animator.prepare(load_image(portrait.read_bytes(), max_pixels=settings.max_image_pixels))
        speech = fixture_speech("question-medium", RATE)
        speech = speech[int(np.argmax(np.abs(speech) > 0.05)) :][: 5 * RATE]  # loud at once: nothing skipped
        speech = np.pad(speech, (0, 5 * RATE - speech.size))  # past the reply's keyframe at 4 s
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
    pause_at, pause_slots = 33, 20  # paused between keyframes (one every REJOIN frames: the reply has one)
    sent, _ = asyncio.run(play(frames, speech, pause_at=pause_at, pause_slots=pause_slots, late=late))
    held = sent[pause_at : pause_at + pause_slots]
    missing = sum(1 for video in held if video is None)
    assert missing == (HOLD_AFTER_LATE - 1 if late else 0), missing  # late: held after a few slots
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
    assert len(plain) >= FPS  # the reply's own frames from its next keyframe on, exactly as encoded
    assert all(np.array_equal(a, b) for a, b in zip(plain, after[rejoin:], strict=True))
    assert len(untouched) == pause_at


def test_a_reply_paused_for_one_slot_sends_a_still_frame_before_it_goes_on(
    drawn: tuple[np.ndarray, AudioArray],
) -> None:
    """Paused for a slot: its keyframe, then a still frame (the reply's frames are encoded to follow
    it), then the reply."""
    frames, speech = drawn
    sent, _ = asyncio.run(play(frames, speech, pause_at=10, pause_slots=1))
    assert None not in sent and len(sent) == len(frames) + 2
    pictures = decode([video for video in sent if video is not None])
    assert error(pictures[10], frames[9]) < 4 and error(pictures[11], frames[9]) < 4
    after = pictures[12:]
    assert max(error(p, f) for p, f in zip(after, frames[10:], strict=True)) < 5
