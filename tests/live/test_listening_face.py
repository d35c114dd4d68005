"""The face listening in live mode (``listening.py``), without a server: the real puppet draws the
session's listening frames while a scripted user speaks (a phrase end, then the end of the turn), the
playout sends them in the idle loop's place, and the stream the client would get is decoded and measured
with an independent FaceLandmarker: it decodes whole (it joins and leaves the loop at keyframes), the
head nods beyond its idle sway, the mouth stays still, and neither join jumps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import av
import cv2
import numpy as np
import pytest

from avatar.backends.face_puppet import PuppetAnimator
from avatar.backends.puppet.landmarks import CHIN, FOREHEAD, LIP_BOTTOM, LIP_TOP, NOSE_TIP, Landmarker
from avatar.server.live.codecs import silence_packet
from avatar.server.live.idle import IdleLoop, build_idle_loop
from avatar.server.live.listening import ListenFeed, ListeningFace, can_listen
from avatar.server.live.playout import Playout
from avatar.types import FrameArray

ROOT = Path(__file__).resolve().parents[2]
LANDMARKER = ROOT / "models_cache" / "face" / "face_landmarker.task"
PORTRAIT = ROOT / "assets" / "personas" / "eileen" / "portrait.png"
FPS, SIZE, KBPS = 25, 512, 800
T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def in_thread(work: Callable[[], T]) -> T:
    return await asyncio.to_thread(work)


@pytest.fixture(scope="module")
def animator() -> Iterator[PuppetAnimator]:
    if not LANDMARKER.is_file():
        pytest.fail(f"{LANDMARKER} missing: run `avatar models prepare`")
    puppet = PuppetAnimator(LANDMARKER)
    yield puppet
    puppet.close()


@pytest.fixture(scope="module")
def probe() -> Iterator[Landmarker]:
    landmarker = Landmarker(LANDMARKER, max_faces=1)
    yield landmarker
    landmarker.close()


def measure(probe: Landmarker, frame: FrameArray) -> tuple[float, float]:
    """Nose tip height and inner-lip gap, in face heights."""
    faces = probe.detect(np.ascontiguousarray(frame))
    assert faces, "the landmarker lost the face in a decoded frame"
    lm = faces[0][:, :2]
    height = float(np.linalg.norm(lm[CHIN] - lm[FOREHEAD]))
    return float(lm[NOSE_TIP, 1]) / height, float(np.linalg.norm(lm[LIP_BOTTOM] - lm[LIP_TOP])) / height


def dip(nose: np.ndarray, half: int = 7) -> float:
    """The deepest quick dip of the head (a nod): how far the nose tip goes below the mean of where it
    was ``half`` frames before and after (the idle sway is too slow to make much of one)."""
    return float(np.max(nose[half:-half] - (nose[: -2 * half] + nose[2 * half :]) / 2))


def session(animator: PuppetAnimator) -> dict[str, Any]:
    """12 s of a session's video: idling 2 s, the user speaking 2 to 6.5 s with a pause (a phrase end)
    at 4 s, their turn over at 6.5 s, idling again. Returns the slots' frames decoded and where each
    slot's frame came from."""
    bgr = cv2.imread(str(PORTRAIT), cv2.IMREAD_COLOR)
    assert bgr is not None, PORTRAIT
    face = animator.prepare(np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
    loop = IdleLoop(forward=250, keyframe_every=25)

    async def play() -> dict[str, Any]:
        await build_idle_loop(loop, animator, face, size=SIZE, fps=FPS, kbps=KBPS, model_work=in_thread)
        clock = Clock()
        playout = Playout(FPS, loop, silence_packet(), clock=clock)
        listening: ListeningFace | None = None
        task: asyncio.Task[None] | None = None
        sources: list[str] = []
        packets: list[bytes | None] = []
        for n in range(12 * FPS):
            clock.now = playout.at(n / FPS)
            if n == 2 * FPS:  # the user's first sound
                feed = ListenFeed(n + 4, playout.predicted_position(4))
                listening = ListeningFace(
                    feed, animator, face, loop, size=SIZE, kbps=KBPS, fps=FPS, begun=-4 / FPS,
                    now_slot=lambda: playout.now_slot, reply_pending=lambda: False, draw_work=in_thread,
                )  # fmt: skip
                playout.listening = feed
                task = asyncio.ensure_future(listening.run())
            if listening is not None and n == 4 * FPS + 10:  # the pause, heard 0.4 s after it began
                listening.paused(listening.seconds_at(4 * FPS))
                listening.spoke()  # and goes on at once
            if listening is not None and n == int(6.5 * FPS):
                listening.turn_over(listening.seconds_at(n))
            for _ in range(300):  # the drawing keeps ahead of the clock (it is given the time it needs)
                feed_ = playout.listening
                if feed_ is None or n < feed_.first_slot or feed_.packets or feed_.finished:
                    break
                await asyncio.sleep(0.01)
            feed_ = playout.listening
            source = "listening" if feed_ is not None and n >= feed_.first_slot and not feed_.done else "idle"
            sources.append(source)
            packets.append(playout.slot(n).video)
            await asyncio.sleep(0)
        assert task is not None and task.done() and task.exception() is None
        assert playout.listening is None  # the loop took over again
        decoder = av.CodecContext.create("vp8", "r")
        frames = []
        for n, data in enumerate(packets):
            assert data is not None, f"slot {n} ({sources[n]}) without a frame (the drawing fell behind)"
            pictures = decoder.decode(av.Packet(data))
            frames.append(pictures[-1].to_ndarray(format="rgb24"))
        return {"frames": frames, "sources": sources}

    return asyncio.run(play())


def test_the_listening_face_plays_in_the_loops_place_and_nods_with_a_still_mouth(
    animator: PuppetAnimator, probe: Landmarker
) -> None:
    assert can_listen(animator)
    played = session(animator)
    frames, sources = played["frames"], played["sources"]
    listened = [i for i, s in enumerate(sources) if s == "listening"]
    assert listened[0] == 2 * FPS + 4 and listened[-1] > int(6.9 * FPS)  # eased out, then on to a keyframe
    assert sources[-1] == "idle" and listened == list(range(listened[0], listened[-1] + 1))
    measured = np.array([measure(probe, f) for f in frames])
    nose, gap = measured[:, 0], measured[:, 1]
    idle_dip, nod = dip(nose[: 2 * FPS]), dip(nose[4 * FPS + 10 : 5 * FPS + 10])  # after the pause is heard
    print(f"head dip: {nod:.4f} face heights at the nod, {idle_dip:.4f} idling 2 s; lip gap range {np.ptp(gap):.4f}")
    assert nod > 2 * idle_dip
    assert np.ptp(gap[listened]) < 0.01  # the mouth does not move
    # No jump in or out: the frame-to-frame change at each join is within what the loop itself shows.
    change = np.array([np.abs(frames[i + 1].astype(np.int16) - frames[i]).mean() for i in range(len(frames) - 1)])
    usual = np.percentile(change, 99)
    joins = [listened[0] - 1, listened[-1]]
    print(f"change at the joins {change[joins]}, 99th percentile {usual:.3f}")
    assert (change[joins] <= usual + 0.05).all(), (change[joins], usual)
