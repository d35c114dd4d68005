"""The streamed turn through the real embedded models: events in order, segments that play, and a
turn that stops within a token or a chunk when it is cancelled, leaving nothing but what was heard."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import av
import pytest

from avatar.fmp4 import whole_boxes
from avatar.pipeline.control import SpokenReply, TurnControl
from avatar.pipeline.stages import RespondStage
from avatar.pipeline.timing import TurnTimings
from avatar.runtime import Runtime

LONG_STORY = "Tell me the whole story of your life, from childhood to today, in detail."


class Recorder:
    """Collects a turn's events with the time each arrived."""

    def __init__(self, segments: Path | None = None) -> None:
        self.events: list[tuple[str, dict[str, Any], float]] = []
        self.started = time.perf_counter()
        self.segments = segments

    async def __call__(self, event: str, data: dict[str, Any]) -> None:
        if event == "segment" and self.segments is not None:
            data = {**data, "files_then": len(list(self.segments.iterdir()))}
        self.events.append((event, data, time.perf_counter() - self.started))

    def names(self) -> list[str]:
        return [name for name, _, _ in self.events]

    def of(self, name: str) -> list[dict[str, Any]]:
        return [data for event, data, _ in self.events if event == name]


def decoded_seconds(data: bytes) -> tuple[float, float, int]:
    """(video seconds, audio seconds, frames) of an MP4 held in memory, by decoding every frame."""
    with av.open(io.BytesIO(data), mode="r") as container:
        frames = list(container.decode(video=0))
        assert frames[-1].time is not None
        video = frames[-1].time + 1 / 25
    with av.open(io.BytesIO(data), mode="r") as container:
        samples = list(container.decode(audio=0))
        assert samples[-1].time is not None
        audio = samples[-1].time + samples[-1].samples / samples[-1].sample_rate
    return video, audio, len(frames)


def test_events_arrive_in_order_and_segments_play(runtime: Runtime, spoken_wav, to_asr, tmp_path: Path) -> None:
    recorder = Recorder(segments=tmp_path / "segments")
    audio = to_asr(spoken_wav("What do you remember about your first flight?"))
    pipeline = runtime.pipeline
    request = asyncio.run(pipeline.request(audio=audio))
    result = asyncio.run(pipeline.run_request(request, tmp_path, events=recorder, keep_segments=True))
    names = recorder.names()
    assert names[0] == "transcript" and "flight" in recorder.of("transcript")[0]["text"].lower()
    assert names.index("reply") < names.index("segment")
    segments = recorder.of("segment")
    assert [s["index"] for s in segments] == list(range(len(segments))) == list(range(result.segments))
    assert segments[-1]["final"] and not any(s["final"] for s in segments[:-1])
    # Each segment is announced as soon as it is made, while the later ones do not exist yet.
    assert [s["files_then"] for s in segments] == [s["index"] + 1 for s in segments]
    # The first frames go out after 0.2 s of drawing; later ones about half a second at a time (the
    # first clip is drawn 0.2 s at a time, handed over once half a second or more is drawn: 0.6 s).
    assert segments[0]["duration"] == 0.2 and max(s["duration"] for s in segments) in (0.48, 0.6)
    assert result.timings["first_frame"] < result.timings["total"]
    # Each segment is whole MP4 boxes; together they are one playable video as long as the reply.
    files = sorted((tmp_path / "segments").iterdir())
    assert [f.name for f in files] == [s["name"] for s in segments]
    assert all(whole_boxes(f.read_bytes()) == f.stat().st_size for f in files)
    stream = b"".join(f.read_bytes() for f in files)
    video, sound, frames = decoded_seconds(stream)
    assert frames == round(result.audio_seconds * 25)
    assert abs(video - result.audio_seconds) <= 1 / 25 + 0.025  # + AAC's priming delay (21 ms at 48 kHz)
    assert abs(sound - video) <= 1 / 25
    # The deltas add up to the reply as shown; the spoken reply is what was said.
    deltas = recorder.of("reply")
    assert "".join(d["delta"] for d in deltas) == deltas[-1]["text"]
    assert all(word in deltas[-1]["text"] for word in result.reply.replace("…", " ").split()[:3])


@pytest.fixture()
def long_replies(runtime: Runtime):
    """The real model, allowed to talk for a long time (so a cancellation lands mid-reply)."""
    pipeline = runtime.pipeline
    usual = pipeline.respond
    pipeline.respond = RespondStage(usual.llm, max_new_tokens=400, max_sentences=50)
    yield pipeline
    pipeline.respond = usual


