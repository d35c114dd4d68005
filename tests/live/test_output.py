"""A reply's media on the live timeline: encoded as it is drawn, the voice's silent start not played,
and written no further ahead of playback than allowed."""

from __future__ import annotations

import asyncio

import av
import numpy as np

from avatar.server.live.codecs import silence_packet
from avatar.server.live.idle import IdleLoop
from avatar.server.live.output import LEAD_IN_FRAMES, LiveOutput
from avatar.server.live.playout import Playout

FPS, RATE, SIZE = 25, 24_000, 64
PER_FRAME = RATE // FPS


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def frames(count: int) -> np.ndarray:
    rng = np.random.default_rng(count)
    return rng.integers(0, 255, (count, SIZE, SIZE, 3), dtype=np.uint8)


def tone(count: int) -> np.ndarray:
    t = np.arange(count * PER_FRAME) / RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_the_silence_before_the_first_sound_is_not_played() -> None:
    async def scenario() -> None:
        playout = Playout(FPS, IdleLoop(forward=10, keyframe_every=5), silence_packet(), clock=Clock())
        playback = playout.begin(1, start_frame=0)
        output = LiveOutput(playout, playback, sample_rate=RATE, size=SIZE, kbps=200, buffer_seconds=10)
        silent = np.zeros(6 * PER_FRAME, np.float32)
        await output.write(frames(6), silent)  # all silence so far: nothing to play yet
        assert playout.ahead_seconds == 0 and output.skipped == 6
        await output.write(frames(5), np.concatenate([np.zeros(2 * PER_FRAME, np.float32), tone(3)]))
        await output.write(frames(5), tone(5))  # sound from here on: all of it plays, silent or not
        await output.write(frames(2), np.zeros(2 * PER_FRAME, np.float32))
        await output.finish(resume_index=0)
        skipped = 8 - LEAD_IN_FRAMES  # the 8 silent frames, less those kept as a lead-in
        assert output.skipped == skipped and playback.skipped == skipped
        assert output.frames == 18 and output.delivered_seconds == 18 / FPS
        slots = [playout.slot(n) for n in range(18 - skipped)]
        assert [s.reply for s in slots] == [1] * (18 - skipped) and playback.done.is_set()
        decoder = av.CodecContext.create("vp8", "r")  # the first played frame decodes on its own
        assert len(decoder.decode(av.Packet(slots[0].video))) == 1
        assert all(len(s.audio) == 2 for s in slots)

    asyncio.run(scenario())


def test_the_stages_wait_while_the_timeline_is_full() -> None:
    async def scenario() -> None:
        clock = Clock()
        playout = Playout(FPS, IdleLoop(forward=10, keyframe_every=5), silence_packet(), clock=clock)
        playback = playout.begin(1, start_frame=0)
        output = LiveOutput(playout, playback, sample_rate=RATE, size=SIZE, kbps=200, buffer_seconds=0.2)
        await output.write(frames(5), tone(5))  # 0.2 s queued: at the limit, not past it
        writing = asyncio.ensure_future(output.write(frames(5), tone(5)))
        await asyncio.sleep(0.2)
        assert not writing.done()  # 0.4 s ahead of playback: waits
        for n in range(5):
            playout.slot(n)  # playback moves on
            await asyncio.sleep(0)
        await asyncio.wait_for(writing, 1)
        assert playout.ahead_seconds == 5 / FPS

    asyncio.run(scenario())
