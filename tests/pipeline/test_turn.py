"""A whole turn through the real embedded models: speech in, a talking-head MP4 out."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import numpy as np
import pytest

from avatar import media
from avatar.errors import InvalidRequestError, NoSpeechError, UnknownPersonaError
from avatar.quality import lipsync
from avatar.runtime import Runtime

QUESTION = "What was it like to fly the Space Shuttle?"


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def turn(runtime: Runtime, spoken_wav, to_asr, tmp_path_factory) -> tuple[object, Path]:
    out = tmp_path_factory.mktemp("turn")
    audio = to_asr(spoken_wav(QUESTION))
    result = asyncio.run(runtime.pipeline.run(out, audio=audio))
    return result, out


def test_transcript_holds_the_question(turn) -> None:
    result, _ = turn
    assert {"fly", "space", "shuttle"} <= words(result.transcript)


def test_reply_is_short_spoken_text(turn) -> None:
    result, _ = turn
    assert any(ch.isalpha() for ch in result.reply)
    assert "*" not in result.reply and "\n" not in result.reply
    assert result.degraded == []


def test_summary_file_has_every_stage(turn) -> None:
    result, out = turn
    summary = json.loads((out / "turn.json").read_text())
    assert summary["transcript"] == result.transcript and summary["reply"] == result.reply
    timings = summary["timings"]
    stages = {"asr", "llm", "tts", "avatar", "mux"}
    firsts = ["first_transcript", "first_token", "first_audio", "first_frame"]
    assert set(timings) == stages | set(firsts) | {"total"}
    assert set(summary["rtf"]) >= {"tts", "avatar"}
    assert [timings[k] for k in firsts] == sorted(timings[k] for k in firsts), timings  # in the order they happen
    assert 0 < timings["first_frame"] < timings["total"]
    assert summary["video_format"] == "h264" and summary["segments"] >= 2
    assert summary["models"]["asr"].startswith("faster-whisper")
    assert summary["audio_seconds"] > 0.5


def test_mp4_has_h264_and_aac_of_equal_length(turn) -> None:
    result, _ = turn
    assert result.video_path is not None
    info = media.probe_mp4(result.video_path)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert (info["width"], info["height"]) == (512, 512)
    frame = 1 / info["fps"]
    assert abs(info["video_seconds"] - info["audio_seconds"]) <= frame + 1e-6
    assert abs(info["video_seconds"] - result.audio_seconds) <= frame + 1e-6
    wav = media.decode_audio(result.audio_path, 24_000)
    assert abs(wav.size / 24_000 - result.audio_seconds) < 0.01


def test_lips_move_with_the_reply(turn, prepared_models: Path) -> None:
    result, _ = turn
    # The lips close on m, b and p while the voice sounds: those frames are the viseme check's, not
    # the loudness correlation's.
    closed = [(p.symbol, p.start, p.end) for piece in result.spoken.pieces for p in piece.phones or ()]
    assert closed, "the embedded voice gives its phonemes with the reply"
    landmarker = prepared_models / "face" / "face_landmarker.task"
    score = lipsync.measure_video(result.video_path, landmarker, closed_on_purpose=closed)
    assert score.faces_found >= 0.95 * score.frames
    assert score.peak_correlation > 0.5, score
    assert abs(score.lag_ms) <= 40, score


def test_mouth_rests_in_silence(runtime: Runtime, speech) -> None:
    rate = 24_000
    audio = np.concatenate(
        [np.zeros(rate, np.float32), speech("Hello there, how are you today?"), np.zeros(rate, np.float32)]
    )
    stage = runtime.pipeline.animate
    face = stage.prepare_path(runtime.personas.get("eileen").image_path)
    frames = asyncio.run(stage(face, audio, rate))
    meter = lipsync.MouthMeter(runtime.settings.model_path(runtime.settings.face_model))
    try:
        opening = meter.openings(frames)
    finally:
        meter.close()
    fps = stage.fps
    silent = np.concatenate([opening[: fps // 2], opening[-fps // 2 :]])
    speaking = opening[fps + 5 : -fps - 5]
    # Openings are inner-lip gap / face height; the portrait smiles, so rest is already ~0.06.
    assert np.nanmax(speaking) > np.nanmax(silent) + 0.03, (np.nanmax(speaking), np.nanmax(silent))
    assert np.nanstd(silent) < 0.01


def test_text_turn_skips_recognition_and_keeps_history(runtime: Runtime, tmp_path: Path) -> None:
    pipeline = runtime.pipeline
    first = asyncio.run(pipeline.run(tmp_path / "a", text="My name is Sam."))
    assert first.transcript is None and "asr" not in first.timings
    second = asyncio.run(pipeline.run(tmp_path / "b", text="What is my name?", session_id=first.session_id))
    assert second.session_id == first.session_id
    session = asyncio.run(pipeline.sessions.get(first.session_id, "eileen"))
    assert [m.content for m in session.history[::2]] == ["My name is Sam.", "What is my name?"]


def test_second_turn_loads_nothing(runtime: Runtime, tmp_path: Path) -> None:
    before = runtime.registry.states()
    asyncio.run(runtime.pipeline.run(tmp_path, text="Tell me about the Moon."))
    assert runtime.registry.states() == before  # same load times: nothing was loaded again
    assert all(s["state"] == "ready" for s in before.values())


def test_silence_is_no_speech_and_leaves_nothing(runtime: Runtime, tmp_path: Path) -> None:
    quiet = (np.random.default_rng(0).standard_normal(16_000 * 2) * 1e-4).astype(np.float32)
    with pytest.raises(NoSpeechError):
        asyncio.run(runtime.pipeline.run(tmp_path, audio=np.zeros(32_000, np.float32)))
    with pytest.raises(NoSpeechError):
        asyncio.run(runtime.pipeline.run(tmp_path, audio=quiet))
    assert list(tmp_path.iterdir()) == []


def test_unknown_persona_and_bad_text(runtime: Runtime, tmp_path: Path) -> None:
    with pytest.raises(UnknownPersonaError, match="eileen"):
        asyncio.run(runtime.pipeline.run(tmp_path, text="Hi", persona="../../etc"))
    with pytest.raises(InvalidRequestError):
        asyncio.run(runtime.pipeline.run(tmp_path, text="   "))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("fmt", "codecs"), [("h264", ("h264", "aac")), ("vp9", ("vp9", "opus"))])
def test_both_formats_give_in_step_video(runtime: Runtime, tmp_path: Path, fmt: str, codecs: tuple[str, str]) -> None:
    result = asyncio.run(runtime.pipeline.run(tmp_path, text="Tell me about the stars.", video_format_name=fmt))
    assert result.video_path is not None
    info = media.probe_mp4(result.video_path)
    assert (info["video_codec"], info["audio_codec"]) == codecs
    assert info["frames"] == round(result.audio_seconds * 25)
    assert abs(info["video_seconds"] - info["audio_seconds"]) <= 1 / 25 + 1e-6
    assert abs(info["video_seconds"] - result.audio_seconds) <= 1 / 25 + 1e-6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reply.mp4", "reply.wav", "turn.json"]


class MisdrawnSecondSentence:
    """The real face, handing its second sentence over as floats: a fault half-way through a turn that
    no fallback can cover (the video encoder refuses the frames), unlike a failing stage, which degrades."""

    def __init__(self, animator) -> None:
        self.animator, self.calls = animator, 0
        self.name, self.fps = animator.name, animator.fps

    def render_chunks(self, face, audio, rate, chunk_frames=25, *, start_frame=0, phones=None):
        self.calls += 1
        for chunk in self.animator.render_chunks(
            face, audio, rate, chunk_frames, start_frame=start_frame, phones=phones
        ):
            yield chunk.astype("float32") if self.calls == 2 else chunk

    def __getattr__(self, name):
        return getattr(self.animator, name)


def test_failure_half_way_leaves_nothing_and_frees_the_model(runtime: Runtime, tmp_path: Path) -> None:
    from scripted import ScriptedChat

    from avatar.pipeline.stages import AnimateStage, RespondStage

    pipeline = runtime.pipeline
    real_animate, real_respond = pipeline.animate, pipeline.respond
    misdrawn = MisdrawnSecondSentence(real_animate.animator)
    pipeline.animate = AnimateStage(misdrawn)
    # A fixed two-sentence reply, so the fault lands after the first sentence was drawn and encoded.
    pipeline.respond = RespondStage(ScriptedChat("The Moon is bright. It has no air at all."))
    try:
        with pytest.raises(ValueError):
            asyncio.run(pipeline.run(tmp_path, text="Tell me two things about the Moon."))
    finally:
        pipeline.animate, pipeline.respond = real_animate, real_respond
    assert misdrawn.calls == 2
    assert list(tmp_path.iterdir()) == []
    # The model is free again: the next turn works.
    assert asyncio.run(pipeline.run(tmp_path / "next", text="Hello!")).reply