def test_a_cancelled_turn_stops_every_stage_and_keeps_what_was_heard(long_replies, tmp_path: Path) -> None:
    pipeline = long_replies
    llm = pipeline.respond.llm
    recorder = Recorder()
    control = TurnControl()

    async def scenario() -> tuple[int, int, float, str]:
        request = await pipeline.request(text=LONG_STORY)
        task = asyncio.ensure_future(pipeline.run_request(request, tmp_path / "turn", events=recorder, control=control))
        control.attach(task)
        while len(recorder.of("segment")) < 2:
            await asyncio.sleep(0.01)
            assert not task.done(), "the turn ended before it could be interrupted"
        stopped_at = time.perf_counter()
        assert control.stop("test", heard_seconds=0.6)
        with pytest.raises(asyncio.CancelledError):
            await task
        took = time.perf_counter() - stopped_at
        tokens = llm.tokens_generated
        await asyncio.sleep(0.5)
        return tokens, llm.tokens_generated, took, request.session.id

    tokens, later, took, session_id = asyncio.run(scenario())
    assert later == tokens  # the model stopped: nothing runs on after the turn
    assert took < 2.0, f"the turn took {took:.2f} s to stop"
    assert list((tmp_path / "turn").iterdir()) == []  # no partial files
    # History keeps the question and the reply up to 0.6 s into it, cut with an ellipsis.
    history = asyncio.run(pipeline.sessions.get(session_id, "eileen")).history
    assert [m.role for m in history] == ["user", "assistant"] and history[0].content == LONG_STORY
    assert history[1].content.endswith("…") and len(history[1].content.split()) <= 4
    # The next turn starts at once and completes.
    started = time.perf_counter()
    result = asyncio.run(pipeline.run(tmp_path / "next", text="Hello!"))
    assert result.reply and time.perf_counter() - started < 60


class LosesOneStop:
    """A reply output (our own interface) that takes a while to write each chunk and, once, swallows
    the cancellation that arrives meanwhile — as Python 3.11's asyncio.wait_for, or a library, may."""

    def __init__(self) -> None:
        self.frames = self.writes = 0
        self.writing = False
        self.lost = False

    async def write(self, frames: Any, audio: Any) -> None:
        self.writes += 1
        self.frames += len(frames)
        self.writing = True
        try:
            await asyncio.sleep(0.3)
        except asyncio.CancelledError:
            if self.lost:
                raise
            self.lost = True
        finally:
            self.writing = False

    @property
    def delivered_seconds(self) -> float:
        return self.frames / 25


def test_a_stage_that_loses_the_stop_still_stops_at_its_next_step(long_replies) -> None:
    pipeline = long_replies
    llm = pipeline.respond.llm
    output, control = LosesOneStop(), TurnControl()

    async def quiet(event: str, data: dict[str, Any]) -> None:
        return None

    async def scenario() -> tuple[bool, int, int, int]:
        request = await pipeline.request(text=LONG_STORY)
        reply = pipeline.reply(
            request, LONG_STORY, output, emit=quiet, timings=TurnTimings(), spoken=SpokenReply(), control=control
        )
        task = asyncio.ensure_future(reply.run())
        control.attach(task)
        while not (output.writes >= 2 and output.writing):
            assert not task.done(), "the reply ended before it could be stopped"
            await asyncio.sleep(0.005)
        writes = output.writes
        assert control.stop("test")
        await asyncio.wait([task], timeout=20)  # without the stop enforced, the 400-token story runs on
        tokens = llm.tokens_generated
        await asyncio.sleep(0.3)
        return task.cancelled(), output.writes - writes, tokens, llm.tokens_generated

    cancelled, writes_after, tokens, later = asyncio.run(scenario())
    assert output.lost, "the scenario did not lose the stop"
    assert cancelled and writes_after <= 1  # at most the chunk drawn while the stop was lost
    assert later == tokens  # and the model stopped with it


class Chunks:
    """A reply output (our own interface) that keeps how many frames, and how much audio, each write had."""

    def __init__(self, fps: int, rate: int) -> None:
        self.fps, self.rate = fps, rate
        self.sizes: list[int] = []
        self.audio: list[int] = []

    async def write(self, frames: Any, audio: Any) -> None:
        self.sizes.append(len(frames))
        self.audio.append(len(audio))

    @property
    def delivered_seconds(self) -> float:
        return sum(self.sizes) / self.fps


@pytest.mark.parametrize(("first", "expected"), [(1, [1, 1, 1, 1, 1]), (5, [5])])
def test_the_first_frames_are_handed_over_as_soon_as_they_are_drawn(runtime: Runtime, first, expected) -> None:
    """Live mode draws the first piece a frame at a time and hands each of its first 0.2 s over at
    once (the first frame plays without waiting for four more); the HTTP stream hands over 0.2 s."""
    pipeline = runtime.pipeline
    output = Chunks(pipeline.animate.fps, pipeline.speak.sample_rate)

    async def quiet(event: str, data: dict[str, Any]) -> None:
        return None

    async def scenario() -> None:
        request = await pipeline.request(text="What is your name?")
        reply = pipeline.reply(
            request,
            "What is your name?",
            output,
            emit=quiet,
            timings=TurnTimings(),
            spoken=SpokenReply(),
            chunk_frames=5,
            first_chunk_frames=first,
        )
        await reply.run()

    asyncio.run(scenario())
    sizes = output.sizes
    assert sizes[: len(expected)] == expected, sizes
    # Then 0.2 s at a time (a piece's last chunk may be shorter), and every frame goes with its audio.
    assert max(sizes[len(expected) :]) == 5 and sizes[len(expected)] == 5, sizes
    assert output.audio == [n * output.rate // output.fps for n in sizes]
