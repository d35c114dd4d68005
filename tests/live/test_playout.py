"""The session's media timeline: what each 40 ms slot carries, for both tracks, as replies come and go.

The timeline's clock is a counter here, so every decision is checked exactly; the media are the real
encoded silence and placeholder frames (the timeline never looks inside them)."""

from __future__ import annotations

import asyncio

import pytest

from avatar.server.live.codecs import silence_packet
from avatar.server.live.idle import IdleLoop
from avatar.server.live.playout import Playout, Slot

FPS = 25


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def ready_loop(forward: int = 10, keyframe_every: int = 4) -> IdleLoop:
    loop = IdleLoop(forward=forward, keyframe_every=keyframe_every)
    loop.packets = [f"idle{i}".encode() for i in range(loop.cycle)]
    loop.ready.set()
    return loop


def reply_slots(reply: int, count: int, first: int = 0) -> list[Slot]:
    return [Slot(f"r{reply}-{first + i}".encode(), (b"a", b"b"), reply) for i in range(count)]


def test_the_idle_loop_runs_forwards_then_backwards_and_its_positions_match() -> None:
    loop = ready_loop(forward=5, keyframe_every=2)
    assert loop.cycle == 8
    assert [loop.position(i) for i in range(10)] == [0, 1, 2, 3, 4, 3, 2, 1, 0, 1]
    assert loop.bridge(1) == (1, 2)  # draw one frame, then go on at the keyframe at index 2
    assert loop.bridge(4) == (0, 4)  # at the end of the forward run: nearest keyframe (index 4 shows 4)
    assert loop.bridge(40) == (0, 4)
    assert loop.nearest_keyframe(1) in (0, 2)


def test_both_tracks_get_the_same_slot_and_the_idle_face_between_replies() -> None:
    playout = Playout(FPS, ready_loop(), silence_packet(), clock=Clock())
    assert playout.silence_slot == (playout.silence, playout.silence)
    first = [playout.slot(n).video for n in range(3)]
    assert first == [b"idle0", b"idle1", b"idle2"]
    assert playout.slot(1).video == b"idle1"  # asked again (the other track): the same decision
    assert playout.slot(5).video == b"idle5"  # slots are decided in order, none skipped
    assert playout.slot(4).video == b"idle4"


def test_a_reply_plays_in_order_then_the_loop_goes_on_where_the_reply_said() -> None:
    loop = ready_loop()
    playout = Playout(FPS, loop, silence_packet(), clock=Clock())
    played: list[int] = []
    playout.on_first_slot = lambda reply: played.append(reply.id)
    reply = playout.begin(7, start_frame=playout.predicted_position(3))
    assert playout.slot(0).video == b"idle0"  # nothing queued yet: the face idles while it thinks
    playout.push(reply, reply_slots(7, 3))
    assert [playout.slot(n).video for n in (1, 2, 3)] == [b"r7-0", b"r7-1", b"r7-2"]
    assert played == [7] and reply.first_slot == 1 and playout.speaking
    held = playout.slot(4)  # the reply is late: its last frame stays, the voice is silent
    assert held.video is None and held.audio == playout.silence_slot and reply.underruns == 1
    playout.push(reply, reply_slots(7, 1, first=3))
    playout.finish(reply, resume_index=8)
    assert playout.slot(5).video == b"r7-3"
    assert reply.done.is_set() and not playout.speaking
    assert playout.slot(6).video == b"idle8"  # the loop goes on at the keyframe after the bridge


def test_stopping_a_reply_drops_what_is_queued_and_returns_to_a_keyframe() -> None:
    loop = ready_loop(forward=10, keyframe_every=4)
    playout = Playout(FPS, loop, silence_packet(), clock=Clock())
    reply = playout.begin(1, start_frame=5)
    playout.push(reply, reply_slots(1, 20))
    for n in range(3):
        playout.slot(n)
    assert playout.ahead_seconds == pytest.approx(17 / FPS)
    stopped = playout.stop()
    assert stopped is reply and reply.played == 3 and reply.done.is_set()
    assert playout.ahead_seconds == 0
    resumed = playout.slot(3).video
    assert resumed is not None and loop.is_keyframe(int(resumed.decode().removeprefix("idle")))
    playout.push(reply, reply_slots(1, 5))  # the stopped reply's stages may still hand over a chunk
    assert playout.ahead_seconds == 0


def test_until_the_idle_loop_is_drawn_its_first_frame_is_repeated_each_second() -> None:
    loop = IdleLoop(forward=10, keyframe_every=4)
    playout = Playout(FPS, loop, silence_packet(), clock=Clock())
    assert playout.slot(0).video is None  # nothing drawn yet
    loop.packets = [b"idle0"]
    sent = [n for n in range(1, 80) if playout.slot(n).video is not None]
    assert sent == [1, 26, 51, 76]


def test_progress_wakes_a_writer_waiting_for_room() -> None:
    async def scenario() -> None:
        playout = Playout(FPS, ready_loop(), silence_packet(), clock=Clock())
        waiting = asyncio.ensure_future(playout.progress())
        await asyncio.sleep(0)
        assert not waiting.done()
        playout.slot(0)
        await asyncio.wait_for(waiting, 1)

    asyncio.run(scenario())


def test_a_paused_reply_holds_its_frame_silent_and_resumes_where_it_stopped() -> None:
    playout = Playout(FPS, ready_loop(), silence_packet(), clock=Clock())

    async def scenario() -> list[Slot]:
        reply = playout.begin(1, start_frame=0)
        playout.push(reply, reply_slots(1, 4))
        playout.finish(reply, resume_index=0)
        slots = [playout.slot(0), playout.slot(1)]
        reply.paused = True
        slots += [playout.slot(n) for n in range(2, 5)]
        assert playout.speaking and reply.played == 2 and reply.paused_slots == 3 and reply.underruns == 0
        reply.paused = False
        slots += [playout.slot(n) for n in range(5, 8)]
        return slots

    slots = asyncio.run(scenario())
    assert [s.video for s in slots] == [b"r1-0", b"r1-1", None, None, None, b"r1-2", b"r1-3", b"idle0"]
    assert all(s.audio == playout.silence_slot for s in slots[2:5])  # silent while paused
    assert [s.reply for s in slots[2:5]] == [1, 1, 1]
