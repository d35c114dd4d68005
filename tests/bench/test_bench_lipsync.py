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
from avatar.types import AudioArray, FaceAnimator, FrameArray, VoiceSpec

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


def test_brief_closures_are_left_out_and_long_ones_kept() -> None:
    gap = np.array([0.06, 0.08, 0.003, 0.004, 0.07, 0.09, 0.002, 0.002, 0.002, 0.002, 0.002, 0.06, np.nan])
    out = lipsync.without_brief_closures(gap, 25)  # 120 ms: three frames at most
    assert np.isnan(out[2:4]).all() and out[1] == 0.08 and out[4] == 0.07  # the two-frame seal only
    assert np.isnan(lipsync.without_brief_closures(gap, 25, pad=1)[1:5]).all()  # and a frame either side
    assert not np.isnan(out[6:11]).any()  # five frames shut: a closed mouth, not a bilabial
    assert out[11] == 0.06 and np.isnan(out[12])


@pytest.mark.parametrize("text", ["My name is Eileen Collins.", "Bob made my baby a maple pie, mom."])
def test_phone_driven_lips_as_live_mode_measures_them(text: str, animator: FaceAnimator, landmarker: Path) -> None:
    """Lips drawn from the phones seal on m/b/p while the voice sounds. Live mode cannot know the phones
    and leaves out the brief seals it sees: the reply in step passes, and one 200 ms late is caught."""
    from avatar.backends.hibari_tts import HibariSynthesizer

    tts = HibariSynthesizer()
    try:
        spoken = tts.synthesize_timed(text, VoiceSpec("test"))
    finally:
        tts.close()
    assert spoken.phones
    face = AnimateStage(animator).prepare_path(PORTRAIT)
    frames = animator.render(face, spoken.audio, RATE, phones=spoken.phones)
    fps = animator.fps
    audio = media.fit_audio_to_frames(spoken.audio, RATE, len(frames), fps)
    envelope = lipsync.loudness_envelope(audio, RATE, fps, len(frames))
    meter = lipsync.MouthMeter(landmarker)
    try:
        opened = meter.openings(list(frames))
        late = meter.openings(list(shifted(frames, fps, 200)))
    finally:
        meter.close()
    assert lipsync.closures(opened) >= 2  # the seals are there to be left out
    seen = lipsync.score(lipsync.without_brief_closures(opened, fps), envelope, fps)
    assert seen.passes(), seen
    off = lipsync.score(lipsync.without_brief_closures(late, fps), envelope, fps)
    assert off.lag_ms - seen.lag_ms > 120 and not off.passes(), (off, seen)
