"""Faults injected into the real stages: a failing stage degrades the turn instead of failing it, and
a model that hangs is timed out and reported until it returns."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from scripted import ScriptedChat

from avatar import media
from avatar.backends.faults import Fault, FaultyModel, parse_faults
from avatar.errors import ConfigError, ModelTimeoutError
from avatar.health import ModelHealth
from avatar.pipeline import Pipeline
from avatar.pipeline.stages import AnimateStage, RespondStage, SpeakStage
from avatar.pipeline.threads import ModelCalls
from avatar.runtime import Runtime

TWO_SENTENCES = "The Moon is bright tonight. It has no air at all."


@pytest.fixture()
def pipeline(runtime: Runtime) -> Iterator[Pipeline]:
    """The real pipeline with a fixed two-sentence reply; each test swaps in the faulty stage it needs."""
    p = runtime.pipeline
    saved = p.respond, p.speak, p.animate
    p.respond = RespondStage(ScriptedChat(TWO_SENTENCES))
    yield p
    p.respond, p.speak, p.animate = saved


def codes(result) -> list[str]:
    return [d["code"] for d in result.degraded]


def test_a_voice_failure_half_way_leaves_the_rest_as_text(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.speak = SpeakStage(FaultyModel(pipeline.speak.tts, Fault("tts", "raise", skip=1)))
    result = asyncio.run(pipeline.run(tmp_path, text="Tell me about the Moon."))
    assert codes(result) == ["tts_failed"] and "injected fault" in result.degraded[0]["reason"]
    assert result.reply == TWO_SENTENCES  # all of it shown ...
    assert result.video_path is not None
    info = media.probe_mp4(result.video_path)  # ... the first sentence spoken and drawn
    assert 0.5 < info["video_seconds"] < 3.5 and abs(info["video_seconds"] - result.audio_seconds) < 0.05


def test_no_voice_at_all_is_a_text_only_reply(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.speak = SpeakStage(FaultyModel(pipeline.speak.tts, Fault("tts", "oom")))
    result = asyncio.run(pipeline.run(tmp_path, text="Tell me about the Moon."))
    assert codes(result) == ["tts_failed"] and "out of memory" in result.degraded[0]["reason"]
    assert result.reply == TWO_SENTENCES and result.audio_seconds == 0
    assert result.video_path is None and result.audio_path is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["turn.json"]


def test_a_face_failure_keeps_a_playable_video_with_a_still_picture(pipeline: Pipeline, tmp_path: Path) -> None:
    animator = FaultyModel(pipeline.animate.animator, Fault("face", "raise", skip=2))
    pipeline.animate = AnimateStage(animator)
    result = asyncio.run(pipeline.run(tmp_path, text="Tell me about the Moon."))
    assert codes(result) == ["face_failed"]
    assert result.video_path is not None
    info = media.probe_mp4(result.video_path)
    assert info["frames"] == round(result.audio_seconds * 25)  # every second of speech still has its picture
    assert abs(info["video_seconds"] - info["audio_seconds"]) <= 1 / 25 + 0.025


def test_a_model_failure_gives_the_fallback_line_with_the_reason(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.respond = RespondStage(ScriptedChat(fail=True))
    result = asyncio.run(pipeline.run(tmp_path, text="Hello?"))
    assert codes(result) == ["llm_fallback"] and "out of memory" in result.degraded[0]["reason"]
    assert result.reply == pipeline.personas.get("eileen").fallback_reply
    assert result.video_path is not None and result.video_path.is_file()


def test_a_hung_call_times_out_and_the_model_is_reported_until_it_returns() -> None:
    health = ModelHealth("asr")
    calls = ModelCalls(health, timeout=0.2)

    async def scenario() -> None:
        started = time.perf_counter()
        with pytest.raises(ModelTimeoutError, match=r"within 0\.2 s"):
            await calls(time.sleep, 3.0)
        assert time.perf_counter() - started < 2.0  # the caller did not wait for the call ...
        assert health.state == "hung"  # ... and the model is reported until its call returns
        while health.state == "hung":
            assert time.perf_counter() - started < 30
            await asyncio.sleep(0.1)
        assert time.perf_counter() - started >= 3.0 and health.state == "ok"
        assert await calls(lambda: 42) == 42

    asyncio.run(scenario())


def test_a_stopped_turn_waits_for_its_call_but_not_past_the_limit() -> None:
    health = ModelHealth("face")
    calls = ModelCalls(health, timeout=0.5)

    async def stopped_during(seconds: float) -> float:
        task = asyncio.ensure_future(calls(time.sleep, seconds))
        await asyncio.sleep(0.1)
        started = time.perf_counter()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.perf_counter() - started

    async def scenario() -> None:
        # A call that returns in time is waited for (nothing of the stopped turn runs on after it) ...
        assert 0.05 <= await stopped_during(0.2) < 0.4 and health.state == "ok"
        # ... a hung one is left at the limit, and its model reported until it returns.
        assert await stopped_during(3.0) < 1.0 and health.state == "hung"
        started = time.perf_counter()
        while health.state == "hung":
            assert time.perf_counter() - started < 30
            await asyncio.sleep(0.1)
        assert health.state == "ok"

    asyncio.run(scenario())


def test_failures_in_a_row_make_a_model_unhealthy_until_a_call_works() -> None:
    health = ModelHealth("llm")
    calls = ModelCalls(health)

    def broken() -> None:
        raise RuntimeError("CUDA out of memory")

    async def scenario() -> None:
        for _ in range(3):
            with pytest.raises(RuntimeError):
                await calls(broken)
        assert health.state == "failing" and "out of memory" in (health.last_error or "")
        await calls(lambda: None)
        assert health.state == "ok"

    asyncio.run(scenario())


def test_a_call_failing_on_what_the_request_gave_it_never_counts_against_the_model() -> None:
    health = ModelHealth("llm")
    calls = ModelCalls(health)

    def tokenize(text: str) -> bytes:
        return text.encode("utf-8")  # a tokenizer's first step, where a lone surrogate fails

    async def scenario() -> None:
        for _ in range(5):
            with pytest.raises(UnicodeEncodeError):
                await calls(tokenize, "\ud800")
        assert health.failures == 0 and health.state == "ok"

    asyncio.run(scenario())


@pytest.mark.parametrize("text", ["llm", "gpu:raise", "llm:explode", "tts:raise:skip=x", "face:hang:when=now"])
def test_a_wrong_fault_setting_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="AVATAR_FAULTS"):
        parse_faults(text)
