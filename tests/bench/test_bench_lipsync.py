"""The lip-sync metric on real videos of the talking head: in step scores well, a still or late mouth badly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from avatar import fmp4, media
from avatar.bench.eval import shifted, static
from avatar.config import PROJECT_ROOT
from avatar.pipeline.stages import AnimateStage
from avatar.quality import lipsync
from avatar.types import AudioArray, FaceAnimator, FrameArray

RATE = 24_000
PORTRAIT = PROJECT_ROOT / "assets" / "personas" / "eileen" / "portrait.png"


@pytest.fixture(scope="module")
def talking(animator: FaceAnimator, speech: Callable[[str], AudioArray]) -> tuple[FrameArray, AudioArray]:
    audio = speech("Hello there, how are you today? I hope the weather is kind to you.")
    face = AnimateStage(animator).prepare_path(PORTRAIT)
    return animator.render(face, audio, RATE), audio


def _measure(frames: FrameArray, audio: AudioArray, fps: int, path: Path, landmarker: Path) -> lipsync.LipSyncScore:
    fmp4.write_mp4(path, frames, media.fit_audio_to_frames(audio, RATE, len(frames), fps), RATE, fps)
    return lipsync.measure_video(path, landmarker)


def test_rendered_video_is_in_step(talking, animator: FaceAnimator, tmp_path: Path, landmarker: Path) -> None:
    frames, audio = talking
    score = _measure(frames, audio, animator.fps, tmp_path / "good.mp4", landmarker)
    assert score.faces_found == score.frames
    assert score.passes(), score


def test_static_frames_score_badly(talking, animator: FaceAnimator, tmp_path: Path, landmarker: Path) -> None:
    frames, audio = talking
    score = _measure(static(frames), audio, animator.fps, tmp_path / "static.mp4", landmarker)
    assert not score.passes(), score
    assert score.peak_correlation < 0.5, score


def test_frames_late_by_200_ms_score_badly(talking, animator: FaceAnimator, tmp_path: Path, landmarker: Path) -> None:
    frames, audio = talking
    score = _measure(shifted(frames, animator.fps, 200), audio, animator.fps, tmp_path / "late.mp4", landmarker)
    assert not score.passes(), score
    assert abs(score.lag_ms - 200) <= 40, score  # and the metric says by how much


def test_score_finds_a_known_lag_on_real_speech(speech: Callable[[str], AudioArray]) -> None:
    audio = speech("One, two, three. Testing the envelope of real speech.")
    fps = 25
    envelope = lipsync.loudness_envelope(audio, RATE, fps, round(audio.size / RATE * fps))
    for lag in (-3, 0, 2):
        mouth = np.roll(envelope, lag)
        s = lipsync.score(mouth, envelope, fps)
        assert abs(s.lag_ms - 1000 * lag / fps) < 20 and s.peak_correlation > 0.9, (lag, s)
    flat = lipsync.score(np.full_like(envelope, 0.03), envelope, fps)
    assert flat.peak_correlation == 0.0 and not flat.passes()


def test_missing_faces_are_left_out_not_counted_as_closed(speech: Callable[[str], AudioArray]) -> None:
    audio = speech("Hello there, how are you?")
    envelope = lipsync.loudness_envelope(audio, RATE, 25, round(audio.size / RATE * 25))
    mouth = envelope.copy()
    mouth[::4] = np.nan
    s = lipsync.score(mouth, envelope, 25)
    assert s.faces_found == envelope.size - len(envelope[::4]) and s.passes()


def test_sub_frame_peak_refinement() -> None:
    assert lipsync._refine({-1: 0.5, 0: 0.9, 1: 0.5}, 0) == 0.0
    assert 0 < lipsync._refine({-1: 0.4, 0: 0.9, 1: 0.8}, 0) < 0.5
    assert lipsync._refine({0: 0.9}, 0) == 0.0
